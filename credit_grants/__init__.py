"""Generated stubs of protos/credit_grants (the contract's shared options); make protos."""

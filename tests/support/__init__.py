"""Support for tests and benchmarks (not shipped in the wheel): in-process and real-process servers,
API keys for them, a real PostgreSQL server started on demand, rows and batches of the grant service."""

"""Support for tests and benchmarks: a real PostgreSQL server started on demand."""

"""Background delivery shared by both services: leases on queue rows (leases.py) and the worker
loop (worker.py); retry policies are in credit_common.backoff."""

"""`make bench`: load benchmarks of the two services, run as real server processes on SQLite
and PostgreSQL, driven by separate load-generator processes over real gRPC channels.

Every figure is printed next to a baseline measured in the same run on the same machine
(a set-based INSERT ... SELECT, or a no-op RPC served by the same server process), so runs on
a noisy or shared machine can still be compared through the ratio."""

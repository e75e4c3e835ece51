"""The gRPC transport kit both servers are built from."""

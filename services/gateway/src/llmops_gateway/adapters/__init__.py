"""The gateway's I/O: gRPC API, Triton client, inference-log publisher, metrics."""

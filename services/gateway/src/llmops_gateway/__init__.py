"""The inference gateway: the gRPC front door that authenticates, validates, routes to Triton by
deployment state and logs every served prediction as an ``llmops.inference.logged.v1`` event."""

"""The inference gateway: the gRPC front door that authenticates, validates, routes to Triton by
deployment state and logs every served prediction as an ``llmops.inference.logged.v1`` event.

Reached through its gRPC API and run with ``python -m llmops_gateway``; the package exports no
Python API (``__all__`` is empty)."""

__all__: list[str] = []

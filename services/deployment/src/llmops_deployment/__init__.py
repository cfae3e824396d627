"""Deployment: canary, promotion and rollback of model versions on Triton.

Reached through its events and its ops gRPC API (``llmops promote``/``rollback``), and run with
``python -m llmops_deployment``; the package exports no Python API (``__all__`` is empty)."""

__all__: list[str] = []

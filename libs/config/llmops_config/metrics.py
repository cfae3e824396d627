"""Every service exposes ``/metrics`` the same way: on its own port, on ``LLMOPS_METRICS_HOST``."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, start_http_server


def serve_metrics(registry: CollectorRegistry, *, port: int, host: str) -> None:
    """Serve ``registry`` at ``http://<host>:<port>/metrics`` in a daemon thread (port 0: not at all)."""
    if port:
        start_http_server(port, addr=host, registry=registry)

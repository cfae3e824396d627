"""Traces that leave the process: one tracer provider per process, exported over OTLP when
``OTEL_EXPORTER_OTLP_ENDPOINT`` (or ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``) is set.

``make up`` starts Jaeger and sets the endpoint for every service it starts; without it spans are
still created (log lines carry their ids, events carry ``traceparent``) but go nowhere. While
exporting, every gRPC server and client of the process (the gateway's and the ops API's servers,
the Triton clients) is instrumented, so each call is a span of the caller's trace. Set up by
:func:`configure_logging`, so every process that configures its logs also traces, whatever its
entry point.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from opentelemetry import trace

logger = logging.getLogger(__name__)

ENDPOINT_VARIABLES = ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")
"""Either one turns the exporter on (the standard OpenTelemetry variables; the first is traces only)."""
SERVICE_PREFIX = "llmops-"
WRITE_STREAMED_METHODS = ("GenerateStream",)
"""Server-streaming gRPC methods implemented with ``context.write``, which the server interceptor
cannot wrap (see :func:`_instrument_grpc`)."""

_grpc_instrumented = False


def exporter_endpoint(environ: dict[str, str] | None = None) -> str | None:
    """The OTLP endpoint traces go to, or None when none is configured."""
    env = os.environ if environ is None else environ
    for name in ENDPOINT_VARIABLES:
        if env.get(name):
            return env[name]
    return None


def configure_tracing(service: str) -> bool:
    """Install the SDK tracer provider (once per process) and, when an endpoint is configured, a
    batching OTLP/HTTP exporter. Returns True when spans are exported.

    The provider flushes its queue on interpreter exit (the SDK's ``atexit`` hook), so a service
    stopped by SIGTERM still sends its last spans.
    """
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider

    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):
        provider = TracerProvider(resource=Resource.create({"service.name": f"{SERVICE_PREFIX}{service}"}))
        trace.set_tracer_provider(provider)
        exporting = _add_exporter(provider)
    else:
        exporting = bool(getattr(provider, "_llmops_exporting", False))
    if exporting:  # interceptors only where spans go somewhere: they cost on the gateway's hot path
        _instrument_grpc()
    return exporting


def _add_exporter(provider: Any) -> bool:
    endpoint = exporter_endpoint()
    if endpoint is None:
        return False
    try:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError:  # the platform's lock has it; a trimmed install may not
        logger.warning("OTLP endpoint %s is set but the OTLP exporter is not installed: spans stay local", endpoint)
        return False
    # The exporter reads the OTEL_EXPORTER_OTLP_* variables itself (endpoint, headers, timeout).
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    provider._llmops_exporting = True
    return True


def _instrument_grpc() -> None:
    """Every grpc.aio server and channel created from now on gets a tracing interceptor."""
    global _grpc_instrumented
    if _grpc_instrumented:
        return
    try:
        from opentelemetry.instrumentation.grpc import GrpcAioInstrumentorClient, GrpcAioInstrumentorServer
    except ImportError:
        logger.warning("opentelemetry-instrumentation-grpc is not installed: gRPC calls are not traced")
        return
    from opentelemetry.instrumentation.grpc import filters

    # The server interceptor iterates a streaming handler as an async generator; a handler that
    # streams with ``context.write`` (the gateway's GenerateStream, so the call's deadline covers
    # slow clients) fails under it with "'async for' requires ... __aiter__". Those methods are
    # left out: their caller's span (the client is instrumented) still covers them.
    GrpcAioInstrumentorServer(
        filter_=filters.negate(filters.any_of(*(filters.method_name(name) for name in WRITE_STREAMED_METHODS)))
    ).instrument()
    GrpcAioInstrumentorClient().instrument()
    _grpc_instrumented = True


def flush(timeout_ms: int = 5000) -> None:
    """Export the spans still queued (a short-lived command before it exits; tests)."""
    provider = trace.get_tracer_provider()
    force_flush = getattr(provider, "force_flush", None)
    if force_flush is not None:
        force_flush(timeout_ms)

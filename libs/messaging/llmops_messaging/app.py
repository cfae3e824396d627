"""The one way a service becomes a FastStream application: resources open in the start-up hooks
(never at import), handlers attach before the broker starts, and everything closes after it stops."""

from __future__ import annotations

import gc
from typing import Any, Protocol

from faststream import FastStream
from faststream.kafka import KafkaBroker
from prometheus_client import CollectorRegistry

from llmops_config import PlatformSettings, configure_logging
from llmops_messaging.broker import create_broker
from llmops_messaging.bus_metrics import ConsumerLagCollector, DeadLetterCollector
from llmops_messaging.health import ConsumerHealthCollector, watched
from llmops_messaging.tracing import configure_tracing


class ServiceRuntime(Protocol):
    """What a service's composition root provides."""

    async def open(self) -> Any:
        """Load models, open stores, connect producers."""
        ...

    def attach(self, broker: KafkaBroker) -> None:
        """Subscribe the handlers (before the broker starts)."""
        ...

    async def close(self) -> None:
        """Release everything (after the broker stopped)."""
        ...


def service_app(*, service: str, platform: PlatformSettings, runtime: ServiceRuntime, metrics_port: int) -> FastStream:
    """A FastStream app running ``runtime``; its metrics endpoint opens once the service is ready,
    so ``make up`` can use it as the readiness signal. An optional ``begin()`` of the runtime runs
    after the broker started, and an optional ``metrics.up`` gauge is set while it runs. The
    health of the service's consumers (``llmops_consumer_stalled``, read by ``make status``), their
    lag and the messages they dead-lettered (``llmops_messaging.bus_metrics``) are added to the
    ``metrics.registry`` of the runtime."""
    broker = create_broker(platform, service=service)
    app = FastStream(broker)
    registry = getattr(getattr(runtime, "metrics", None), "registry", None)
    if isinstance(registry, CollectorRegistry):
        registry.register(ConsumerHealthCollector())
        registry.register(DeadLetterCollector())
        registry.register(
            ConsumerLagCollector(platform, service=service, groups=lambda: [c.group_id for c in watched()])
        )

    @app.on_startup
    async def _open() -> None:
        configure_logging(service=service, level=platform.log_level, log_format=platform.log_format)
        configure_tracing(service)
        await runtime.open()
        freeze_startup_heap()
        runtime.attach(broker)

    @app.after_startup
    async def _begin() -> None:
        begin = getattr(runtime, "begin", None)
        if begin is not None:
            await begin()
        metrics = getattr(runtime, "metrics", None)
        if metrics is not None:
            if getattr(metrics, "up", None) is not None:
                metrics.up.set(1)
            metrics.serve(metrics_port, host=platform.metrics_host)

    @app.after_shutdown
    async def _close() -> None:
        await runtime.close()

    return app


def freeze_startup_heap() -> None:
    """Take everything loaded at start-up (libraries, models, stores) out of the garbage
    collector's view, once the service is open.

    A service allocates per message, so the collector runs often, and each full collection
    walked the whole start-up heap (pandas, Feast, Presidio, pydantic models: millions of
    objects) to find nothing to free: a quarter of ingestion's time at thousands of records a
    second. Frozen objects are never collected, and these live as long as the process anyway.
    """
    gc.collect()
    gc.freeze()

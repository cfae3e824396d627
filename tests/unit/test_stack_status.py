"""``llmops stack status`` (``make status``) reports a service whose consumer makes no progress."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, start_http_server

from llmops_cli.stack import ServiceComponent
from llmops_config import PlatformSettings
from llmops_messaging import ConsumerHealthCollector, Origin
from llmops_messaging.health import ConsumerProgress
from llmops_stack import free_port


class FakeConsumer:
    def __init__(self, progress: ConsumerProgress) -> None:
        self.group_id = progress.group_id
        self.progress = progress

    def health(self) -> Any:
        return self.progress.health()


def test_a_service_with_a_stalled_consumer_is_unhealthy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    progress = ConsumerProgress("ingestion", stall_after_failures=2)
    registry = CollectorRegistry()
    registry.register(ConsumerHealthCollector(lambda: [FakeConsumer(progress)]))
    port = free_port()
    server, thread = start_http_server(port, addr="127.0.0.1", registry=registry)
    try:
        component = ServiceComponent("ingestion", "llmops_ingestion", port, PlatformSettings(var_dir=tmp_path))
        monkeypatch.setattr(component.process, "is_running", lambda: True)
        monkeypatch.setattr(component.process, "pid", lambda: 4242)

        assert component.status().healthy

        origin = Origin("llmops.records.raw.v1", 0, 17, "ingestion")
        for _ in range(2):
            progress.failed(origin, ConnectionError("DLQ topic unavailable"))
        status = component.status()
        assert not status.healthy
        assert status.detail.startswith("pid 4242, metrics :")
        assert "consumer group ingestion stalled: 2 failed deliveries in a row" in status.detail
        assert "llmops.records.raw.v1[0]@17" in status.detail and "DLQ topic unavailable" in status.detail

        progress.delivered(5)
        assert component.status().healthy
    finally:
        server.shutdown()
        thread.join(timeout=5)


def test_a_service_app_exposes_its_consumers_health_on_its_registry() -> None:
    from prometheus_client import generate_latest

    from llmops_events.v1 import RecordSubmitted
    from llmops_messaging import EventConsumer, ProcessedEvents, subscribe
    from llmops_messaging.app import service_app

    class Metrics:
        def __init__(self) -> None:
            self.registry = CollectorRegistry()

    class Runtime:
        def __init__(self) -> None:
            self.metrics = Metrics()

    runtime = Runtime()
    app = service_app(service="tests", platform=PlatformSettings(), runtime=runtime, metrics_port=0)  # type: ignore[arg-type]

    async def handle(envelope: Any) -> None:
        pass

    group = f"health-{id(runtime)}"
    consumer = EventConsumer(
        group_id=group,
        handlers={RecordSubmitted: handle},
        dlq=None,  # type: ignore[arg-type]
        processed=ProcessedEvents(":memory:", consumer=group),
        stall_after_failures=1,
    )
    subscribe(app.broker, consumer, "llmops.records.raw.v1")  # type: ignore[arg-type]
    page = generate_latest(runtime.metrics.registry).decode()
    assert f'llmops_consumer_stalled{{consumer_group="{group}",reason=""}} 0.0' in page
    consumer.progress.failed(None, RuntimeError("x"))
    assert stall_reasons_of(generate_latest(runtime.metrics.registry).decode(), group)


def stall_reasons_of(page: str, group: str) -> list[str]:
    from llmops_messaging import stall_reasons

    return [reason for reason in stall_reasons(page) if group in reason]

"""Log rotation, trace context from other producers' headers, and tracing set-up (no broker)."""

from __future__ import annotations

import logging
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from llmops_config import PlatformSettings, configure_logging
from llmops_config.logging import RotatingLogFile
from llmops_events import KafkaRecord
from llmops_messaging.tracing import consumer_span, current_traceparent, traceparent_of

TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


def test_a_logger_writing_past_the_size_creates_a_rotated_file(tmp_path: Path) -> None:
    log_file = tmp_path / "logs" / "svc.log"
    settings = PlatformSettings(log_file=log_file, log_max_bytes=1024, log_backup_count=2)
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        configure_logging(service="svc", log_format="json", platform=settings)
        for index in range(60):
            logging.getLogger("test").info("line %d %s", index, "x" * 40)
    finally:
        for handler in root.handlers:
            handler.close()
        root.handlers[:], level = saved
        root.setLevel(level)
    rotated = sorted(path.name for path in log_file.parent.iterdir())
    assert rotated == ["svc.log", "svc.log.1", "svc.log.2"]  # backup_count bounds what is kept
    assert all(path.stat().st_size <= 1024 for path in log_file.parent.iterdir())
    assert '"message": "line 59' in log_file.read_text()


def test_rotation_moves_stdout_and_stderr_to_the_new_file(tmp_path: Path) -> None:
    """A service started by the stack has its stderr appended to its log file: after a rotation,
    output that bypasses logging (a traceback, a native library) goes to the new file too."""
    log_file = tmp_path / "svc.log"
    script = textwrap.dedent(
        """
        import logging, sys
        from llmops_config import configure_logging
        configure_logging(service="svc", log_format="text")
        for index in range(40):
            logging.getLogger("t").info("filler %d %s", index, "y" * 40)
        print("after-rotation on stderr", file=sys.stderr, flush=True)
        """
    )
    env = {"LLMOPS_LOG_FILE": str(log_file), "LLMOPS_LOG_MAX_BYTES": "1024", "PATH": "/usr/bin:/bin"}
    with log_file.open("ab") as sink:
        subprocess.run([sys.executable, "-c", script], stdout=sink, stderr=sink, env=env, check=True, timeout=60)
    assert (tmp_path / "svc.log.1").exists()
    assert "after-rotation on stderr" in log_file.read_text()
    assert "after-rotation on stderr" not in (tmp_path / "svc.log.1").read_text()


def test_rotation_limits_are_checked(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="max_bytes"):
        RotatingLogFile(tmp_path / "x.log", max_bytes=0, backup_count=1, follow_std_streams=False)


def test_a_plain_traceparent_header_is_accepted() -> None:
    record = KafkaRecord(key=b"k", value=b"{}", headers=(("traceparent", TRACEPARENT.encode()),))
    assert traceparent_of(record, None) == TRACEPARENT
    # The CloudEvents extension wins when both are present; a malformed header is ignored.
    other = "00-11111111111111111111111111111111-2222222222222222-01"
    assert traceparent_of(record, other) == other
    assert traceparent_of(KafkaRecord(key=None, value=b"", headers=(("traceparent", b"junk"),)), None) is None


def test_a_consumer_span_continues_a_plain_traceparent() -> None:
    from llmops_messaging.tracing import configure_tracing

    configure_tracing("tests")
    with consumer_span(
        "t process",
        traceparent=traceparent_of(
            KafkaRecord(key=None, value=b"", headers=(("traceparent", TRACEPARENT.encode()),)), None
        ),
    ):
        current = current_traceparent()
    assert current is not None and current.split("-")[1] == TRACEPARENT.split("-")[1]


def test_the_stack_runs_without_jaeger_when_setup_could_not_build_it(tmp_path: Path) -> None:
    from llmops_stack.jaeger import jaeger_component

    assert jaeger_component(PlatformSettings(var_dir=tmp_path), tmp_path) is None


def test_jaeger_gets_its_ports_from_the_settings(tmp_path: Path) -> None:
    from llmops_stack.jaeger import JaegerServer

    settings = PlatformSettings(var_dir=tmp_path, jaeger_otlp_http_port=14318, jaeger_ui_port=17686)
    server = JaegerServer(settings, tmp_path / "jaeger", tmp_path / "config.yaml")
    assert server.environment()["LLMOPS_JAEGER_OTLP_HTTP_PORT"] == "14318"
    assert server.environment()["LLMOPS_JAEGER_UI_PORT"] == "17686"
    assert settings.jaeger_otlp_endpoint == "http://127.0.0.1:14318"
    config = (Path(__file__).resolve().parents[2] / "deploy" / "jaeger" / "config.yaml").read_text()
    for variable in server.environment():
        assert f"${{env:{variable}}}" in config


class _FakeLag:
    """Stands in for the broker query of ``ConsumerLagCollector`` (its caching is what is tested)."""

    def __init__(self, fail: bool = False) -> None:
        self.calls = 0
        self.fail = fail

    async def __call__(self, groups: list[str]) -> list[Any]:
        from llmops_messaging.bus_metrics import PartitionLag

        self.calls += 1
        if self.fail:
            raise ConnectionError("broker down")
        return [PartitionLag(group, "t", 0, 5, 12) for group in groups]


def _collect(collector: Any) -> dict[str, list[Any]]:
    return {family.name: family.samples for family in collector.collect()}


def test_consumer_lag_is_read_at_most_once_per_interval() -> None:
    from llmops_messaging.bus_metrics import ConsumerLagCollector

    now = [100.0]
    collector = ConsumerLagCollector(
        PlatformSettings(), service="tests", groups=lambda: ["g"], min_interval_s=10, clock=lambda: now[0]
    )
    fake = _FakeLag()
    collector._query = fake  # type: ignore[method-assign]
    [sample] = _collect(collector)["llmops_consumer_lag"]
    assert sample.labels == {"consumer_group": "g", "topic": "t", "partition": "0"} and sample.value == 7
    now[0] += 5
    _collect(collector)
    assert fake.calls == 1
    now[0] += 6
    _collect(collector)
    assert fake.calls == 2


def test_a_failed_lag_query_still_answers_the_scrape_and_is_counted() -> None:
    from llmops_messaging.bus_metrics import ConsumerLagCollector

    collector = ConsumerLagCollector(PlatformSettings(), service="tests", groups=lambda: ["g"])
    collector._query = _FakeLag(fail=True)  # type: ignore[method-assign]
    families = _collect(collector)
    assert families["llmops_consumer_lag"] == []
    assert [sample.value for sample in families["llmops_consumer_lag_errors"] if sample.name.endswith("_total")] == [1]


def test_a_jaeger_that_cannot_start_leaves_the_stack_up_without_traces(tmp_path: Path) -> None:
    """A broken trace backend (here: a binary that exits at once) never keeps the platform down."""
    import os

    from llmops_stack import NullProgress
    from llmops_stack.jaeger import OTLP_ENDPOINT_ENV, JaegerComponent, JaegerServer

    binary = tmp_path / "jaeger"
    binary.write_text("#!/bin/sh\nexit 3\n")
    binary.chmod(0o755)
    settings = PlatformSettings(var_dir=tmp_path, jaeger_ui_port=1, jaeger_otlp_http_port=1)
    component = JaegerComponent(JaegerServer(settings, binary, tmp_path / "config.yaml"), ready_timeout=5)
    had_endpoint = OTLP_ENDPOINT_ENV in os.environ
    summary = component.ensure_up(NullProgress())
    assert summary.startswith("could not start, services run without exporting traces")
    assert (OTLP_ENDPOINT_ENV in os.environ) == had_endpoint
    status = component.status()
    assert status.healthy and "optional, traces are not exported" in status.detail

"""``llmops stack up`` starts the services together and waits for all of them at once; one that is not
ready by the deadline is named with its state, its age and its log's last line, as ``stack status``
says it. The services here are real processes (``python -m <module>``) that print a line, take
their time, then open a ``/metrics`` page, like the platform's services do."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from llmops_cli.stack import ServiceComponent, last_log_line, startup_state, status, up
from llmops_config import PlatformSettings
from llmops_stack import StackError, free_port

SERVICE = """
import time
from prometheus_client import start_http_server
print("loading the model of {name}", flush=True)
time.sleep({delay})
start_http_server({port}, addr="127.0.0.1")
print("serving", flush=True)
while True:
    time.sleep(1)
"""


class Recorder:
    """Progress that keeps its lines (the order of ``starting`` and ``ready`` lines is the test's evidence)."""

    def __init__(self) -> None:
        self.steps: list[str] = []
        self.waits: list[str] = []

    def step(self, message: str) -> None:
        self.steps.append(message)

    def waiting(self, message: str) -> None:
        self.waits.append(message)


@pytest.fixture
def services_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    folder = tmp_path / "modules"
    folder.mkdir()
    monkeypatch.syspath_prepend(str(folder))  # preflight finds the modules, the processes inherit PYTHONPATH
    monkeypatch.setenv("PYTHONPATH", str(folder))
    monkeypatch.setenv("LLMOPS_TLS_INSECURE", "1")  # no local CA needed for these
    yield folder


def _service(folder: Path, settings: PlatformSettings, name: str, delay: float) -> ServiceComponent:
    port = free_port()
    module = f"fake_service_{name}_{port}"
    (folder / f"{module}.py").write_text(SERVICE.format(name=name, delay=delay, port=port))
    return ServiceComponent(name, module, port, settings)


def test_services_start_together_and_up_waits_for_all(services_folder: Path, tmp_path: Path) -> None:
    settings = PlatformSettings(var_dir=tmp_path / "var")
    services = [_service(services_folder, settings, name, 1.5) for name in ("alpha", "beta", "gamma")]
    progress = Recorder()
    try:
        statuses = up(settings, progress=progress, stack=services, timeout=60)
        assert [(s.name, s.healthy) for s in statuses] == [("alpha", True), ("beta", True), ("gamma", True)]
        starting = [i for i, line in enumerate(progress.steps) if ": starting (log " in line]
        ready = [i for i, line in enumerate(progress.steps) if ": ready in " in line]
        assert len(starting) == 3 and len(ready) == 3
        assert max(starting) < min(ready), progress.steps  # every service was started before any was awaited
        assert up(settings, progress=Recorder(), stack=services, timeout=10)  # idempotent
    finally:
        for service in services:
            service.stop()


def test_a_slow_service_is_named_with_its_age_and_last_log_line(services_folder: Path, tmp_path: Path) -> None:
    settings = PlatformSettings(var_dir=tmp_path / "var")
    fast = _service(services_folder, settings, "fast", 0)
    slow = _service(services_folder, settings, "slow", 120)
    progress = Recorder()
    try:
        with pytest.raises(StackError) as caught:
            up(settings, progress=progress, stack=[fast, slow], timeout=4)
        message = str(caught.value)
        assert "not ready after" in message and "LLMOPS_STACK_START_TIMEOUT" in message
        assert "slow: running for" in message and "loading the model of slow" in message
        assert "fast" not in message.split("\n", 1)[1]  # only the slow one is blamed
        assert any("fast: ready in" in line for line in progress.steps)
        assert any("waiting for slow" in line and "loading the model of slow" in line for line in progress.waits)

        by_name = {entry.name: entry for entry in status(settings, stack=[fast, slow])}
        assert by_name["fast"].healthy
        assert not by_name["slow"].healthy
        assert "not answering; running for" in by_name["slow"].detail
        assert by_name["slow"].detail.endswith("last log line: loading the model of slow")
    finally:
        fast.stop()
        slow.stop()


def test_a_service_that_exits_is_reported_with_its_log(services_folder: Path, tmp_path: Path) -> None:
    settings = PlatformSettings(var_dir=tmp_path / "var")
    (services_folder / "fake_service_broken.py").write_text("raise SystemExit('no broker at 127.0.0.1:1')\n")
    broken = ServiceComponent("broken", "fake_service_broken", free_port(), settings)
    with pytest.raises(StackError) as caught:
        up(settings, progress=Recorder(), stack=[broken], timeout=30)
    assert "broken: exited during start-up" in str(caught.value) and "no broker at 127.0.0.1:1" in str(caught.value)
    assert "exited (stale pid file); last log line: no broker at 127.0.0.1:1" in startup_state(broken.process)


def test_a_json_log_line_reads_as_level_and_message(tmp_path: Path) -> None:
    from llmops_stack import ManagedProcess

    process = ManagedProcess("svc", tmp_path)
    process.log_file.parent.mkdir(parents=True)
    process.log_file.write_text('{"level": "info", "logger": "x", "message": "loading reference of banking v2"}\n')
    assert last_log_line(process) == "info: loading reference of banking v2"
    process.log_file.write_text("x" * 500 + "\n")
    assert len(last_log_line(process)) == 200


def test_status_of_a_component_never_started_adds_nothing(tmp_path: Path) -> None:
    service = ServiceComponent("idle", "json", free_port(), PlatformSettings(var_dir=tmp_path))
    (entry,) = status(PlatformSettings(var_dir=tmp_path), stack=[service])
    assert not entry.healthy and entry.detail == "not running (no pid file)"

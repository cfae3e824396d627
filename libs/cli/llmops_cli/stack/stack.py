"""The local stack as an ordered list of components: ``up`` starts them in order, ``down`` stops them
in reverse, ``status`` asks each one. Services join by adding a :class:`Component` to :func:`components`.

A component found answering on its ports without a pid file of ours (a broker someone else runs, or
the production endpoints) counts as *external*: ``up`` uses it and ``down`` leaves it alone.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import httpx

from llmops_cli.stack.keys import export_gateway_keys
from llmops_config import PlatformSettings
from llmops_events.topics import TOPICS, TopicSpec

from .kafka import KafkaBroker
from .paths import RepoPaths, repo_paths
from .processes import ManagedProcess, NullProgress, Progress, StackError, run_sync
from .topics import TopicsReport, ensure_topics
from .triton import TritonServer


@dataclass(frozen=True, slots=True)
class ComponentStatus:
    """One line of ``llmops stack status``."""

    name: str
    healthy: bool
    detail: str


class Component(Protocol):
    """Something ``up`` starts and ``down`` stops."""

    name: str

    def preflight(self) -> None:
        """Raise StackError if the component cannot start (missing build output); starts nothing."""
        ...

    def ensure_up(self, progress: Progress) -> str:
        """Start unless already running and healthy; wait until healthy; return a one-line summary."""
        ...

    def stop(self) -> bool:
        """Stop what ``ensure_up`` started (pid file); False if nothing of ours was running."""
        ...

    def status(self) -> ComponentStatus:
        """Process and live health."""
        ...


@dataclass
class KafkaComponent:
    """The embedded broker plus the platform's topics."""

    broker: KafkaBroker
    topics: Sequence[TopicSpec] = TOPICS
    replication_factor: int = 1
    ready_timeout: float = 90.0
    stop_timeout: float = 30.0
    name: str = "kafka"

    @property
    def bootstrap(self) -> str:
        host, port = self.broker.address
        return f"{host}:{port}"

    def preflight(self) -> None:
        self.broker.preflight()

    def ensure_up(self, progress: Progress) -> str:
        note = self._ensure_broker(progress)
        report = self.create_topics()
        for line in report.drift:
            progress.step(f"kafka: topic drift (left as is): {line}")
        created = f", created {len(report.created)} topics" if report.created else ""
        return f"{note}{created}"

    def _ensure_broker(self, progress: Progress) -> str:
        if self.broker.process.is_running():
            self.broker.wait_ready(self.ready_timeout, progress)
            return f"already running at {self.bootstrap}"
        if self.broker.topics() is not None:
            return f"external broker at {self.bootstrap} (not started by llmops)"
        progress.step(f"kafka: starting KRaft broker on {self.bootstrap} (log {self.broker.process.log_file})")
        started = time.monotonic()
        self.broker.start()
        self.broker.wait_ready(self.ready_timeout, progress)
        return f"ready at {self.bootstrap} in {time.monotonic() - started:.1f}s"

    def create_topics(self) -> TopicsReport:
        """Create the missing platform topics (idempotent)."""
        return run_sync(
            ensure_topics(
                self.bootstrap,
                self.topics,
                replication_factor=self.replication_factor,
                client_id=f"{self.broker.settings.kafka_client_id_prefix}-stack",
            )
        )

    def stop(self) -> bool:
        return self.broker.stop(self.stop_timeout)

    def status(self) -> ComponentStatus:
        ours = self.broker.process.is_running()
        topics = self.broker.topics()
        if topics is None:
            why = "not answering" if ours else _not_running(self.broker.process.pid_file)
            return ComponentStatus(self.name, False, f"{self.bootstrap} {why}")
        user_topics = [name for name in topics if not name.startswith("__")]
        missing = [spec.name for spec in self.topics if spec.name not in topics]
        detail = f"{self.bootstrap} ({len(user_topics)} topics)" + ("" if ours else " external")
        if missing:
            return ComponentStatus(self.name, False, f"{detail}; missing topics: {', '.join(missing)}")
        return ComponentStatus(self.name, True, detail)


@dataclass
class TritonComponent:
    """The Triton Inference Server (explicit model control)."""

    server: TritonServer
    ready_timeout: float = 60.0
    stop_timeout: float = 30.0
    name: str = "triton"

    @property
    def endpoint(self) -> str:
        s = self.server.settings
        return f"{s.triton_host}:{s.triton_http_port}/{s.triton_grpc_port}"

    def preflight(self) -> None:
        self.server.preflight()

    def ensure_up(self, progress: Progress) -> str:
        if self.server.process.is_running():
            self.server.wait_ready(self.ready_timeout, progress)
            return f"already running at {self.endpoint}"
        if self.server.is_ready():
            return f"external server at {self.endpoint} (not started by llmops)"
        progress.step(f"triton: starting tritonserver on {self.endpoint} (log {self.server.process.log_file})")
        started = time.monotonic()
        self.server.start()
        self.server.wait_ready(self.ready_timeout, progress)
        return f"ready at {self.endpoint} in {time.monotonic() - started:.1f}s"

    def stop(self) -> bool:
        stopped = self.server.stop(self.stop_timeout)
        # Wait until the endpoint is really closed, so a start right after (restart, `make up`)
        # cannot mistake the old server, still shutting down, for the new one being ready.
        deadline = time.monotonic() + self.stop_timeout
        while self.server.is_ready(timeout=0.5) and time.monotonic() < deadline:
            time.sleep(0.2)
        return stopped

    def status(self) -> ComponentStatus:
        ours = self.server.process.is_running()
        if not self.server.is_ready():
            why = "not ready" if ours else _not_running(self.server.process.pid_file)
            return ComponentStatus(self.name, False, f"{self.endpoint} {why}")
        models = self.server.loaded_models()
        return ComponentStatus(self.name, True, f"{self.endpoint} ({_models(models)})" + ("" if ours else " external"))


@dataclass
class ServiceComponent:
    """A platform service (``python -m <module>``) as a background process, healthy when its
    Prometheus endpoint answers (it opens only after the service has started)."""

    name: str
    module: str
    metrics_port: int
    settings: PlatformSettings
    ready_timeout: float = 120.0
    stop_timeout: float = 30.0
    process: ManagedProcess = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.process = ManagedProcess(self.name, self.settings.var_dir)

    def preflight(self) -> None:
        if importlib.util.find_spec(self.module) is None:
            raise StackError(f"{self.name}: module {self.module} is not installed (run `make setup`)")

    def _answers(self) -> bool:
        try:
            return httpx.get(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def ensure_up(self, progress: Progress) -> str:
        if self.process.is_running() and self._answers():
            return f"already running (metrics :{self.metrics_port})"
        if not self.process.is_running():
            progress.step(f"{self.name}: starting (log {self.process.log_file})")
            if self.name == "gateway":
                export_gateway_keys(self.settings)
            self.process.start([sys.executable, "-m", self.module], cwd=Path.cwd())
        started = time.monotonic()
        while (elapsed := time.monotonic() - started) < self.ready_timeout:
            if not self.process.is_running():
                raise self.process.failure("exited during start-up")
            if self._answers():
                return f"ready in {elapsed:.1f}s (metrics :{self.metrics_port})"
            progress.waiting(f"{self.name}: starting ({elapsed:.0f}s)")
            time.sleep(0.5)
        raise self.process.failure(f"not ready after {self.ready_timeout:.0f}s")

    def stop(self) -> bool:
        return self.process.stop(self.stop_timeout)

    def status(self) -> ComponentStatus:
        if not self.process.is_running():
            return ComponentStatus(self.name, False, _not_running(self.process.pid_file))
        if not self._answers():
            return ComponentStatus(self.name, False, f"running but metrics :{self.metrics_port} not answering")
        return ComponentStatus(self.name, True, f"pid {self.process.pid()}, metrics :{self.metrics_port}")


# The services `up` starts after Kafka and Triton: (name, module, environment variable of its metrics port, default).
SERVICES: tuple[tuple[str, str, str, int], ...] = (
    ("ingestion", "llmops_ingestion", "LLMOPS_INGESTION_METRICS_PORT", 9101),
    ("fine-tuning", "llmops_fine_tuning", "LLMOPS_FINE_TUNING_METRICS_PORT", 9102),
    ("evaluation", "llmops_evaluation", "LLMOPS_EVALUATION_METRICS_PORT", 9103),
    ("deployment", "llmops_deployment", "LLMOPS_DEPLOYMENT_METRICS_PORT", 9104),
    ("gateway", "llmops_gateway", "LLMOPS_GATEWAY_METRICS_PORT", 9105),
    ("monitoring", "llmops_monitoring", "LLMOPS_MONITORING_METRICS_PORT", 9106),
)


def _models(names: list[str] | None) -> str:
    if names is None:
        return "models unknown"
    if not names:
        return "no models loaded"
    shown = ", ".join(names[:5]) + (", …" if len(names) > 5 else "")
    return f"{len(names)} model{'s' if len(names) != 1 else ''} loaded: {shown}"


def _not_running(pid_file: Path) -> str:
    # A pid file without its process means it died (or was killed) instead of being stopped by `down`.
    return "not running (no pid file)" if not pid_file.exists() else f"not running (stale {pid_file.name}; see logs)"


def components(settings: PlatformSettings, paths: RepoPaths | None = None) -> list[Component]:
    """The stack in start order."""
    paths = paths or repo_paths()
    services: list[Component] = [
        ServiceComponent(name, module, int(os.environ.get(port_variable, default)), settings)
        for name, module, port_variable, default in SERVICES
        if importlib.util.find_spec(module) is not None and _has_main(module)
    ]
    return [
        KafkaComponent(KafkaBroker(settings, paths.kafka_libs_dir, paths.kafka_log4j_config)),
        TritonComponent(TritonServer(settings, paths.triton_venv, paths.triton_backend_dir)),
        *services,
    ]


def _has_main(module: str) -> bool:
    return importlib.util.find_spec(f"{module}.__main__") is not None


def up(
    settings: PlatformSettings,
    *,
    paths: RepoPaths | None = None,
    progress: Progress | None = None,
    stack: Sequence[Component] | None = None,
) -> list[ComponentStatus]:
    """Start every component not already running (idempotent), in order, and wait until each is healthy.

    If one fails, the ones this call started are left running (inspect with ``status``/logs, stop with ``down``).
    """
    progress = progress or NullProgress()
    stack = list(stack if stack is not None else components(settings, paths))
    for component in stack:
        component.preflight()
    statuses = []
    for component in stack:
        summary = component.ensure_up(progress)
        progress.step(f"{component.name}: {summary}")
        statuses.append(component.status())
    return statuses


@contextmanager
def running(component: Component, progress: Progress | None = None) -> Iterator[Component]:
    """``component`` up for the duration of the block, stopped after it (tests, benchmarks)."""
    component.preflight()
    try:
        component.ensure_up(progress or NullProgress())
        yield component
    finally:
        component.stop()


def down(
    settings: PlatformSettings,
    *,
    paths: RepoPaths | None = None,
    progress: Progress | None = None,
    stack: Sequence[Component] | None = None,
) -> list[str]:
    """Stop, in reverse order, the components whose pid files ``up`` wrote; returns the names stopped."""
    progress = progress or NullProgress()
    stopped = []
    for component in reversed(list(stack if stack is not None else components(settings, paths))):
        progress.waiting(f"{component.name}: stopping")
        started = time.monotonic()
        if component.stop():
            stopped.append(component.name)
            progress.step(f"{component.name}: stopped in {time.monotonic() - started:.1f}s")
        else:
            progress.step(f"{component.name}: was not running (nothing of ours to stop)")
    return stopped


def status(
    settings: PlatformSettings, *, paths: RepoPaths | None = None, stack: Sequence[Component] | None = None
) -> list[ComponentStatus]:
    """The health of every component, in start order."""
    return [component.status() for component in (stack if stack is not None else components(settings, paths))]

"""The local stack as an ordered list of components: ``up`` starts them in order, ``down`` stops them
in reverse, ``status`` asks each one. Kafka and Triton come from ``llmops_stack``; the platform's
services join them here, each as a :class:`ServiceComponent` named in :data:`SERVICES`.

A component found answering on its ports without a pid file of ours (a broker someone else runs, or
the production endpoints) counts as *external*: ``up`` uses it and ``down`` leaves it alone.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from llmops_config import PlatformSettings
from llmops_messaging import stall_reasons
from llmops_stack import (
    Component,
    ComponentStatus,
    KafkaBroker,
    KafkaComponent,
    ManagedProcess,
    NullProgress,
    Progress,
    RepoPaths,
    StackError,
    TritonComponent,
    TritonServer,
    not_running,
    repo_paths,
)
from llmops_stack.keys import export_gateway_keys


@dataclass
class ServiceComponent:
    """A platform service (``python -m <module>``) as a background process, healthy when its
    Prometheus endpoint answers (it opens only after the service has started) and reports no
    stalled consumer (``llmops_consumer_stalled``: deliveries failing again and again)."""

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

    def _scrape(self) -> str | None:
        """The service's ``/metrics`` page; None when it does not answer."""
        try:
            response = httpx.get(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=2)
        except httpx.HTTPError:
            return None
        return response.text if response.status_code == 200 else None

    def _answers(self) -> bool:
        return self._scrape() is not None

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
            return ComponentStatus(self.name, False, not_running(self.process.pid_file))
        page = self._scrape()
        if page is None:
            return ComponentStatus(self.name, False, f"running but metrics :{self.metrics_port} not answering")
        detail = f"pid {self.process.pid()}, metrics :{self.metrics_port}"
        stalls = stall_reasons(page)
        if stalls:
            return ComponentStatus(self.name, False, f"{detail}; {'; '.join(stalls)}")
        return ComponentStatus(self.name, True, detail)


# The services `up` starts after Kafka and Triton: (name, module, environment variable of its metrics port, default).
SERVICES: tuple[tuple[str, str, str, int], ...] = (
    ("ingestion", "llmops_ingestion", "LLMOPS_INGESTION_METRICS_PORT", 9101),
    ("fine-tuning", "llmops_fine_tuning", "LLMOPS_FINE_TUNING_METRICS_PORT", 9102),
    ("evaluation", "llmops_evaluation", "LLMOPS_EVALUATION_METRICS_PORT", 9103),
    ("deployment", "llmops_deployment", "LLMOPS_DEPLOYMENT_METRICS_PORT", 9104),
    ("gateway", "llmops_gateway", "LLMOPS_GATEWAY_METRICS_PORT", 9105),
    ("monitoring", "llmops_monitoring", "LLMOPS_MONITORING_METRICS_PORT", 9106),
)


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

"""The local stack as a list of components: ``up`` starts them, ``down`` stops them in reverse,
``status`` asks each one. Kafka and Triton come from ``llmops_stack``; the platform's services join
them here, each as a :class:`ServiceComponent` named in :data:`SERVICES`.

``up`` starts in two phases, each in parallel: first the infrastructure (Kafka with its topics,
Triton, and whatever else ``llmops_stack`` runs: none of them needs another), then every service
(each needs the broker's topics, the gateway also Triton; none needs another service). One deadline
(``LLMOPS_STACK_START_TIMEOUT``) covers the whole start; a component still not ready then is named
with its state, how long it has been starting and the last line of its log, as ``status`` does.

A component found answering on its ports without a pid file of ours (a broker someone else runs, or
the production endpoints) counts as *external*: ``up`` uses it and ``down`` leaves it alone.
"""

from __future__ import annotations

import concurrent.futures
import importlib.util
import json
import os
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from llmops_config import PlatformSettings
from llmops_messaging import stall_reasons
from llmops_stack import (
    Component,
    ComponentStatus,
    ManagedProcess,
    NullProgress,
    Progress,
    RepoPaths,
    StackError,
    TritonComponent,
    TritonServer,
    kafka_component,
    not_running,
    repo_paths,
)
from llmops_stack.certificates import ensure_local_certificates
from llmops_stack.jaeger import jaeger_component
from llmops_stack.keys import export_gateway_keys

LOG_LINE_CHARS = 200
"""How much of a log line ``status`` and ``up`` quote."""


@dataclass
class ServiceComponent:
    """A platform service (``python -m <module>``) as a background process, healthy when its
    Prometheus endpoint answers (it opens only after the service has started) and reports no
    stalled consumer (``llmops_consumer_stalled``: deliveries failing again and again).

    ``up`` uses :meth:`begin` and :meth:`ready` to start every service first and then wait for all;
    :meth:`ensure_up` (one service, start and wait) is the :class:`Component` protocol's way."""

    name: str
    module: str
    metrics_port: int
    settings: PlatformSettings
    environment: Mapping[str, str] = field(default_factory=dict)
    """Set over the CLI's own environment for the process (the Kafka it reaches: every node's address)."""
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

    def begin(self, progress: Progress) -> str | None:
        """Start the process unless it runs; a summary if it already runs and answers, else None
        (then :meth:`ready` tells when it is up)."""
        if self.process.is_running() and self._answers():
            return f"already running (metrics :{self.metrics_port})"
        if not self.process.is_running():
            progress.step(f"{self.name}: starting (log {self.process.log_file})")
            if self.name == "gateway":
                export_gateway_keys(self.settings)
            self.process.start(
                [sys.executable, "-m", self.module], env={**os.environ, **self.environment}, cwd=Path.cwd()
            )
        return None

    def ready(self) -> bool:
        """True once the service answers; raises StackError (with its log's tail) if it exited."""
        if not self.process.is_running():
            raise self.process.failure("exited during start-up")
        return self._answers()

    def ensure_up(self, progress: Progress) -> str:
        summary = self.begin(progress)
        if summary is not None:
            return summary
        started = time.monotonic()
        while (elapsed := time.monotonic() - started) < self.ready_timeout:
            if self.ready():
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
    """The stack: the infrastructure first, then the services."""
    paths = paths or repo_paths()
    kafka = kafka_component(settings, paths.kafka_libs_dir, paths.kafka_log4j_config)
    services: list[Component] = [
        ServiceComponent(
            name, module, int(os.environ.get(port_variable, default)), settings, kafka.client_environment()
        )
        for name, module, port_variable, default in SERVICES
        if importlib.util.find_spec(module) is not None and _has_main(module)
    ]
    return [
        kafka,
        TritonComponent(TritonServer(settings, paths.triton_venv, paths.triton_backend_dir)),
        # Jaeger when `make setup` built it; once up, the services started after it export their spans to it.
        *([jaeger] if (jaeger := jaeger_component(settings, paths.root)) is not None else []),
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
    timeout: float | None = None,
) -> list[ComponentStatus]:
    """Start every component not already running (idempotent) and wait until all are healthy:
    the infrastructure together, then the services together, all within ``timeout`` seconds
    (default ``settings.stack_start_timeout``).

    If one fails, the others still get their chance (so the error names every failure), and the ones
    this call started are left running (inspect with ``status``/logs, stop with ``down``).
    """
    progress = progress or NullProgress()
    stack = list(stack if stack is not None else components(settings, paths))
    for component in stack:
        component.preflight()
    # The gateway and the ops API serve TLS (mTLS for operators): a local CA on first start.
    ensure_local_certificates(settings)
    deadline = time.monotonic() + (timeout if timeout is not None else settings.stack_start_timeout)
    services = [component for component in stack if isinstance(component, ServiceComponent)]
    _start_together([c for c in stack if not isinstance(c, ServiceComponent)], progress, deadline)
    _start_services(services, progress, deadline)
    return [component.status() for component in stack]


def _start_together(stack: Sequence[Component], progress: Progress, deadline: float) -> None:
    """``ensure_up`` of every component at once (each waits in a thread of its own)."""
    if not stack:
        return
    started = time.monotonic()
    failures: list[str] = []
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=len(stack), thread_name_prefix="stack-up")
    futures = {pool.submit(component.ensure_up, progress): component for component in stack}
    try:
        for future in concurrent.futures.as_completed(futures, timeout=max(0.0, deadline - time.monotonic())):
            component = futures[future]
            try:
                summary = future.result()
            except StackError as error:
                failures.append(str(error))
            else:
                progress.step(f"{component.name}: {summary}")
    except TimeoutError:
        slow = [component for future, component in futures.items() if not future.done()]
        failures.append(_too_slow(slow, time.monotonic() - started))
    finally:
        # A component still starting keeps its own time limit; nothing waits for it here.
        pool.shutdown(wait=False, cancel_futures=True)
    if failures:
        raise StackError("\n\n".join(failures))


def _start_services(services: Sequence[ServiceComponent], progress: Progress, deadline: float) -> None:
    """Start every service, then wait for all of them (one loop polls each ``/metrics``)."""
    started = time.monotonic()
    waiting: dict[str, ServiceComponent] = {}
    failures: list[str] = []
    for service in services:
        try:
            summary = service.begin(progress)
        except StackError as error:
            failures.append(str(error))
            continue
        if summary is None:
            waiting[service.name] = service
        else:
            progress.step(f"{service.name}: {summary}")
    while waiting:
        for name, service in list(waiting.items()):
            try:
                if not service.ready():
                    continue
            except StackError as error:
                failures.append(str(error))
            else:
                progress.step(f"{name}: ready in {_age(service.process):.1f}s (metrics :{service.metrics_port})")
            del waiting[name]
        if not waiting:
            break
        if time.monotonic() > deadline:
            failures.append(_too_slow(list(waiting.values()), time.monotonic() - started))
            break
        slowest = max(waiting.values(), key=lambda s: _age(s.process))
        progress.waiting(
            f"waiting for {', '.join(f'{name} ({_age(s.process):.0f}s)' for name, s in waiting.items())}"
            f" — {slowest.name}: {last_log_line(slowest.process) or 'no output yet'}"
        )
        time.sleep(0.5)
    if failures:
        raise StackError("\n\n".join(failures))


def _too_slow(slow: Sequence[Component], waited: float) -> str:
    lines = [f"not ready after {waited:.0f}s (LLMOPS_STACK_START_TIMEOUT):"]
    for component in slow:
        process = process_of(component)
        state = startup_state(process) if process is not None else "no process of ours"
        lines.append(f"  {component.name}: {state}")
    return "\n".join(lines)


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
    """The health of every component; an unhealthy one also says how long its process has been up
    and the last line of its log (a service still loading its model, a broker still electing)."""
    statuses = []
    for component in stack if stack is not None else components(settings, paths):
        entry = component.status()
        process = process_of(component)
        if not entry.healthy and process is not None and process.record() is not None:
            entry = ComponentStatus(entry.name, False, f"{entry.detail}; {startup_state(process)}")
        statuses.append(entry)
    return statuses


# -- why a component is slow ---------------------------------------------------------------------------
def process_of(component: Component) -> ManagedProcess | None:
    """The background process ``up`` started for ``component`` (services, Kafka, Triton, ...)."""
    for holder in (component, getattr(component, "broker", None), getattr(component, "server", None)):
        process = getattr(holder, "process", None)
        if isinstance(process, ManagedProcess):
            return process
    return None


def _age(process: ManagedProcess) -> float:
    record = process.record()
    return max(0.0, time.time() - record.started_at) if record is not None else 0.0


def startup_state(process: ManagedProcess) -> str:
    """``running for 41s (pid 123); last log line: ...`` or ``exited after ...``: for people."""
    record = process.record()
    if record is None:
        return "never started by llmops (no pid file)"
    pid = process.pid()
    state = f"running for {_age(process):.0f}s (pid {pid})" if pid is not None else "exited (stale pid file)"
    line = last_log_line(process)
    return f"{state}; last log line: {line}" if line else f"{state}; nothing in {process.log_file}"


def last_log_line(process: ManagedProcess) -> str:
    """The last line of the process's log, shortened; a JSON log line shows as ``level: message``."""
    lines = [line for line in process.log_tail(5).splitlines() if line.strip()]
    if not lines:
        return ""
    line = lines[-1].strip()
    if line.startswith("{"):
        try:
            entry = json.loads(line)
        except ValueError:
            pass
        else:
            if isinstance(entry, dict) and "message" in entry:
                line = f"{entry.get('level', 'info')}: {entry['message']}"
    return line if len(line) <= LOG_LINE_CHARS else line[: LOG_LINE_CHARS - 1] + "…"

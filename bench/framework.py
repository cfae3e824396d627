"""What a benchmark is, what it gets to run (``BenchContext``, ``ServiceProcess``) and how it
reports progress."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import sys
import tempfile
import time
import urllib.request
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench.results import BenchResult, Figure
from llmops_config.kafka import kafka_environment
from llmops_stack import free_port

if TYPE_CHECKING:
    from llmops_config import PlatformSettings

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA_ENV = "LLMOPS_SHARED_DATA"


class Unmeasurable(Exception):
    """The benchmark cannot measure here (missing data, missing script); the message says why."""


def shared_data_dir() -> Path:
    """``$LLMOPS_SHARED_DATA``, else ``<repo>/../shared/data`` (the same rule as the tests)."""
    return Path(os.environ.get(SHARED_DATA_ENV, REPO_ROOT / ".." / "shared" / "data")).resolve()


class Reporter:
    """Progress display: a rich progress bar on a terminal, time-stamped status lines elsewhere.

    ``step`` prints a lasting line; ``status`` replaces the current benchmark's status (on a
    terminal at once, otherwise at most every ``line_interval_s`` seconds).
    """

    def __init__(self, total: int, *, line_interval_s: float = 10.0) -> None:
        from rich.console import Console

        self.console = Console(stderr=True, highlight=False)
        self._interactive = self.console.is_terminal
        self._line_interval_s = line_interval_s
        self._last_line = 0.0
        self._started = time.monotonic()
        self._current = ""
        self._progress: Any = None
        self._task: Any = None
        if self._interactive:
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                SpinnerColumn,
                TextColumn,
                TimeElapsedColumn,
            )

            self._progress = Progress(
                SpinnerColumn(),
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                console=self.console,
            )
            self._task = self._progress.add_task("benchmarks", total=total)

    def __enter__(self) -> Reporter:
        if self._progress is not None:
            self._progress.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._progress is not None:
            self._progress.stop()

    def _stamp(self) -> str:
        return f"[{time.monotonic() - self._started:7.1f}s]"

    def begin(self, name: str) -> None:
        self._current = name
        self.step(f"▶ {name}")

    def end(self, name: str, summary: str) -> None:
        self.step(f"■ {name}: {summary}")
        if self._progress is not None:
            self._progress.advance(self._task)
            self._progress.update(self._task, description="benchmarks")

    def step(self, message: str) -> None:
        self.console.print(f"{self._stamp()} {message}", markup=False, soft_wrap=True)

    def status(self, message: str) -> None:
        text = f"{self._current}: {message}" if self._current else message
        if self._progress is not None:
            self._progress.update(self._task, description=text)
            return
        now = time.monotonic()
        if now - self._last_line >= self._line_interval_s:
            self._last_line = now
            self.console.print(f"{self._stamp()}   … {text}", markup=False, soft_wrap=True)


class _ProgressAdapter:
    """The stack's ``Progress`` protocol on top of a ``Reporter``."""

    def __init__(self, reporter: Reporter) -> None:
        self._reporter = reporter

    def step(self, message: str) -> None:
        self._reporter.step(f"  {message}")

    def waiting(self, message: str) -> None:
        self._reporter.status(message)


@dataclass
class BenchContext:
    """Resources shared by the benchmarks of one run; the broker is started on first use."""

    reporter: Reporter
    repo_root: Path = REPO_ROOT
    python: str = sys.executable
    measured: dict[str, BenchResult] = field(default_factory=dict)
    """Rows by figure name: measured earlier in this run, else kept from the last results file
    (a benchmark that compares with another's figure reads it here)."""
    _work_dir: Path | None = None
    _kafka: Any = None
    _kafka_settings: PlatformSettings | None = None
    _kafka_lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    @property
    def shared_data(self) -> Path:
        return shared_data_dir()

    def require_shared(self, relative: str) -> Path:
        """A file or folder of the shared data, or ``Unmeasurable`` saying where it was looked for."""
        path = self.shared_data / relative
        if not path.exists():
            raise Unmeasurable(f"shared data not found at {path} (set {SHARED_DATA_ENV} to the folder holding it)")
        return path

    @property
    def work_dir(self) -> Path:
        """A temporary folder for this run (removed at the end)."""
        if self._work_dir is None:
            self._work_dir = Path(tempfile.mkdtemp(prefix="llmops-bench-"))
        return self._work_dir

    def scratch(self, name: str) -> Path:
        path = self.work_dir / name
        path.mkdir(parents=True, exist_ok=True)
        return path

    async def kafka(self) -> PlatformSettings:
        """A real single-node KRaft broker of this run, on free ports with a temporary var dir and
        every platform topic created (as the test fixtures start it)."""
        async with self._kafka_lock:
            if self._kafka_settings is None:
                from llmops_config import PlatformSettings
                from llmops_config.kafka import KafkaSettings
                from llmops_stack import KafkaBroker, KafkaComponent, repo_paths

                settings = PlatformSettings(
                    kafka_bootstrap_servers=f"127.0.0.1:{free_port()}",
                    kafka_controller_port=free_port(),
                    var_dir=self.scratch("var"),
                    log_format="text",
                    log_level="WARNING",
                    # Plaintext: a benchmark measures throughput, not ACLs (SCRAM only adds a handshake
                    # per connection); the secured default is tried by tests/integration/test_kafka_security.py.
                    kafka=KafkaSettings(security_protocol="PLAINTEXT"),
                )
                paths = repo_paths(self.repo_root)
                component = KafkaComponent(KafkaBroker(settings, paths.kafka_libs_dir, paths.kafka_log4j_config))
                component.preflight()
                self._kafka = component
                self.reporter.step(f"  starting a private Kafka broker at {settings.kafka_bootstrap_servers}")
                note = await asyncio.to_thread(component.ensure_up, _ProgressAdapter(self.reporter))
                self.reporter.step(f"  kafka: {note}")
                self._kafka_settings = settings
            return self._kafka_settings

    async def close(self) -> None:
        if self._kafka is not None:
            try:
                await asyncio.to_thread(self._kafka.stop)
            finally:
                self._kafka = None
                self._kafka_settings = None
        if self._work_dir is not None:
            shutil.rmtree(self._work_dir, ignore_errors=True)
            self._work_dir = None


MetricSamples = dict[tuple[str, tuple[tuple[str, str], ...]], float]
"""Prometheus samples by (sample name, sorted label pairs)."""


def parse_metrics(text: str) -> MetricSamples:
    """The samples of a Prometheus text exposition."""
    from prometheus_client.parser import text_string_to_metric_families

    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def metric_total(samples: MetricSamples, name: str, **labels: str) -> float:
    """The sum of ``name``'s samples whose labels include ``labels``."""
    wanted = set(labels.items())
    return sum(value for (sample, pairs), value in samples.items() if sample == name and wanted <= set(pairs))


class ServiceProcess:
    """A service as the process a user runs, ``python -m <module>``, its settings from the environment
    (the bench's own ``LLMOPS_*`` variables are not passed on), measured from outside: its
    Prometheus ``/metrics`` endpoint, its CPU time, what it leaves on the bus."""

    def __init__(
        self,
        context: BenchContext,
        module: str,
        *,
        platform: PlatformSettings,
        metrics_port_env: str,
        settings: Mapping[str, str],
        wrapper: Sequence[str] = (),
    ) -> None:
        self.module = module
        self.metrics_port = free_port()
        self.log = context.scratch(f"{module}-log") / f"{module}.log"
        self.argv = [context.python, *wrapper, "-m", module]
        self._cwd = context.repo_root
        self.env = {key: value for key, value in os.environ.items() if not key.startswith("LLMOPS_")}
        self.env.update(
            {
                **kafka_environment(platform),
                "LLMOPS_VAR_DIR": str(context.scratch(f"{module}-var")),
                "LLMOPS_LOG_FORMAT": "text",
                "LLMOPS_LOG_LEVEL": "WARNING",
                "LLMOPS_METRICS_HOST": "127.0.0.1",
                metrics_port_env: str(self.metrics_port),
                **settings,
            }
        )
        self.process: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        with self.log.open("ab") as log:
            self.process = await asyncio.create_subprocess_exec(
                *self.argv,
                cwd=self._cwd,
                env=self.env,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log,
                stderr=asyncio.subprocess.STDOUT,
                start_new_session=True,  # its own process group: a stuck child is killed with it
            )

    def tail(self, chars: int = 3000) -> str:
        try:
            return self.log.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def check_alive(self) -> None:
        """Raise with the end of its log if the process has exited."""
        if self.process is None or self.process.returncode is not None:
            code = None if self.process is None else self.process.returncode
            raise RuntimeError(f"{' '.join(self.argv[1:])} exited with {code}; end of {self.log}:\n{self.tail()}")

    async def metrics(self) -> MetricSamples | None:
        """A scrape of ``/metrics``; None while the endpoint is not up (it opens once the service consumes)."""

        def scrape() -> str:
            url = f"http://127.0.0.1:{self.metrics_port}/metrics"
            with urllib.request.urlopen(url, timeout=5) as page:
                return str(page.read().decode())

        try:
            return parse_metrics(await asyncio.to_thread(scrape))
        except OSError:
            return None

    def cpu_seconds(self) -> float:
        """User and system CPU time of the process and its children (worker processes) so far."""
        import psutil

        if self.process is None:
            return 0.0
        try:
            root = psutil.Process(self.process.pid)
            processes = [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return 0.0
        total = 0.0
        for process in processes:
            with contextlib.suppress(psutil.NoSuchProcess):
                times = process.cpu_times()
                total += times.user + times.system
        return total

    async def stop(self, timeout_s: float = 60.0) -> int | None:
        """SIGTERM (a graceful shutdown, as an operator stops it), then SIGKILL to its group after
        ``timeout_s``; its exit status."""
        process = self.process
        if process is None:
            return None
        if process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(process.wait(), timeout_s)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                await process.wait()
        with contextlib.suppress(ProcessLookupError):  # a worker process it left behind
            os.killpg(process.pid, signal.SIGKILL)
        return process.returncode


@dataclass(frozen=True)
class Benchmark:
    """A named benchmark: the figures it owes and the coroutine that measures them."""

    name: str
    title: str
    figures: tuple[Figure, ...]
    run: Callable[[BenchContext], Awaitable[list[BenchResult]]]
    time_limit_s: float

    def figure(self, name: str) -> Figure:
        for figure in self.figures:
            if figure.name == name:
                return figure
        raise KeyError(name)

    def complete(self, rows: list[BenchResult]) -> list[BenchResult]:
        """The rows in declared order; a figure the run did not yield becomes a met:false row."""
        by_name = {row.name: row for row in rows}
        complete = [
            by_name.pop(figure.name)
            if figure.name in by_name
            else figure.unmeasured("the benchmark yielded no value for it")
            for figure in self.figures
        ]
        return complete + list(by_name.values())

    def unmeasured(self, reason: str) -> list[BenchResult]:
        return [figure.unmeasured(reason) for figure in self.figures]

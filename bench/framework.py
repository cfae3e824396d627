"""What a benchmark is, what it gets to run (``BenchContext``) and how it reports progress."""

from __future__ import annotations

import asyncio
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench.results import BenchResult, Figure
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
                from llmops_stack import KafkaBroker, KafkaComponent, repo_paths

                settings = PlatformSettings(
                    kafka_bootstrap_servers=f"127.0.0.1:{free_port()}",
                    kafka_controller_port=free_port(),
                    var_dir=self.scratch("var"),
                    log_format="text",
                    log_level="WARNING",
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

"""The canary watch: every ``check_interval_s`` it measures what the canary and the champion served
since the canary started (Triton's statistics and our failure counter, confidences from the
inference log) and asks ``domain.canary.judge``; a verdict other than *wait* is handed back.

Every counter is read as a series that may reset (``domain.canary.CounterSeries``): a Triton
restart, or the reconciler loading a version again, starts Triton's counters from zero, and what
the version serves after it still counts. A reading that fails is skipped, not read as zeros."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from llmops_deployment.adapters.metrics import DeploymentMetrics
from llmops_deployment.adapters.traffic import ConfidenceTracker
from llmops_deployment.adapters.triton import TritonControl
from llmops_deployment.domain.canary import CanaryAction, CounterSeries, Verdict, VersionTraffic, judge, traffic_since
from llmops_deployment.settings import DeploymentSettings
from llmops_serving import triton_name

logger = logging.getLogger(__name__)

OnVerdict = Callable[[str, int, Verdict, str | None], Awaitable[None]]
"""(model name, canary version, verdict, correlation id) → act on it."""


@dataclass
class _Served:
    """The counter series of one version since the canary started."""

    triton: CounterSeries = field(default_factory=CounterSeries)
    confidence: CounterSeries = field(default_factory=CounterSeries)


@dataclass
class _Watch:
    version: int
    task: asyncio.Task[None]


class CanaryWatcher:
    def __init__(
        self,
        *,
        settings: DeploymentSettings,
        triton: TritonControl,
        confidence: ConfidenceTracker | None,
        metrics: DeploymentMetrics,
        on_verdict: OnVerdict,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._settings = settings
        self._triton = triton
        self._confidence = confidence
        self._metrics = metrics
        self._on_verdict = on_verdict
        self._clock = clock
        self._watches: dict[str, _Watch] = {}

    def watching(self, model_name: str) -> bool:
        return model_name in self._watches

    def start(self, model_name: str, version: int, champion: int | None, correlationid: str | None) -> None:
        self.cancel(model_name)
        task = asyncio.get_running_loop().create_task(self._watch(model_name, version, champion, correlationid))
        self._watches[model_name] = _Watch(version, task)

    def cancel(self, model_name: str) -> None:
        watch = self._watches.pop(model_name, None)
        if watch is not None and watch.task is not asyncio.current_task():
            watch.task.cancel()

    def cancel_all(self) -> None:
        for model_name in list(self._watches):
            self.cancel(model_name)

    async def _watch(self, model_name: str, version: int, champion: int | None, correlationid: str | None) -> None:
        """Judge the canary until a verdict other than *wait*, handed to ``on_verdict``."""
        canary_served, champion_served = _Served(), _Served()
        started = self._clock()
        try:
            await self._read(model_name, version, canary_served)  # the baselines
            await self._read(model_name, champion, champion_served)
            while True:
                await asyncio.sleep(self._settings.check_interval_s)
                canary = await self._read(model_name, version, canary_served)
                reference = await self._read(model_name, champion, champion_served)
                self._metrics.canary_requests.labels(model=model_name).set(canary.requests)
                verdict = judge(self._settings.canary_policy, canary, reference, self._clock() - started)
                if verdict.action is not CanaryAction.WAIT:
                    await self._on_verdict(model_name, version, verdict, correlationid)
                    break
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.exception("canary watch failed; it restarts with the next reconciliation")
        watch = self._watches.get(model_name)
        if watch is not None and watch.task is asyncio.current_task():
            del self._watches[model_name]

    async def _read(self, model_name: str, version: int | None, served: _Served) -> VersionTraffic:
        """Read ``version``'s counters into ``served``; what it served since the first reading
        (nothing for no version)."""
        if version is None:
            return VersionTraffic()
        counts = await self._triton.counts(triton_name(model_name, version))
        if counts is not None:
            served.triton = served.triton.observe(counts.sample)
        if self._confidence is not None:
            served.confidence = served.confidence.observe(self._confidence.totals(model_name, version))
        return traffic_since(served.triton, served.confidence)

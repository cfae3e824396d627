"""The canary watch: every ``check_interval_s`` it measures what the canary and the champion served
since the canary started and asks the domain for a verdict; one other than *wait* is handed back.
A classifier is measured on Triton's statistics and our failure counter, and confidences from the
inference log (``domain.canary.judge``); an adapter of the causal-LM model on the counters that
model exports per adapter: requests, failures, time to first token, completion tokens and decoding
time (``domain.canary.judge_generation``).

Every counter is read as a series that may reset (``domain.canary.CounterSeries``): a Triton
restart, or the reconciler loading a version again, starts Triton's counters from zero, and what
the version serves after it still counts. A reading that fails is skipped, not read as zeros."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Protocol

from llmops_deployment.adapters.metrics import DeploymentMetrics
from llmops_deployment.adapters.traffic import ConfidenceTracker
from llmops_deployment.adapters.triton_pool import TritonPool
from llmops_deployment.domain.canary import (
    CanaryAction,
    CounterSeries,
    GenerationCanaryPolicy,
    GenerationTraffic,
    Verdict,
    VersionTraffic,
    generation_traffic_since,
    judge,
    judge_generation,
    traffic_since,
)
from llmops_deployment.settings import DeploymentSettings
from llmops_models.kinds import CAUSAL_LM
from llmops_serving import triton_name

logger = logging.getLogger(__name__)

OnVerdict = Callable[[str, int, Verdict, str | None], Awaitable[None]]
"""(model name, canary version, verdict, correlation id) → act on it."""


class _Meter(Protocol):
    """How one kind's versions are measured and judged during a canary."""

    requests: int
    """Requests the canary served at the last reading (for the gauge)."""

    async def read(self, version: int | None, *, canary: bool) -> None: ...
    def judge(self, elapsed_s: float) -> Verdict: ...


@dataclass
class _Served:
    """The counter series of one classifier version since the canary started."""

    triton: CounterSeries = field(default_factory=CounterSeries)
    confidence: CounterSeries = field(default_factory=CounterSeries)


class _ClassifierMeter:
    """Triton's statistics of the version's own Triton model and our failure counter, and the
    confidences the inference log recorded for it (``domain.canary.judge``)."""

    def __init__(
        self, model_name: str, settings: DeploymentSettings, triton: TritonPool, confidence: ConfidenceTracker | None
    ) -> None:
        self._model, self._settings, self._triton, self._confidence = model_name, settings, triton, confidence
        self._served = {True: _Served(), False: _Served()}
        self._traffic = {True: VersionTraffic(), False: VersionTraffic()}
        self.requests = 0

    async def read(self, version: int | None, *, canary: bool) -> None:
        served = self._served[canary]
        if version is not None:
            counts = await self._triton.counts(triton_name(self._model, version))
            if counts is not None:
                served.triton = served.triton.observe(counts.sample)
            if self._confidence is not None:
                served.confidence = served.confidence.observe(self._confidence.totals(self._model, version))
            self._traffic[canary] = traffic_since(served.triton, served.confidence)
        self.requests = self._traffic[True].requests

    def judge(self, elapsed_s: float) -> Verdict:
        return judge(self._settings.canary_policy, self._traffic[True], self._traffic[False], elapsed_s)


class _AdapterMeter:
    """The counters the causal-LM model exports per adapter (``domain.canary.judge_generation``)."""

    def __init__(self, model_name: str, policy: GenerationCanaryPolicy, triton: TritonPool) -> None:
        self._model, self._policy, self._triton = model_name, policy, triton
        self._served = {True: CounterSeries(), False: CounterSeries()}
        self._traffic = {True: GenerationTraffic(), False: GenerationTraffic()}
        self.requests = 0

    async def read(self, version: int | None, *, canary: bool) -> None:
        if version is not None:
            counts = await self._triton.generation_counts(triton_name(self._model, version))
            if counts is not None:
                self._served[canary] = self._served[canary].observe(counts)
            self._traffic[canary] = generation_traffic_since(self._served[canary])
        self.requests = self._traffic[True].requests

    def judge(self, elapsed_s: float) -> Verdict:
        return judge_generation(self._policy, self._traffic[True], self._traffic[False], elapsed_s)


@dataclass
class _Watch:
    version: int
    task: asyncio.Task[None]


class CanaryWatcher:
    def __init__(
        self,
        *,
        settings: DeploymentSettings,
        generation_policy: GenerationCanaryPolicy,
        triton: TritonPool,
        confidence: ConfidenceTracker | None,
        metrics: DeploymentMetrics,
        on_verdict: OnVerdict,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._settings = settings
        self._generation_policy = generation_policy
        self._triton = triton
        self._confidence = confidence
        self._metrics = metrics
        self._on_verdict = on_verdict
        self._clock = clock
        self._watches: dict[str, _Watch] = {}

    def watching(self, model_name: str) -> bool:
        return model_name in self._watches

    def start(
        self,
        model_name: str,
        version: int,
        champion: int | None,
        correlationid: str | None,
        *,
        kind: str = "classifier",
    ) -> None:
        """Watch ``version`` of a model of ``kind`` against its ``champion`` (replacing a watch)."""
        self.cancel(model_name)
        meter: _Meter
        if kind == CAUSAL_LM.name:
            meter = _AdapterMeter(model_name, self._generation_policy, self._triton)
        else:
            meter = _ClassifierMeter(model_name, self._settings, self._triton, self._confidence)
        task = asyncio.get_running_loop().create_task(self._watch(model_name, version, champion, meter, correlationid))
        self._watches[model_name] = _Watch(version, task)

    def cancel(self, model_name: str) -> None:
        watch = self._watches.pop(model_name, None)
        if watch is not None and watch.task is not asyncio.current_task():
            watch.task.cancel()

    def cancel_all(self) -> None:
        for model_name in list(self._watches):
            self.cancel(model_name)

    async def _watch(
        self, model_name: str, version: int, champion: int | None, meter: _Meter, correlationid: str | None
    ) -> None:
        """Judge the canary until a verdict other than *wait*, handed to ``on_verdict``."""
        started = self._clock()
        try:
            await meter.read(version, canary=True)  # the baselines
            await meter.read(champion, canary=False)
            while True:
                await asyncio.sleep(self._settings.check_interval_s)
                await meter.read(version, canary=True)
                await meter.read(champion, canary=False)
                self._metrics.canary_requests.labels(model=model_name).set(meter.requests)
                verdict = meter.judge(self._clock() - started)
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

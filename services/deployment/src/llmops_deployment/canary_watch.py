"""The canary watch: every ``check_interval_s`` it measures what the canary and the champion served
since the canary started (Triton's statistics and our failure counter, confidences from the
inference log) and asks ``domain.canary.judge``; a verdict other than *wait* is handed back."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from llmops_deployment.adapters.metrics import DeploymentMetrics
from llmops_deployment.adapters.traffic import ConfidenceTracker
from llmops_deployment.adapters.triton import Counts, TritonControl
from llmops_deployment.domain.canary import CanaryAction, Verdict, VersionTraffic, judge
from llmops_deployment.settings import DeploymentSettings
from llmops_serving import triton_name

logger = logging.getLogger(__name__)

OnVerdict = Callable[[str, int, Verdict, str | None], Awaitable[None]]
"""(model name, canary version, verdict, correlation id) → act on it."""

_Base = tuple[Counts, tuple[int, float]]


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
        canary_name = triton_name(model_name, version)
        champion_name = triton_name(model_name, champion) if champion is not None else None
        base = await self._base(model_name, version, canary_name)
        champion_base = await self._base(model_name, champion, champion_name)
        started = self._clock()
        try:
            while True:
                await asyncio.sleep(self._settings.check_interval_s)
                canary = await self._since(model_name, version, canary_name, base)
                reference = await self._since(model_name, champion, champion_name, champion_base)
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

    async def _base(self, model_name: str, version: int | None, name: str | None) -> _Base:
        counts = await self._triton.counts(name) if name else Counts()
        confidence = self._confidence.totals(model_name, version) if self._confidence and version else (0, 0.0)
        return counts, confidence

    async def _since(self, model_name: str, version: int | None, name: str | None, base: _Base) -> VersionTraffic:
        """What ``version`` served since ``base`` (nothing for no version)."""
        if version is None or name is None:
            return VersionTraffic()
        (start, (start_logged, start_sum)) = base
        now, (logged, total) = await self._base(model_name, version, name)
        success = now.success - start.success
        failure = now.failure - start.failure
        samples = logged - start_logged
        return VersionTraffic(
            requests=success + failure,
            errors=failure,
            mean_latency_ms=(now.success_ns - start.success_ns) / success / 1e6 if success > 0 else None,
            mean_confidence=(total - start_sum) / samples if samples > 0 else None,
            confidence_samples=samples,
        )

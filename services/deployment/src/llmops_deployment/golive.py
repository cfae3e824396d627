"""Putting one version on Triton, and taking it off: written into the model repository from its
verified artifacts (if absent), loaded, warmed up and smoke-tested before it takes any traffic. A
version of kind ``causal_lm`` is a LoRA adapter on the one causal-LM model instead
(``golive_adapter``); the retries below are the same for both.

Two kinds of failure. A verdict on the version (``GoLiveFailed``: its artifacts are missing or
corrupt, a reachable Triton failed to load it, it failed its smoke test) is final. Triton not
being reachable (``TritonUnavailable``: nothing listens, the connection broke, a call timed out
and Triton does not answer its liveness check either) says nothing about the version: the
go-live is tried again with capped exponential backoff and full jitter until
``triton_retry_budget_s`` after the first failure, then ``TritonUnavailable`` is raised.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable

from llmops_deployment.adapters.artifacts import Artifacts
from llmops_deployment.adapters.triton import raise_if_unreachable
from llmops_deployment.adapters.triton_pool import TritonPool
from llmops_deployment.domain.smoke import smoke_problems
from llmops_deployment.errors import FailureReason, GoLiveFailed, TritonUnavailable, first_line
from llmops_deployment.golive_adapter import AdapterGoLive
from llmops_deployment.settings import DeploymentSettings
from llmops_messaging.tracing import job_span
from llmops_models.kinds import CAUSAL_LM
from llmops_serving import triton_name

logger = logging.getLogger(__name__)

GENERIC_TEXTS = [
    "I would like to know the status of my request.",
    "hello",
    "Can you help me with a problem? It started yesterday and I tried twice already.",
]
"""Smoke-test texts sent after the version's own validation texts (or alone, without them)."""


class GoLive:
    def __init__(
        self,
        *,
        settings: DeploymentSettings,
        triton: TritonPool,
        artifacts: Artifacts,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._settings = settings
        self._triton = triton
        self._artifacts = artifacts
        self._clock = clock
        self.adapters = AdapterGoLive(settings=settings, triton=triton, artifacts=artifacts)

    async def __call__(self, model_name: str, version: int) -> None:
        """Raises ``GoLiveFailed`` with the reason (artifact_missing, artifact_corrupt, load_failed,
        load_timeout, smoke_test_failed; base_model_mismatch for an adapter: ``golive_adapter``), or
        ``TritonUnavailable`` once Triton stayed unreachable for the retry budget. Other errors
        (the model repository's disk, the artifact store) pass."""
        settings = self._settings
        attempts, first_failure = 0, 0.0
        while True:
            try:
                return await self._once(model_name, version)
            except TritonUnavailable as error:
                attempts += 1
                now = self._clock()
                first_failure = now if attempts == 1 else first_failure
                left = settings.triton_retry_budget_s - (now - first_failure)
                if left <= 0:
                    raise
                wait = backoff_s(attempts, settings.triton_retry_base_delay_s, settings.triton_retry_max_delay_s)
                delay = min(wait, left)  # the last try at the budget's end
                logger.warning(
                    "Triton is unreachable; the go-live is tried again",
                    extra={
                        "model": triton_name(model_name, version),
                        "attempt": attempts,
                        "retry_in_s": round(delay, 3),
                        "error": error.message,
                    },
                )
                await asyncio.sleep(delay)

    async def _once(self, model_name: str, version: int) -> None:
        if await asyncio.to_thread(self._artifacts.kind, model_name, version) == CAUSAL_LM.name:
            return await self.adapters(model_name, version)
        name = triton_name(model_name, version)
        if not self._artifacts.installed(model_name, version):
            await asyncio.to_thread(self._artifacts.install, model_name, version, self._settings.serving_options)
        timeout = self._settings.load_timeout_s
        try:
            async with asyncio.timeout(timeout):
                with job_span("triton load", attributes={"llmops.triton.model": name, "llmops.model.version": version}):
                    await self._triton.load(name)
        except TimeoutError as error:
            await self._unless_unreachable(error, f"loading {name}")
            raise GoLiveFailed(
                FailureReason.LOAD_TIMEOUT, f"{name} did not load in {timeout:g} s", version=version
            ) from error
        except Exception as error:
            await self._unless_unreachable(error, f"loading {name}")
            raise GoLiveFailed(FailureReason.LOAD_FAILED, first_line(error), version=version) from error
        texts = await asyncio.to_thread(self._artifacts.validation_texts, model_name, version) + GENERIC_TEXTS
        try:
            for _ in range(self._settings.warmup_requests):
                await self._triton.predict(name, texts[:1])
            predictions = await self._triton.predict(name, texts)
            labels = await self._triton.labels(name)
        except Exception as error:
            await self._unless_unreachable(error, f"smoke-testing {name}")
            raise GoLiveFailed(FailureReason.SMOKE_TEST_FAILED, first_line(error), version=version) from error
        problems = smoke_problems(texts, predictions, labels)
        if problems:
            raise GoLiveFailed(FailureReason.SMOKE_TEST_FAILED, "; ".join(problems), version=version)

    async def _unless_unreachable(self, error: BaseException, doing: str) -> None:
        await raise_if_unreachable(self._triton, error, doing)

    async def take_down(self, name: str, *, kind: str | None = None) -> None:
        """Unload a Triton model (if loaded) and remove it from the model repository; for a
        ``causal_lm`` version, remove its adapter (the base stays)."""
        if kind == CAUSAL_LM.name:
            return await self.adapters.take_down(name)
        with contextlib.suppress(Exception):
            await self._triton.unload(name)
        await asyncio.to_thread(self._artifacts.uninstall, name)


def backoff_s(attempt: int, base_s: float, max_s: float, rng: random.Random | None = None) -> float:
    """The wait after the ``attempt``-th failure (1 for the first): capped exponential backoff with
    full jitter, uniform in ``[0, min(max_s, base_s * 2**(attempt - 1))]``, so services that lost
    Triton together do not come back together."""
    cap = min(max_s, base_s * 2 ** min(max(attempt - 1, 0), 62))
    return cap * (rng or random).random()

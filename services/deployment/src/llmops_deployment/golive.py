"""Putting one version on Triton, and taking it off: written into the model repository from its
verified artifacts (if absent), loaded, warmed up and smoke-tested before it takes any traffic."""

from __future__ import annotations

import asyncio
import contextlib

from llmops_deployment.adapters.artifacts import Artifacts
from llmops_deployment.adapters.triton import TritonControl
from llmops_deployment.domain.smoke import smoke_problems
from llmops_deployment.errors import FailureReason, GoLiveFailed
from llmops_deployment.settings import DeploymentSettings
from llmops_serving import triton_name

GENERIC_TEXTS = [
    "I would like to know the status of my request.",
    "hello",
    "Can you help me with a problem? It started yesterday and I tried twice already.",
]
"""Smoke-test texts sent after the version's own validation texts (or alone, without them)."""


class GoLive:
    def __init__(self, *, settings: DeploymentSettings, triton: TritonControl, artifacts: Artifacts) -> None:
        self._settings = settings
        self._triton = triton
        self._artifacts = artifacts

    async def __call__(self, model_name: str, version: int) -> None:
        """Raises ``GoLiveFailed`` with the reason (artifact_missing, artifact_corrupt, load_failed,
        load_timeout, smoke_test_failed)."""
        name = triton_name(model_name, version)
        if not self._artifacts.installed(model_name, version):
            await asyncio.to_thread(self._artifacts.install, model_name, version, self._settings.serving_options)
        timeout = self._settings.load_timeout_s
        try:
            async with asyncio.timeout(timeout):
                await self._triton.load(name)
        except TimeoutError as error:
            raise GoLiveFailed(
                FailureReason.LOAD_TIMEOUT, f"{name} did not load in {timeout:g} s", version=version
            ) from error
        except Exception as error:
            raise GoLiveFailed(FailureReason.LOAD_FAILED, first_line(error), version=version) from error
        texts = await asyncio.to_thread(self._artifacts.validation_texts, model_name, version) + GENERIC_TEXTS
        try:
            for _ in range(self._settings.warmup_requests):
                await self._triton.predict(name, texts[:1])
            predictions = await self._triton.predict(name, texts)
        except Exception as error:
            raise GoLiveFailed(FailureReason.SMOKE_TEST_FAILED, first_line(error), version=version) from error
        problems = smoke_problems(texts, predictions, await self._triton.labels(name))
        if problems:
            raise GoLiveFailed(FailureReason.SMOKE_TEST_FAILED, "; ".join(problems), version=version)

    async def take_down(self, name: str) -> None:
        """Unload a Triton model (if loaded) and remove it from the model repository."""
        with contextlib.suppress(Exception):
            await self._triton.unload(name)
        await asyncio.to_thread(self._artifacts.uninstall, name)


def first_line(error: BaseException) -> str:
    text = str(error).strip() or type(error).__name__
    return text.splitlines()[0][:500]

"""Reconciliation: Triton made to match the deployments topic, on start and every
``reconcile_interval_s`` (so a restarted Triton gets its models back, and a deployment left
``deploying`` is resumed, or rolled back after ``resume_max_attempts``, never left there)."""

from __future__ import annotations

import asyncio
import logging

from llmops_deployment.adapters.artifacts import Artifacts
from llmops_deployment.adapters.metrics import DeploymentMetrics
from llmops_deployment.adapters.triton import TritonControl
from llmops_deployment.errors import GoLiveFailed, TritonUnavailable
from llmops_deployment.handlers import DeploymentService
from llmops_serving import triton_name

logger = logging.getLogger(__name__)


class Reconciler:
    def __init__(
        self,
        service: DeploymentService,
        *,
        triton: TritonControl,
        artifacts: Artifacts,
        metrics: DeploymentMetrics,
        interval_s: float,
    ) -> None:
        self._service = service
        self._triton = triton
        self._artifacts = artifacts
        self._metrics = metrics
        self._interval_s = interval_s

    async def reconcile(self) -> list[str]:
        """Load what should be live, watch canaries nobody watches, resume deployments nobody
        finishes, unload what should not be on Triton. Returns what it did (for logs and tests)."""
        service = self._service
        actions: list[str] = []
        if not await self._triton.is_live():
            return actions
        ready = await self._triton.ready_models()
        wanted: set[str] = set()
        for state in service.models():
            model = state.model_name
            if not service.manages(model):
                continue
            for version in state.live_versions:
                name = triton_name(model, version)
                wanted.add(name)
                if name in ready:
                    continue
                try:
                    if await service.reload(model, version):
                        actions.append(f"loaded {name}")
                except GoLiveFailed as failure:
                    logger.error("could not restore a live version", extra={"model": name, "error": str(failure)})
                    actions.append(f"failed {name}: {failure.reason}")
                except TritonUnavailable as error:
                    logger.warning("Triton became unreachable", extra={"model": name, "error": error.message})
                    actions.append(f"failed {name}: Triton unreachable")
            if (canary := service.resume_watch(model)) is not None:
                actions.append(f"watching canary {triton_name(model, canary)}")
            if state.pending_version is not None:
                wanted.add(triton_name(model, state.pending_version))
                # Deploying with the model's lock free: no go-live runs (its holder finishes it).
                locked = service.lock(model).locked()
                if not locked and (resumed := await service.resume(model, state.pending_version)) is not None:
                    actions.append(resumed)
        for name, (model, version) in self._artifacts.installed_versions().items():
            if name in wanted or not service.manages(model) or service.lock(model).locked():
                continue
            if service.lifecycle(model).state_of(version).loaded:
                continue
            await service.go_live.take_down(name)
            actions.append(f"unloaded {name}")
        if actions:
            logger.info("reconciled Triton with the deployments topic", extra={"actions": actions})
        self._metrics.reconciliations.inc()
        return actions

    async def run(self) -> None:
        while True:
            try:
                await self.reconcile()
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("reconciliation failed; retrying")
            await asyncio.sleep(self._interval_s)

"""Reconciliation: Triton made to match the deployments topic, on start and every
``reconcile_interval_s`` (so a restarted Triton gets its models back, and a deployment left
``deploying`` is resumed, or rolled back after ``resume_max_attempts``, never left there). A live
``causal_lm`` version serves when the causal-LM model is loaded and its adapter folder is in place;
a restarted Triton gets the base back with the first such version reloaded."""

from __future__ import annotations

import asyncio
import logging

from llmops_deployment.adapters.artifacts import Artifacts
from llmops_deployment.adapters.metrics import DeploymentMetrics
from llmops_deployment.adapters.triton_pool import TritonPool
from llmops_deployment.errors import GoLiveFailed, TritonUnavailable
from llmops_deployment.handlers import DeploymentService
from llmops_models.kinds import CAUSAL_LM, CLASSIFIER
from llmops_models.kinds.causal_lm import serving as lm_serving
from llmops_serving import triton_name

logger = logging.getLogger(__name__)


class Reconciler:
    def __init__(
        self,
        service: DeploymentService,
        *,
        triton: TritonPool,
        artifacts: Artifacts,
        metrics: DeploymentMetrics,
        interval_s: float,
        causal_lm_model: str = lm_serving.MODEL_NAME,
    ) -> None:
        self._service = service
        self._causal_lm_model = causal_lm_model
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
                if self._serving(name, service.kind_of(model, version), ready):
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
        installed = [(name, found, CLASSIFIER.name) for name, found in self._artifacts.installed_versions().items()]
        installed += [(name, found, CAUSAL_LM.name) for name, found in self._artifacts.installed_adapters().items()]
        for name, (model, version), kind in installed:
            if name in wanted or not service.manages(model) or service.lock(model).locked():
                continue
            if service.lifecycle(model).state_of(version).loaded:
                continue
            await service.go_live.take_down(name, kind=kind)
            actions.append(f"unloaded {name}" if kind == CLASSIFIER.name else f"removed adapter {name}")
        if actions:
            logger.info("reconciled Triton with the deployments topic", extra={"actions": actions})
        self._metrics.reconciliations.inc()
        return actions

    def _serving(self, name: str, kind: str, ready: set[str]) -> bool:
        """Whether a live version serves: its own Triton model is ready, or for an adapter the
        causal-LM model is ready and the adapter's folder is in place."""
        if kind == CAUSAL_LM.name:
            return self._causal_lm_model in ready and self._artifacts.adapter_installed(name)
        return name in ready

    async def run(self) -> None:
        while True:
            try:
                await self.reconcile()
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("reconciliation failed; retrying")
            await asyncio.sleep(self._interval_s)

"""The deployment service: approved models go live on Triton through a canary, and operators
promote or roll back. The deployments topic is the source of truth; this service is its only
writer, so after replaying the topic on start it keeps the state by applying what it publishes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llmops_deployment.adapters.metrics import DeploymentMetrics
from llmops_deployment.adapters.traffic import ConfidenceTracker
from llmops_deployment.adapters.triton import Counts, Prediction, TritonControl
from llmops_deployment.domain.canary import VersionTraffic, judge
from llmops_deployment.domain.smoke import smoke_problems
from llmops_deployment.settings import DeploymentSettings
from llmops_events import Envelope
from llmops_events.base import EventData
from llmops_events.v1 import (
    Decision,
    DeploymentCanaryStarted,
    DeploymentPromoted,
    DeploymentRequested,
    DeploymentRolledBack,
    EvaluationCompleted,
)
from llmops_messaging import EventPublisher
from llmops_models import ArtifactMissing, ManifestMismatch, ModelRegistry
from llmops_models.snapshots import SnapshotReader
from llmops_models.triton_repository import ModelRepository
from llmops_serving import DeploymentBook, ModelDeployment, triton_name
from llmops_storage import ArtifactStore

logger = logging.getLogger(__name__)

_SMOKE_TEXTS = [
    "I would like to know the status of my request.",
    "hello",
    "Can you help me with a problem? It started yesterday and I tried twice already.",
]


class DeploymentError(Exception):
    """An operator request that cannot be carried out; ``code`` maps to a gRPC status."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


class _GoLiveFailed(Exception):
    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass
class _Watch:
    version: int
    task: asyncio.Task[None]


class DeploymentService:
    def __init__(
        self,
        *,
        settings: DeploymentSettings,
        store: ArtifactStore,
        repository: ModelRepository,
        triton: TritonControl,
        publisher: EventPublisher,
        confidence: ConfidenceTracker | None = None,
        metrics: DeploymentMetrics | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._settings = settings
        self._store = store
        self._registry = ModelRegistry(store)
        self._repository = repository
        self._triton = triton
        self._publisher = publisher
        self._confidence = confidence
        self._metrics = metrics or DeploymentMetrics()
        self._clock = clock
        self.book = DeploymentBook()
        self._history: dict[str, list[int]] = {}
        """Champions of each model in the order they served, for ``rollback`` without a version."""
        self._locks: dict[str, asyncio.Lock] = {}
        self._watches: dict[str, _Watch] = {}
        self._background: set[asyncio.Task[None]] = set()

    # ---- state -------------------------------------------------------------------------------

    def replay(self, event: EventData) -> None:
        """Fold one event of the deployments topic (at start-up, before anything is published)."""
        before = self.book.get(getattr(event, "model_name", ""))
        state = self.book.apply(event)
        if state is not None:
            self._remember(before, state)

    def manages(self, model_name: str) -> bool:
        return not self._settings.model_names or model_name in self._settings.model_names

    def state(self, model_name: str) -> ModelDeployment:
        return self.book.get(model_name) or ModelDeployment(model_name)

    def available_versions(self, model_name: str) -> list[int]:
        return self._registry.published_versions(model_name)

    def _remember(self, before: ModelDeployment | None, after: ModelDeployment) -> None:
        history = self._history.setdefault(after.model_name, [])
        previous = before.champion_version if before else None
        if after.champion_version == previous:
            return
        if previous is not None and after.champion_version is not None and after.champion_version in history:
            # A rollback to an earlier champion: the version it replaced is no longer a way back.
            history[:] = [v for v in history if v != previous]
        if after.champion_version is not None:
            history[:] = [v for v in history if v != after.champion_version] + [after.champion_version]

    async def _publish(self, data: EventData, correlationid: str | None) -> None:
        before = self.book.get(getattr(data, "model_name", ""))
        await self._publisher.publish(data, correlationid=correlationid)
        state = self.book.apply(data)
        if state is not None:
            self._remember(before, state)
            self._metrics.observe(state)
        logger.info(
            "deployment event",
            extra={"event": type(data).__name__, "model_name": getattr(data, "model_name", None), **_fields(data)},
        )

    def _lock(self, model_name: str) -> asyncio.Lock:
        return self._locks.setdefault(model_name, asyncio.Lock())

    # ---- evaluation decisions ----------------------------------------------------------------

    async def on_evaluation_completed(self, envelope: Envelope[EvaluationCompleted]) -> None:
        evaluation = envelope.data
        if evaluation.decision != Decision.APPROVED or not self.manages(evaluation.model_name):
            return
        await self.deploy(
            evaluation.model_name,
            evaluation.model_version,
            correlationid=envelope.correlationid,
            requested_by="evaluation",
        )

    async def deploy(
        self,
        model_name: str,
        version: int,
        *,
        correlationid: str | None = None,
        requested_by: str = "evaluation",
        promote_now: bool = False,
        reason: str = "",
    ) -> ModelDeployment:
        """Write, load, warm up and smoke-test ``version``, then start its canary (or promote it
        at once when there is no champion, or ``promote_now``). Idempotent for live versions."""
        async with self._lock(model_name):
            state = self.state(model_name)
            if version in state.live_versions and not (promote_now and version != state.champion_version):
                return state
            if state.canary_version is not None and state.canary_version != version:
                await self._end_canary(
                    model_name, "rollback", f"superseded by version {version}", by=requested_by, corr=correlationid
                )
                state = self.state(model_name)
            champion = state.champion_version
            await self._publish(
                DeploymentRequested(
                    model_name=model_name,
                    model_version=version,
                    artifact_uri=self._registry.uri(model_name, version),
                    champion_version=champion,
                    requested_by=requested_by,
                ),
                correlationid,
            )
            started = self._clock()
            try:
                await self._go_live(model_name, version)
            except _GoLiveFailed as failure:
                self._metrics.deployments.labels(outcome=failure.reason).inc()
                await self._publish(
                    DeploymentRolledBack(
                        model_name=model_name,
                        model_version=version,
                        restored_version=champion,
                        reason=f"{failure.reason}: {failure.detail}",
                        rolled_back_by="deployment",
                    ),
                    correlationid,
                )
                await self._retire(model_name, version, grace=False)
                return self.state(model_name)
            self._metrics.go_live_seconds.observe(self._clock() - started)
            if champion is None or promote_now or version == champion:
                self._metrics.deployments.labels(outcome="promoted").inc()
                await self._publish(
                    DeploymentPromoted(
                        model_name=model_name,
                        model_version=version,
                        previous_version=champion,
                        reason=reason or ("first version: nothing to compare with" if champion is None else ""),
                        promoted_by=requested_by,
                    ),
                    correlationid,
                )
                if champion is not None and champion != version:
                    self._retire_later(model_name, champion)
            else:
                self._metrics.deployments.labels(outcome="canary").inc()
                await self._publish(
                    DeploymentCanaryStarted(
                        model_name=model_name,
                        model_version=version,
                        champion_version=champion,
                        traffic_share=self._settings.canary_traffic_share,
                    ),
                    correlationid,
                )
                self._start_watch(model_name, version, correlationid)
            return self.state(model_name)

    # ---- operators ---------------------------------------------------------------------------

    async def promote(self, model_name: str, version: int = 0, *, reason: str = "", by: str = "operator") -> Any:
        state = self._known(model_name)
        target = version or state.canary_version
        if target is None:
            raise DeploymentError("failed_precondition", f"{model_name} has no canary to promote; name a version")
        if target == state.champion_version:
            return state
        if target == state.canary_version:
            async with self._lock(model_name):
                if self.state(model_name).canary_version == target:
                    await self._end_canary(model_name, "promote", reason or "promoted by an operator", by=by, corr=None)
            return self.state(model_name)
        self._require_artifacts(model_name, target)
        return await self.deploy(
            model_name, target, requested_by=by, promote_now=True, reason=reason or "promoted by an operator"
        )

    async def rollback(self, model_name: str, version: int = 0, *, reason: str = "", by: str = "operator") -> Any:
        state = self._known(model_name)
        reason = reason or "rolled back by an operator"
        if state.canary_version is not None and version in (0, state.canary_version):
            async with self._lock(model_name):
                if self.state(model_name).canary_version is not None:
                    await self._end_canary(model_name, "rollback", reason, by=by, corr=None)
            return self.state(model_name)
        target = version or self._previous_champion(model_name)
        if target is None:
            raise DeploymentError("failed_precondition", f"{model_name} has no earlier version to roll back to")
        if target == state.champion_version:
            return state
        self._require_artifacts(model_name, target)
        async with self._lock(model_name):
            current = self.state(model_name)
            try:
                await self._go_live(model_name, target)
            except _GoLiveFailed as failure:
                raise DeploymentError("unavailable", f"version {target} could not go live: {failure}") from failure
            self._cancel_watch(model_name)
            retired = [v for v in current.live_versions if v != target]
            await self._publish(
                DeploymentRolledBack(
                    model_name=model_name,
                    model_version=current.champion_version or target,
                    restored_version=target,
                    reason=reason,
                    rolled_back_by=by,
                ),
                None,
            )
            for old in retired:
                self._retire_later(model_name, old)
        return self.state(model_name)

    def _known(self, model_name: str) -> ModelDeployment:
        state = self.book.get(model_name)
        if state is None and not self.available_versions(model_name):
            raise DeploymentError("not_found", f"unknown model {model_name!r}")
        return state or ModelDeployment(model_name)

    def _require_artifacts(self, model_name: str, version: int) -> None:
        if version not in self.available_versions(model_name):
            raise DeploymentError("not_found", f"{model_name} version {version} has no artifacts to deploy")

    def _previous_champion(self, model_name: str) -> int | None:
        champion = self.state(model_name).champion_version
        earlier = [v for v in self._history.get(model_name, []) if v != champion]
        return earlier[-1] if earlier else None

    # ---- canary ------------------------------------------------------------------------------

    def _start_watch(self, model_name: str, version: int, correlationid: str | None) -> None:
        self._cancel_watch(model_name)
        task = asyncio.get_running_loop().create_task(self._watch(model_name, version, correlationid))
        self._watches[model_name] = _Watch(version, task)

    def _cancel_watch(self, model_name: str) -> None:
        watch = self._watches.pop(model_name, None)
        if watch is not None and watch.task is not asyncio.current_task():
            watch.task.cancel()

    async def _watch(self, model_name: str, version: int, correlationid: str | None) -> None:
        """Judge the canary every ``check_interval_s`` until it is promoted or rolled back."""
        policy = self._settings.canary_policy
        champion = self.state(model_name).champion_version
        canary_name = triton_name(model_name, version)
        champion_name = triton_name(model_name, champion) if champion is not None else None
        base = await self._traffic_base(model_name, version, canary_name)
        champion_base = await self._traffic_base(model_name, champion, champion_name) if champion_name else None
        started = self._clock()
        try:
            while True:
                await asyncio.sleep(self._settings.check_interval_s)
                canary = await self._traffic_since(model_name, version, canary_name, base)
                reference = (
                    await self._traffic_since(model_name, champion, champion_name, champion_base)
                    if champion is not None and champion_name is not None and champion_base is not None
                    else VersionTraffic()
                )
                self._metrics.canary_requests.labels(model=model_name).set(canary.requests)
                verdict = judge(policy, canary, reference, self._clock() - started)
                if verdict.action == "wait":
                    continue
                async with self._lock(model_name):
                    if self.state(model_name).canary_version != version:
                        return  # an operator or a newer candidate acted meanwhile
                    await self._end_canary(
                        model_name, verdict.action, verdict.reason, by="deployment", corr=correlationid
                    )
                return
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.exception("canary watch failed; it restarts with the next reconciliation")
            self._watches.pop(model_name, None)

    async def _traffic_base(
        self, model_name: str, version: int | None, name: str | None
    ) -> tuple[Counts, tuple[int, float]]:
        counts = await self._triton.counts(name) if name else Counts()
        confidence = self._confidence.totals(model_name, version) if self._confidence and version else (0, 0.0)
        return counts, confidence

    async def _traffic_since(
        self, model_name: str, version: int, name: str, base: tuple[Counts, tuple[int, float]]
    ) -> VersionTraffic:
        (start, (start_logged, start_sum)) = base
        now, (logged, total) = await self._traffic_base(model_name, version, name)
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

    async def _end_canary(self, model_name: str, action: str, reason: str, *, by: str, corr: str | None) -> None:
        """Promote or roll back the current canary (the caller holds the model's lock)."""
        state = self.state(model_name)
        canary, champion = state.canary_version, state.champion_version
        if canary is None:
            return
        self._cancel_watch(model_name)
        self._metrics.canary_decisions.labels(decision=action).inc()
        if action == "promote":
            await self._publish(
                DeploymentPromoted(
                    model_name=model_name,
                    model_version=canary,
                    previous_version=champion,
                    reason=reason,
                    promoted_by=by,
                ),
                corr,
            )
            if champion is not None:
                self._retire_later(model_name, champion)
        else:
            await self._publish(
                DeploymentRolledBack(
                    model_name=model_name,
                    model_version=canary,
                    restored_version=champion,
                    reason=reason,
                    rolled_back_by=by,
                ),
                corr,
            )
            self._retire_later(model_name, canary)

    # ---- Triton ------------------------------------------------------------------------------

    async def _go_live(self, model_name: str, version: int) -> None:
        """Write the version into the model repository (if needed), load it, warm it up and
        smoke-test it; raises ``_GoLiveFailed`` with a reason code."""
        name = triton_name(model_name, version)
        if not self._repository.has(model_name, version):
            await asyncio.to_thread(self._write, model_name, version)
        try:
            async with asyncio.timeout(self._settings.load_timeout_s):
                await self._triton.load(name)
        except TimeoutError as error:
            raise _GoLiveFailed(
                "load_timeout", f"{name} did not load in {self._settings.load_timeout_s:g} s"
            ) from error
        except Exception as error:
            raise _GoLiveFailed("load_failed", _first_line(error)) from error
        texts = await asyncio.to_thread(self._sample_texts, model_name, version)
        try:
            for _ in range(self._settings.warmup_requests):
                await self._triton.predict(name, texts[:1])
            predictions: list[Prediction] = await self._triton.predict(name, texts)
        except Exception as error:
            raise _GoLiveFailed("smoke_test_failed", _first_line(error)) from error
        problems = smoke_problems(texts, predictions, await self._triton.labels(name))
        if problems:
            raise _GoLiveFailed("smoke_test_failed", "; ".join(problems))

    def _write(self, model_name: str, version: int) -> None:
        with tempfile.TemporaryDirectory(prefix="deploy-") as scratch:
            folder = Path(scratch) / "model"
            try:
                self._registry.download_verified(model_name, version, folder)
            except ArtifactMissing as error:
                raise _GoLiveFailed("artifact_missing", str(error)) from error
            except ManifestMismatch as error:
                raise _GoLiveFailed("artifact_corrupt", error.detail) from error
            self._repository.write(model_name, version, folder, self._settings.serving_options)

    def _sample_texts(self, model_name: str, version: int) -> list[str]:
        """A few validation texts of the version's own dataset (else generic ones) for the smoke test."""
        try:
            dataset_id = self._registry.manifest(model_name, version)["lineage"]["dataset_id"]
            frame = SnapshotReader(self._store).labelled(dataset_id, "validation")
            texts = [str(t) for t in frame["text"].head(8)]
        except Exception:
            texts = []
        return texts + _SMOKE_TEXTS

    def _retire_later(self, model_name: str, version: int) -> None:
        task = asyncio.get_running_loop().create_task(self._retire(model_name, version, grace=True))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _retire(self, model_name: str, version: int, *, grace: bool) -> None:
        """Unload a version that no longer serves and remove it from the repository."""
        if grace:
            await asyncio.sleep(self._settings.retire_grace_s)
        if version in self.state(model_name).live_versions or version == self.state(model_name).pending_version:
            return  # it came back meanwhile
        name = triton_name(model_name, version)
        with contextlib.suppress(Exception):
            await self._triton.unload(name)
        await asyncio.to_thread(self._repository.remove, name)
        self._metrics.retired.inc()

    async def reconcile(self) -> list[str]:
        """Make Triton match the state: load what should be live, unload what should not.
        Returns what it did (for logs and tests)."""
        actions: list[str] = []
        if not await self._triton.is_live():
            return actions
        ready = await self._triton.ready_models()
        wanted: set[str] = set()
        for state in self.book.models():
            if not self.manages(state.model_name):
                continue
            for version in state.live_versions:
                name = triton_name(state.model_name, version)
                wanted.add(name)
                if name in ready:
                    continue
                async with self._lock(state.model_name):
                    if version not in self.state(state.model_name).live_versions:
                        continue
                    try:
                        await self._go_live(state.model_name, version)
                        actions.append(f"loaded {name}")
                    except _GoLiveFailed as failure:
                        logger.error("could not restore a live version", extra={"model": name, "error": str(failure)})
                        actions.append(f"failed {name}: {failure.reason}")
            if state.canary_version is not None and state.model_name not in self._watches:
                self._start_watch(state.model_name, state.canary_version, None)
                actions.append(f"watching canary {triton_name(state.model_name, state.canary_version)}")
            if state.pending_version is not None:
                wanted.add(triton_name(state.model_name, state.pending_version))
        for name, (model_name, version) in self._repository.deployed().items():
            if name in wanted or not self.manages(model_name) or self._lock(model_name).locked():
                continue
            state = self.state(model_name)
            if version in state.live_versions or version == state.pending_version:
                continue
            with contextlib.suppress(Exception):
                await self._triton.unload(name)
            await asyncio.to_thread(self._repository.remove, name)
            actions.append(f"unloaded {name}")
        if actions:
            logger.info("reconciled Triton with the deployments topic", extra={"actions": actions})
        self._metrics.reconciliations.inc()
        return actions

    async def run_reconciler(self) -> None:
        while True:
            try:
                await self.reconcile()
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("reconciliation failed; retrying")
            await asyncio.sleep(self._settings.reconcile_interval_s)

    async def stop(self) -> None:
        for model_name in list(self._watches):
            self._cancel_watch(model_name)
        for task in list(self._background):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task


def _first_line(error: BaseException) -> str:
    text = str(error).strip() or type(error).__name__
    return text.splitlines()[0][:500]


def _fields(data: EventData) -> dict[str, Any]:
    return {
        k: v
        for k, v in data.model_dump().items()
        if k in ("model_version", "champion_version", "restored_version", "traffic_share", "reason")
    }

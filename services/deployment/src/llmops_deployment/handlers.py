"""The deployment service: approved models go live on Triton through a canary, and operators
promote or roll back. The deployments topic is the source of truth; this service is its only
writer, so after replaying the topic on start it keeps the state by folding what it publishes.

Every change is the same three steps: ask ``domain.lifecycle`` what a command does to a version
(or be refused), perform the effects it names through the adapters, and fold what was published.
Every promotion, rollback and canary verdict is also recorded on the audit topic with the principal
that decided it (``domain.audit``); ``rollback`` without a version reads the champions' order from
there, since the deployments topic is compacted and forgets it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

from llmops_deployment.adapters.artifacts import Artifacts
from llmops_deployment.adapters.audit import AuditTrail
from llmops_deployment.adapters.metrics import DeploymentMetrics
from llmops_deployment.adapters.traffic import ConfidenceTracker
from llmops_deployment.adapters.triton_pool import TritonPool
from llmops_deployment.canary_watch import CanaryWatcher
from llmops_deployment.domain.audit import audit_of_deployment, audit_of_verdict, previous_champion
from llmops_deployment.domain.canary import Verdict
from llmops_deployment.domain.lifecycle import (
    Command,
    Decision,
    EffectKind,
    ModelLifecycle,
    VersionState,
    command_for,
    decide,
)
from llmops_deployment.errors import (
    DeploymentError,
    FailedPrecondition,
    FailureReason,
    GoLiveFailed,
    InvalidRequest,
    NotFound,
    TritonUnavailable,
    first_line,
)
from llmops_deployment.golive import GoLive
from llmops_deployment.settings import DeploymentSettings
from llmops_events import Envelope, derived_id
from llmops_events.base import EventData
from llmops_events.v1 import AuditRecorded, EvaluationCompleted
from llmops_events.v1 import Decision as EvaluationDecision
from llmops_messaging import EventPublisher, current_event_id
from llmops_messaging.tracing import job_span
from llmops_models import NAME_PATTERN, is_valid_name, shown
from llmops_serving import ModelDeployment, triton_name

logger = logging.getLogger(__name__)


class DeploymentService:
    def __init__(
        self,
        *,
        settings: DeploymentSettings,
        artifacts: Artifacts,
        triton: TritonPool,
        publisher: EventPublisher,
        confidence: ConfidenceTracker | None = None,
        metrics: DeploymentMetrics | None = None,
        audit: AuditTrail | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._settings = settings
        self._artifacts = artifacts
        self._publisher = publisher
        self._audit = audit
        """Where promotions, rollbacks and verdicts are recorded (None: nowhere, in unit tests of
        other behaviour; the service's composition root always passes one)."""
        self._metrics = metrics or DeploymentMetrics()
        self._clock = clock
        self.go_live = GoLive(settings=settings, triton=triton, artifacts=artifacts, clock=clock)
        self.watcher = CanaryWatcher(
            settings=settings,
            generation_policy=settings.generation_canary_policy,  # a wrong policy file fails the start
            triton=triton,
            confidence=confidence,
            metrics=self._metrics,
            on_verdict=self._on_verdict,
            clock=clock,
        )
        self._models: dict[str, ModelLifecycle] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._resumes: dict[tuple[str, int], int] = {}
        """(model, version) → times the reconciler resumed its deployment (in memory: a restart
        of the service starts the count again)."""
        self._background: set[asyncio.Task[None]] = set()

    # ---- state -------------------------------------------------------------------------------

    def replay(self, event: EventData) -> None:
        """Fold one event of the deployments topic (at start-up, before anything is published)."""
        name = getattr(event, "model_name", None)
        if isinstance(name, str):
            self._models[name] = self.lifecycle(name).apply(event)

    def manages(self, model_name: str) -> bool:
        return not self._settings.model_names or model_name in self._settings.model_names

    def lifecycle(self, model_name: str) -> ModelLifecycle:
        return self._models.get(model_name) or ModelLifecycle.empty(model_name)

    def state(self, model_name: str) -> ModelDeployment:
        return self.lifecycle(model_name).deployment

    def models(self) -> list[ModelDeployment]:
        return [self._models[name].deployment for name in sorted(self._models)]

    def available_versions(self, model_name: str) -> list[int]:
        return self._artifacts.published_versions(model_name)

    def kind_of(self, model_name: str, version: int) -> str:
        """The version's model kind (its manifest's; the model's, as the topic last said, when the
        manifest cannot be read)."""
        return self._artifacts.kind(model_name, version) or self.state(model_name).kind

    def lock(self, model_name: str) -> asyncio.Lock:
        return self._locks.setdefault(model_name, asyncio.Lock())

    # ---- the one way the state changes ---------------------------------------------------------

    async def _apply(
        self,
        model_name: str,
        version: int,
        command: Command,
        *,
        by: str = "deployment",
        reason: str = "",
        corr: str | None = None,
        promote_now: bool = False,
    ) -> Decision:
        """Ask the lifecycle, then perform its effects in order (the caller holds the model's lock).
        A failing effect (``GoLiveFailed``) stops the rest."""
        decision = decide(
            self.lifecycle(model_name),
            version,
            command,
            by=by,
            reason=reason,
            promote_now=promote_now,
            artifact_uri=self._artifacts.uri(model_name, version),
            traffic_share=self._settings.canary_traffic_share,
            model_kind=self.kind_of(model_name, version),
        )
        if decision.transition.source is VersionState.CANARY and command in (Command.PROMOTE, Command.ROLLBACK):
            self._metrics.canary_decisions.labels(decision=str(command)).inc()
        for effect in decision.effects:
            match effect.kind:
                case EffectKind.SUPERSEDE_CANARY:  # its rollback's effects follow
                    self._metrics.canary_decisions.labels(decision=str(Command.ROLLBACK)).inc()
                case EffectKind.GO_LIVE:
                    started = self._clock()
                    with job_span("go live", attributes=_span_attributes(model_name, effect.version)):
                        await self.go_live(model_name, effect.version)
                    self._metrics.go_live_seconds.observe(self._clock() - started)
                case EffectKind.WATCH_CANARY:
                    state = self.state(model_name)
                    self.watcher.start(model_name, effect.version, state.champion_version, corr, kind=state.kind)
                case EffectKind.STOP_WATCH:
                    self.watcher.cancel(model_name)
                case EffectKind.RETIRE_NOW:
                    await self._retire(model_name, effect.version, grace=False)
                case EffectKind.RETIRE_LATER | EffectKind.RETIRE_REPLACED:
                    self._retire_later(model_name, effect.version)
                case _:
                    assert effect.event is not None, effect
                    await self._publish(effect.event, corr)
        return decision

    async def _publish(self, data: EventData, correlationid: str | None) -> None:
        # In answer to an event (an approval), the id derives from it: the approval handled again
        # publishes the same ids, and consumers skip the copies (issue 20). Otherwise a new one.
        cause = current_event_id()
        if cause is None:
            sent = await self._publisher.publish(data, correlationid=correlationid)
        else:
            step = f"{data.event_type}/{getattr(data, 'model_version', '')}"
            sent = await self._publisher.publish(data, correlationid=correlationid, id=derived_id(cause, step))
        model_name = str(getattr(data, "model_name", ""))
        before = self.state(model_name).champion_version
        after = self.lifecycle(model_name).apply(data).deployment.champion_version
        record = audit_of_deployment(data, before, after)
        if record is not None:
            # Before the fold: if recording fails, the handling fails and runs again from the state
            # before, publishing the deployment event again under the same derived id, then this.
            sent_id = getattr(sent, "id", None)
            await self._record(record, correlationid, derived_id(sent_id, record.event_type) if sent_id else None)
        self.replay(data)
        self._metrics.observe(self.state(getattr(data, "model_name", "")))
        fields = {k: v for k, v in data.model_dump().items() if k in _LOGGED}
        logger.info("deployment event", extra={"event": type(data).__name__, **fields})

    # ---- evaluation decisions and operators ----------------------------------------------------

    async def on_evaluation_completed(self, envelope: Envelope[EvaluationCompleted]) -> None:
        model, version = envelope.data.model_name, envelope.data.model_version
        if envelope.data.decision != EvaluationDecision.APPROVED or not self.manages(model):
            return
        async with self.lock(model):
            await self._deploy(model, version, Command.DEPLOY, by="evaluation", corr=envelope.correlationid)

    async def _deploy(
        self, model_name: str, version: int, command: Command, *, by: str, reason: str = "", corr: str | None = None
    ) -> None:
        """DEPLOY or PROMOTE ``version``; when that starts a deployment, finish it with the go-live's
        outcome. Once ``requested`` is on the topic the deployment is recorded: a go-live that ends
        without a verdict on the version (Triton unreachable past the retry budget, an I/O error, a
        publish that failed) leaves it ``deploying`` for the reconciler to resume, so an approval is
        handled (not redelivered, not dead-lettered); an operator is told."""
        self._resumes.pop((model_name, version), None)
        try:
            await self._go_live(
                model_name, version, command, by=by, reason=reason, corr=corr, promote_now=command is Command.PROMOTE
            )
        except Exception as error:
            if not self._left_deploying(model_name, version, error):
                raise
            if command is Command.PROMOTE and isinstance(error, TritonUnavailable):
                raise TritonUnavailable(
                    f"Triton is unreachable: {model_name} version {version} stays deploying, and the reconciler "
                    f"resumes it once Triton answers (as a canary while a champion serves); {error.message}"
                ) from error
            if command is Command.PROMOTE:
                raise

    async def _go_live(
        self,
        model_name: str,
        version: int,
        command: Command,
        *,
        by: str = "deployment",
        reason: str = "",
        corr: str | None = None,
        promote_now: bool = False,
    ) -> str:
        """``command`` (DEPLOY, PROMOTE or RESUME), then, if the version is deploying, the go-live's
        outcome: passed, or failed on a verdict (rolled back). Returns the outcome: ``canary``,
        ``champion``, the failure reason, or the state it was in already."""
        try:
            decision = await self._apply(model_name, version, command, by=by, reason=reason, corr=corr)
        except GoLiveFailed as failure:
            self._metrics.deployments.labels(outcome=str(failure.reason)).inc()
            await self._apply(model_name, version, Command.GO_LIVE_FAILED, reason=failure.summary, corr=corr)
            return str(failure.reason)
        if decision.transition.target is not VersionState.DEPLOYING:
            return str(decision.transition.target)  # nothing to deploy: it was live already
        passed = await self._apply(
            model_name, version, Command.GO_LIVE_PASSED, by=by, reason=reason, corr=corr, promote_now=promote_now
        )
        outcome = "promoted" if passed.transition.target is VersionState.CHAMPION else "canary"
        self._metrics.deployments.labels(outcome=outcome).inc()
        return str(passed.transition.target)

    def _left_deploying(self, model_name: str, version: int, error: Exception) -> bool:
        """Whether ``error`` ended a go-live without a verdict and left the version ``deploying``
        (then it is logged and counted as deferred); an answer to the caller (``DeploymentError``
        other than ``TritonUnavailable``) or an error before anything was requested is not."""
        if isinstance(error, DeploymentError) and not isinstance(error, TritonUnavailable):
            return False
        if self.lifecycle(model_name).state_of(version) is not VersionState.DEPLOYING:
            return False
        self._metrics.deployments.labels(outcome="deferred").inc()
        logger.warning(
            "deployment left deploying for the reconciler to resume",
            extra={"model": triton_name(model_name, version), "error": f"{type(error).__name__}: {first_line(error)}"},
        )
        return True

    async def promote(self, model_name: str, version: int = 0, *, reason: str = "", by: str = "operator") -> Any:
        """Make the canary (or ``version``, deployed first if it is not live) the champion now."""
        self._require_model(model_name)
        async with self.lock(model_name):
            life = self.lifecycle(model_name)
            target = version or life.deployment.canary_version
            if target is None:
                raise FailedPrecondition(f"{model_name} has no canary to promote; name a version")
            if not life.state_of(target).live:
                self._require_artifacts(model_name, target)
            await self._deploy(model_name, target, Command.PROMOTE, by=by, reason=reason or "promoted by an operator")
        return self.state(model_name)

    async def rollback(self, model_name: str, version: int = 0, *, reason: str = "", by: str = "operator") -> Any:
        """End the canary (no version, or the canary's); else restore ``version`` or the previous champion."""
        self._require_model(model_name)
        reason = reason or "rolled back by an operator"
        async with self.lock(model_name):
            life = self.lifecycle(model_name)
            canary = life.deployment.canary_version
            if canary is not None and version in (0, canary):
                await self._apply(model_name, canary, Command.ROLLBACK, by=by, reason=reason)
                return self.state(model_name)
            target = version or await self._previous_champion(model_name)
            if target is None:
                raise FailedPrecondition(f"{model_name} has no earlier version to roll back to")
            if not life.state_of(target).live:
                self._require_artifacts(model_name, target)
            await self._apply(model_name, target, Command.RESTORE, by=by, reason=reason)
        return self.state(model_name)

    def _require_model(self, model_name: str) -> None:
        if not is_valid_name(model_name):
            raise InvalidRequest(f"model name {shown(model_name)} must match {NAME_PATTERN.pattern}")
        if model_name not in self._models and not self.available_versions(model_name):
            raise NotFound(f"unknown model {shown(model_name)}")

    def _require_artifacts(self, model_name: str, version: int) -> None:
        if version not in self.available_versions(model_name):
            raise NotFound(f"{model_name} version {version} has no artifacts to deploy")

    async def _on_verdict(self, model_name: str, version: int, verdict: Verdict, corr: str | None) -> None:
        command = command_for(verdict.action)
        # The watch runs in a task created while the approval was handled: the verdict (promotion
        # or rollback) goes on in the trace that approval came in.
        attributes = {**_span_attributes(model_name, version), "llmops.canary.action": str(verdict.action)}
        with job_span("canary verdict", attributes=attributes):
            async with self.lock(model_name):
                if command is None or self.lifecycle(model_name).state_of(version) is not VersionState.CANARY:
                    return  # an operator or a newer candidate acted meanwhile
                champion = self.state(model_name).champion_version
                await self._record(audit_of_verdict(model_name, version, verdict, champion), corr, None)
                await self._apply(model_name, version, command, reason=verdict.reason, corr=corr)

    async def _record(self, record: AuditRecorded, correlationid: str | None, id: str | None) -> None:
        if self._audit is not None:
            await self._audit.record(record, correlationid=correlationid, id=id)

    async def _previous_champion(self, model_name: str) -> int | None:
        """The champion before the current one, from the audit trail (which compaction does not
        thin out); from this process's own fold when the trail cannot be read or predates it."""
        life = self.lifecycle(model_name)
        if self._audit is not None:
            try:
                records = await self._audit.history(model_name)
            except Exception as error:  # an unreadable trail must not block an operator's way back
                logger.warning(
                    "audit trail unreadable; rolling back to the previous champion this process knows",
                    extra={"model": model_name, "error": f"{type(error).__name__}: {first_line(error)}"},
                )
            else:
                found = previous_champion(records, model_name, life.deployment.champion_version)
                if found is not None:
                    return found
        return life.previous_champion()

    # ---- Triton ------------------------------------------------------------------------------

    async def reload(self, model_name: str, version: int) -> bool:
        """Load a live version Triton lost (False: it stopped being live meanwhile); ``GoLiveFailed``."""
        async with self.lock(model_name):
            if not self.lifecycle(model_name).state_of(version).live:
                return False
            await self._apply(model_name, version, Command.RELOAD)
            return True

    async def resume(self, model_name: str, version: int) -> str | None:
        """Finish a deployment left ``deploying`` whose go-live is not running (a crash, an I/O
        error, Triton unreachable past the retry budget): run the go-live again (through the canary
        while a champion serves, whoever asked for it). After ``resume_max_attempts`` resumes
        without a verdict it is rolled back (``resume_exhausted``). Returns what happened (None: it
        is not deploying any more)."""
        async with self.lock(model_name):
            if self.lifecycle(model_name).state_of(version) is not VersionState.DEPLOYING:
                return None
            name, limit = triton_name(model_name, version), self._settings.resume_max_attempts
            attempt = min(self._resumes.get((model_name, version), 0) + 1, limit)
            self._resumes[(model_name, version)] = attempt
            try:
                outcome = await self._go_live(model_name, version, Command.RESUME)
            except Exception as error:
                if not self._left_deploying(model_name, version, error):
                    raise
                last = f"{type(error).__name__}: {first_line(error)}"
                if attempt < limit:
                    return f"resume of {name} failed (attempt {attempt} of {limit}): {last}"
                reason = FailureReason.RESUME_EXHAUSTED
                self._metrics.deployments.labels(outcome=str(reason)).inc()
                why = f"{reason}: {attempt} attempts to resume the deployment failed; the last: {last}"
                await self._apply(model_name, version, Command.GO_LIVE_FAILED, reason=why)
                outcome = str(reason)
            self._resumes.pop((model_name, version), None)
            if self.lifecycle(model_name).state_of(version) is VersionState.ROLLED_BACK:
                return f"rolled back {name}: {outcome}"
            return f"resumed {name}: {outcome}"

    def resume_watch(self, model_name: str) -> int | None:
        """Watch the model's canary again if nothing watches it (after a restart); its version."""
        state = self.state(model_name)
        if state.canary_version is None or self.watcher.watching(model_name):
            return None
        self.watcher.start(model_name, state.canary_version, state.champion_version, None, kind=state.kind)
        return state.canary_version

    def _retire_later(self, model_name: str, version: int) -> None:
        task = asyncio.get_running_loop().create_task(self._retire(model_name, version, grace=True))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _retire(self, model_name: str, version: int, *, grace: bool) -> None:
        """Unload a version that no longer serves and remove it from the model repository; after
        the grace period under the model's lock (a restore of it may be under way), else the
        caller holds it."""
        if grace:
            await asyncio.sleep(self._settings.retire_grace_s)
        async with self.lock(model_name) if grace else contextlib.nullcontext():
            if self.lifecycle(model_name).state_of(version).loaded:
                return  # it came back meanwhile
            await self.go_live.take_down(triton_name(model_name, version), kind=self.kind_of(model_name, version))
            self._metrics.retired.inc()

    async def stop(self) -> None:
        self.watcher.cancel_all()
        for task in list(self._background):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task


def _span_attributes(model_name: str, version: int) -> dict[str, str | int]:
    return {"llmops.model.name": model_name, "llmops.model.version": version}


_LOGGED = ("model_name", "model_version", "champion_version", "restored_version", "traffic_share", "reason")

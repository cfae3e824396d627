"""A model version's lifecycle as a pure state machine: no asyncio, no I/O.

A version is in one :class:`VersionState`; a :class:`Command` moves it along the rows of
:data:`TRANSITIONS` (refused pairs raise :class:`IllegalTransition`), and each row names the
effects the service performs, in order: publish a deployment event, go live on Triton, watch the
canary, retire versions. :func:`decide` turns a row into concrete effects (the events themselves)
for one model; :class:`ModelLifecycle` is the fold of the deployments topic they are published to,
so the state moves only when an event is published. An effect that fails (a go-live) stops the
rest: nothing after it is published, and the state stays where it was.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum

from llmops_deployment.domain.canary import CanaryAction
from llmops_deployment.errors import IllegalTransition
from llmops_events.base import EventData
from llmops_events.v1 import DeploymentCanaryStarted, DeploymentPromoted, DeploymentRequested, DeploymentRolledBack
from llmops_serving import ModelDeployment
from llmops_serving.state import apply as fold_deployment


class VersionState(StrEnum):
    AVAILABLE = "available"
    """Published in the artifact store; never live here (or forgotten by log compaction)."""
    DEPLOYING = "deploying"
    """Requested: being written, loaded, warmed up and smoke-tested."""
    CANARY = "canary"
    """Serving a share of the traffic while it is judged against the champion."""
    CHAMPION = "champion"
    """Serving the rest of the traffic (all of it without a canary)."""
    RETIRED = "retired"
    """Was the champion until another version was promoted: a way back for ``rollback``."""
    ROLLED_BACK = "rolled_back"
    """Failed to go live, or was rolled back as canary or as champion."""

    @property
    def loaded(self) -> bool:
        """Whether Triton must have it (it is never unloaded in this state)."""
        return self in (VersionState.DEPLOYING, VersionState.CANARY, VersionState.CHAMPION)

    @property
    def live(self) -> bool:
        """Whether it takes traffic."""
        return self in (VersionState.CANARY, VersionState.CHAMPION)


class Command(StrEnum):
    DEPLOY = "deploy"
    """An evaluation approved the version."""
    PROMOTE = "promote"
    """Make it the champion: the canary's verdict, or an operator (any version with artifacts)."""
    ROLLBACK = "rollback"
    """End the canary: its verdict, an operator, or a newer candidate superseding it."""
    RESTORE = "restore"
    """An operator's rollback to an earlier version: it becomes the champion again."""
    RELOAD = "reload"
    """The reconciler found a live version missing on Triton (e.g. Triton restarted)."""
    RESUME = "resume"
    """The reconciler found a version left deploying with no go-live running (a crash, an I/O
    error, Triton unreachable past the retry budget): its go-live is run again."""
    GO_LIVE_PASSED = "go_live_passed"
    """The deploying version loaded and passed its smoke test."""
    GO_LIVE_FAILED = "go_live_failed"
    """The deploying version could not go live (the reason is in the event)."""


class When(StrEnum):
    """The guard between the two ways out of ``deploying`` once the go-live passed."""

    PROMOTE_NOW = "no champion, or an operator's promote"
    BEHIND_CHAMPION = "a champion serves"


class EffectKind(StrEnum):
    SUPERSEDE_CANARY = "supersede_canary"
    """Roll the model's canary (another version) back first, as superseded: :func:`decide`
    follows this marker with that rollback's own effects."""
    PUBLISH_REQUESTED = "publish_requested"
    PUBLISH_CANARY_STARTED = "publish_canary_started"
    PUBLISH_PROMOTED = "publish_promoted"
    PUBLISH_ROLLED_BACK = "publish_rolled_back"
    GO_LIVE = "go_live"
    """Write it into the model repository if absent, load, warm up, smoke-test; may fail."""
    WATCH_CANARY = "watch_canary"
    STOP_WATCH = "stop_watch"
    RETIRE_NOW = "retire_now"
    """Unload it and remove it from the model repository at once."""
    RETIRE_LATER = "retire_later"
    """The same after the grace period (the gateway switches first)."""
    RETIRE_REPLACED = "retire_replaced"
    """Retire, after the grace period, the versions it replaces as the one serving."""


@dataclass(frozen=True, slots=True)
class Transition:
    """One row of the table: ``command`` in ``source`` moves the version to ``target``."""

    source: VersionState
    command: Command
    target: VersionState
    effects: tuple[EffectKind, ...] = ()
    when: When | None = None


def _rows(
    sources: Iterable[VersionState],
    command: Command,
    target: VersionState | None,
    effects: tuple[EffectKind, ...] = (),
    when: When | None = None,
) -> tuple[Transition, ...]:
    """Rows for several sources; ``target`` None keeps each in its state."""
    return tuple(Transition(s, command, target or s, effects, when) for s in sources)


S, C, E = VersionState, Command, EffectKind
_IDLE = (S.AVAILABLE, S.RETIRED, S.ROLLED_BACK)
_GO_LIVE = (E.SUPERSEDE_CANARY, E.PUBLISH_REQUESTED, E.GO_LIVE)

TRANSITIONS: tuple[Transition, ...] = (
    # A deployment: requested, then the go-live decides. From ``deploying`` it starts over: the
    # approval redelivered after an unexpected failure, or a restart in the middle of one.
    *_rows((*_IDLE, S.DEPLOYING), C.DEPLOY, S.DEPLOYING, _GO_LIVE),
    *_rows((S.CANARY, S.CHAMPION), C.DEPLOY, None),  # already live: nothing to do
    *_rows((S.DEPLOYING,), C.GO_LIVE_PASSED, S.CHAMPION, (E.PUBLISH_PROMOTED, E.RETIRE_REPLACED), When.PROMOTE_NOW),
    *_rows(
        (S.DEPLOYING,), C.GO_LIVE_PASSED, S.CANARY, (E.PUBLISH_CANARY_STARTED, E.WATCH_CANARY), When.BEHIND_CHAMPION
    ),
    *_rows((S.DEPLOYING,), C.GO_LIVE_FAILED, S.ROLLED_BACK, (E.PUBLISH_ROLLED_BACK, E.RETIRE_NOW)),
    # The canary ends, by its verdict or an operator.
    *_rows((S.CANARY,), C.PROMOTE, S.CHAMPION, (E.STOP_WATCH, E.PUBLISH_PROMOTED, E.RETIRE_REPLACED)),
    *_rows((S.CANARY,), C.ROLLBACK, S.ROLLED_BACK, (E.STOP_WATCH, E.PUBLISH_ROLLED_BACK, E.RETIRE_LATER)),
    # Operators: promote any version with artifacts (a deployment that skips the canary), or
    # restore an earlier one (loaded before anything is published).
    *_rows((*_IDLE, S.DEPLOYING), C.PROMOTE, S.DEPLOYING, _GO_LIVE),
    *_rows((S.CHAMPION,), C.PROMOTE, None),
    *_rows(_IDLE, C.RESTORE, S.CHAMPION, (E.GO_LIVE, E.STOP_WATCH, E.PUBLISH_ROLLED_BACK, E.RETIRE_REPLACED)),
    *_rows((S.CHAMPION,), C.RESTORE, None),
    # The reconciler: a live version Triton lost is loaded again; a deployment nobody finishes is
    # resumed (``requested`` is on the topic already), then ends as any go-live does.
    *_rows((S.CANARY, S.CHAMPION), C.RELOAD, None, (E.GO_LIVE,)),
    *_rows((S.DEPLOYING,), C.RESUME, None, (E.GO_LIVE,)),
)
del S, C, E


def transition(state: VersionState, command: Command, *, when: When | None = None, subject: str = "") -> Transition:
    """The row for ``command`` in ``state`` (``when`` picks between guarded rows); raises
    :class:`IllegalTransition` for a pair the table refuses."""
    rows = [t for t in TRANSITIONS if t.source is state and t.command is command]
    guarded = [t for t in rows if t.when is None or t.when is when]
    if len(guarded) == 1:
        return guarded[0]
    if rows and not guarded:
        raise ValueError(f"{command} in {state} needs one of {[str(t.when) for t in rows]}")
    allowed = sorted({str(t.command) for t in TRANSITIONS if t.source is state})
    what = f"{subject} is {state.replace('_', ' ')}" if subject else f"a version that is {state.replace('_', ' ')}"
    raise IllegalTransition(
        f"{what}: it cannot {command.replace('_', ' ')} (it can: {', '.join(allowed) or 'nothing'})",
        state=str(state),
        command=str(command),
    )


def command_for(action: CanaryAction) -> Command | None:
    """What a canary verdict asks of the canary (None: keep watching)."""
    return {CanaryAction.PROMOTE: Command.PROMOTE, CanaryAction.ROLLBACK: Command.ROLLBACK}.get(action)


@dataclass(frozen=True, slots=True)
class ModelLifecycle:
    """One model's versions, folded from its deployment events (the same fold as the gateway's,
    plus what became of the versions that stopped serving, and the order champions served in)."""

    deployment: ModelDeployment
    ended: Mapping[int, VersionState] = field(default_factory=dict)
    """RETIRED or ROLLED_BACK, for versions that stopped serving (never mutated: replaced)."""
    champions: tuple[int, ...] = ()
    """Champions in the order they served, for ``rollback`` without a version."""

    @classmethod
    def empty(cls, model_name: str) -> ModelLifecycle:
        return cls(ModelDeployment(model_name))

    @property
    def model_name(self) -> str:
        return self.deployment.model_name

    def state_of(self, version: int) -> VersionState:
        d = self.deployment
        if version == d.champion_version:
            return VersionState.CHAMPION
        if version == d.canary_version:
            return VersionState.CANARY
        if version == d.pending_version:
            return VersionState.DEPLOYING
        return self.ended.get(version, VersionState.AVAILABLE)

    def previous_champion(self) -> int | None:
        """The champion before the current one that is still a way back (None: there is none)."""
        return previous_of(self.champions, self.deployment.champion_version)

    def apply(self, event: EventData) -> ModelLifecycle:
        before, after = self.deployment, fold_deployment(self.deployment, event)
        if after == before:
            return self
        active_after = {after.champion_version, after.canary_version, after.pending_version}
        ended = {v: s for v, s in self.ended.items() if v not in active_after}
        for version in (before.champion_version, before.canary_version, before.pending_version):
            if version is not None and version not in active_after:
                replaced = isinstance(event, DeploymentPromoted) and version == before.champion_version
                ended[version] = VersionState.RETIRED if replaced else VersionState.ROLLED_BACK
        return replace(
            self,
            deployment=after,
            ended=ended,
            champions=fold_champions(self.champions, before.champion_version, after.champion_version),
        )


def previous_of(champions: tuple[int, ...], current: int | None) -> int | None:
    """The latest of ``champions`` (in the order they served) other than ``current``."""
    earlier = [v for v in champions if v != current]
    return earlier[-1] if earlier else None


def fold_champions(history: tuple[int, ...], previous: int | None, current: int | None) -> tuple[int, ...]:
    """``history`` (champions in the order they served) after the champion changed from
    ``previous`` to ``current``; the audit trail is folded with it too (``domain.audit``)."""
    if current == previous or current is None:
        return history
    if previous is not None and current in history:
        # A rollback to an earlier champion: the version it replaced is no longer a way back.
        history = tuple(v for v in history if v != previous)
    return (*(v for v in history if v != current), current)


@dataclass(frozen=True, slots=True)
class Effect:
    """One thing to do; ``version`` is the version it acts on."""

    kind: EffectKind
    version: int
    event: EventData | None = None
    """What a ``publish_*`` effect publishes."""
    reason: str = ""


@dataclass(frozen=True, slots=True)
class Decision:
    transition: Transition
    effects: tuple[Effect, ...]
    after: ModelLifecycle
    """The lifecycle once every effect succeeded (the fold of the events they publish)."""


def decide(
    life: ModelLifecycle,
    version: int,
    command: Command,
    *,
    by: str = "deployment",
    reason: str = "",
    promote_now: bool = False,
    artifact_uri: str = "",
    traffic_share: float = 0.1,
    model_kind: str | None = None,
) -> Decision:
    """The transition for ``command`` on ``version`` and its concrete effects. ``promote_now``
    (an operator's promote) skips the canary once the go-live passed; ``artifact_uri`` and
    ``traffic_share`` go into the events that carry them, and ``model_kind`` (the version's kind;
    None: the model's, as the topic last said) into every event."""
    model, champion, canary = life.model_name, life.deployment.champion_version, life.deployment.canary_version
    model_kind = model_kind or life.deployment.kind
    when = None
    if command is Command.GO_LIVE_PASSED:
        when = When.PROMOTE_NOW if champion is None or promote_now else When.BEHIND_CHAMPION
    row = transition(life.state_of(version), command, when=when, subject=f"{model} version {version}")
    effects: list[Effect] = []
    current = life
    for kind in row.effects:
        match kind:
            case EffectKind.SUPERSEDE_CANARY:
                if canary is not None and canary != version:
                    # The marker, then the canary's own rollback (its effects, inline).
                    why = f"superseded by version {version}"
                    ended = decide(current, canary, Command.ROLLBACK, by=by, reason=why, model_kind=model_kind)
                    effects += [Effect(kind, canary, reason=why), *ended.effects]
                    current = ended.after
            case EffectKind.RETIRE_REPLACED:
                effects += [Effect(kind, v) for v in life.deployment.live_versions if v != version]
            case EffectKind.STOP_WATCH:
                effects.append(Effect(kind, canary if canary is not None else version))
            case EffectKind.GO_LIVE | EffectKind.WATCH_CANARY | EffectKind.RETIRE_NOW | EffectKind.RETIRE_LATER:
                effects.append(Effect(kind, version))
            case _:
                event = _event(kind, current.deployment, version, command, by, reason, artifact_uri, traffic_share)
                event = event.model_copy(update={"kind": model_kind})
                current = current.apply(event)
                effects.append(Effect(kind, version, event=event))
    return Decision(row, tuple(effects), current)


def _event(
    kind: EffectKind,
    state: ModelDeployment,
    version: int,
    command: Command,
    by: str,
    reason: str,
    artifact_uri: str,
    traffic_share: float,
) -> EventData:
    model, champion = state.model_name, state.champion_version
    match kind:
        case EffectKind.PUBLISH_REQUESTED:
            return DeploymentRequested(
                model_name=model,
                model_version=version,
                artifact_uri=artifact_uri,
                champion_version=champion,
                requested_by=by,
            )
        case EffectKind.PUBLISH_CANARY_STARTED:
            assert champion is not None, "a canary needs a champion"
            return DeploymentCanaryStarted(
                model_name=model, model_version=version, champion_version=champion, traffic_share=traffic_share
            )
        case EffectKind.PUBLISH_PROMOTED:
            first = "first version: nothing to compare with" if champion is None else ""
            return DeploymentPromoted(
                model_name=model,
                model_version=version,
                previous_version=champion,
                reason=reason or first,
                promoted_by=by,
            )
        case EffectKind.PUBLISH_ROLLED_BACK if command is Command.RESTORE:
            # The champion is rolled back to ``version``.
            return DeploymentRolledBack(
                model_name=model,
                model_version=champion if champion is not None else version,
                restored_version=version,
                reason=reason,
                rolled_back_by=by,
            )
        case EffectKind.PUBLISH_ROLLED_BACK:
            # ``version`` (a canary, or a failed deployment) is rolled back; the champion stays.
            return DeploymentRolledBack(
                model_name=model, model_version=version, restored_version=champion, reason=reason, rolled_back_by=by
            )
    raise ValueError(f"{kind} publishes nothing")


# ---- the README's table ------------------------------------------------------------------------


def _label(text: str) -> str:
    return text.replace("_", " ")


def render_table() -> str:
    """The transition table as Markdown (the README shows it; a unit test keeps them equal).
    Rows that differ only in their source state are one line; ``(same)``: each keeps its state."""
    groups: dict[tuple[Command, When | None, tuple[EffectKind, ...]], list[Transition]] = {}
    for row in TRANSITIONS:
        groups.setdefault((row.command, row.when, row.effects), []).append(row)
    lines = ["| version state | command | when | next state | effects, in order |", "|---|---|---|---|---|"]
    for (command, when, effects), rows in groups.items():
        targets = {row.target for row in rows}
        if all(row.target is row.source for row in rows):
            target = "(same)"
        else:
            assert len(targets) == 1, rows
            target = _label(targets.pop())
        lines.append(
            f"| {', '.join(_label(row.source) for row in rows)} | {_label(command)} | {when or ''} "
            f"| {target} | {', '.join(_label(e) for e in effects) or 'nothing'} |"
        )
    return "\n".join(lines)

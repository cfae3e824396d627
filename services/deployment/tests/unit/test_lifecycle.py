"""The version lifecycle (``domain.lifecycle``): every (state, command) pair, allowed or refused,
against a table written out here; the concrete effects and events of each allowed row; the fold;
and the README's table, which must be the one the code renders."""

from __future__ import annotations

import random
import re
from pathlib import Path

import pytest

from llmops_deployment.domain.canary import CanaryAction
from llmops_deployment.domain.lifecycle import (
    TRANSITIONS,
    Command,
    EffectKind,
    ModelLifecycle,
    VersionState,
    When,
    command_for,
    decide,
    render_table,
    transition,
)
from llmops_deployment.errors import ErrorCode, FailedPrecondition, IllegalTransition
from llmops_events.base import EventData
from llmops_events.v1 import DeploymentCanaryStarted, DeploymentPromoted, DeploymentRequested, DeploymentRolledBack
from llmops_serving import DeploymentBook

S, C, E = VersionState, Command, EffectKind
README = Path(__file__).resolve().parents[4] / "docs" / "operations.md"  # the manual page with the table
MODEL = "m"

GO_LIVE = (E.SUPERSEDE_CANARY, E.PUBLISH_REQUESTED, E.GO_LIVE)
RESTORE = (E.GO_LIVE, E.STOP_WATCH, E.PUBLISH_ROLLED_BACK, E.RETIRE_REPLACED)
# (state, command, when) -> (next state, effects); every pair not here is refused.
EXPECTED: dict[tuple[VersionState, Command, When | None], tuple[VersionState, tuple[EffectKind, ...]]] = {
    (S.AVAILABLE, C.DEPLOY, None): (S.DEPLOYING, GO_LIVE),
    (S.RETIRED, C.DEPLOY, None): (S.DEPLOYING, GO_LIVE),
    (S.ROLLED_BACK, C.DEPLOY, None): (S.DEPLOYING, GO_LIVE),
    (S.DEPLOYING, C.DEPLOY, None): (S.DEPLOYING, GO_LIVE),
    (S.CANARY, C.DEPLOY, None): (S.CANARY, ()),
    (S.CHAMPION, C.DEPLOY, None): (S.CHAMPION, ()),
    (S.AVAILABLE, C.PROMOTE, None): (S.DEPLOYING, GO_LIVE),
    (S.RETIRED, C.PROMOTE, None): (S.DEPLOYING, GO_LIVE),
    (S.ROLLED_BACK, C.PROMOTE, None): (S.DEPLOYING, GO_LIVE),
    (S.DEPLOYING, C.PROMOTE, None): (S.DEPLOYING, GO_LIVE),
    (S.CANARY, C.PROMOTE, None): (S.CHAMPION, (E.STOP_WATCH, E.PUBLISH_PROMOTED, E.RETIRE_REPLACED)),
    (S.CHAMPION, C.PROMOTE, None): (S.CHAMPION, ()),
    (S.CANARY, C.ROLLBACK, None): (S.ROLLED_BACK, (E.STOP_WATCH, E.PUBLISH_ROLLED_BACK, E.RETIRE_LATER)),
    (S.AVAILABLE, C.RESTORE, None): (S.CHAMPION, RESTORE),
    (S.RETIRED, C.RESTORE, None): (S.CHAMPION, RESTORE),
    (S.ROLLED_BACK, C.RESTORE, None): (S.CHAMPION, RESTORE),
    (S.CHAMPION, C.RESTORE, None): (S.CHAMPION, ()),
    (S.CANARY, C.RELOAD, None): (S.CANARY, (E.GO_LIVE,)),
    (S.CHAMPION, C.RELOAD, None): (S.CHAMPION, (E.GO_LIVE,)),
    (S.DEPLOYING, C.GO_LIVE_PASSED, When.PROMOTE_NOW): (S.CHAMPION, (E.PUBLISH_PROMOTED, E.RETIRE_REPLACED)),
    (S.DEPLOYING, C.GO_LIVE_PASSED, When.BEHIND_CHAMPION): (S.CANARY, (E.PUBLISH_CANARY_STARTED, E.WATCH_CANARY)),
    (S.DEPLOYING, C.GO_LIVE_FAILED, None): (S.ROLLED_BACK, (E.PUBLISH_ROLLED_BACK, E.RETIRE_NOW)),
    (S.DEPLOYING, C.RESUME, None): (S.DEPLOYING, (E.GO_LIVE,)),
}
ALLOWED = sorted(EXPECTED, key=str)
REFUSED = sorted(
    {(s, c) for s in VersionState for c in Command} - {(s, c) for s, c, _ in EXPECTED},
    key=str,
)


def test_the_table_is_the_expected_one() -> None:
    assert {(t.source, t.command, t.when): (t.target, t.effects) for t in TRANSITIONS} == EXPECTED
    assert len(TRANSITIONS) == len(EXPECTED), "a (state, command, when) row twice"
    assert len(ALLOWED) + len(REFUSED) == len(VersionState) * len(Command) + 1  # + the guarded pair's second row


@pytest.mark.parametrize(("state", "command", "when"), ALLOWED, ids=lambda v: str(v))
def test_an_allowed_transition(state: VersionState, command: Command, when: When | None) -> None:
    row = transition(state, command, when=when)
    assert (row.target, row.effects) == EXPECTED[(state, command, when)]


@pytest.mark.parametrize(("state", "command"), REFUSED, ids=lambda v: str(v))
def test_a_refused_transition(state: VersionState, command: Command) -> None:
    for when in (None, *When):
        with pytest.raises(IllegalTransition) as refused:
            transition(state, command, when=when, subject="m version 3")
        assert refused.value.code is ErrorCode.FAILED_PRECONDITION and isinstance(refused.value, FailedPrecondition)
        assert refused.value.message.startswith(f"m version 3 is {state.replace('_', ' ')}: it cannot")
        assert (refused.value.state, refused.value.command) == (state, command)


def test_a_guarded_transition_needs_its_guard() -> None:
    with pytest.raises(ValueError, match="needs one of"):
        transition(S.DEPLOYING, C.GO_LIVE_PASSED)


def test_a_refusal_says_what_the_version_can_do() -> None:
    with pytest.raises(IllegalTransition) as refused:
        transition(S.DEPLOYING, C.RESTORE, subject="banking version 4")
    assert refused.value.message == (
        "banking version 4 is deploying: it cannot restore "
        "(it can: deploy, go_live_failed, go_live_passed, promote, resume)"
    )


# ---- decide: the same rows on a model, with their events --------------------------------------


def _fold(*events: EventData) -> ModelLifecycle:
    life = ModelLifecycle.empty(MODEL)
    for event in events:
        life = life.apply(event)
    return life


def _requested(v: int, champion: int | None = None) -> DeploymentRequested:
    return DeploymentRequested(model_name=MODEL, model_version=v, artifact_uri="x", champion_version=champion)


def _canary(v: int, champion: int) -> DeploymentCanaryStarted:
    return DeploymentCanaryStarted(model_name=MODEL, model_version=v, champion_version=champion, traffic_share=0.1)


def _promoted(v: int, previous: int | None = None) -> DeploymentPromoted:
    return DeploymentPromoted(model_name=MODEL, model_version=v, previous_version=previous)


def _rolled_back(v: int, restored: int | None) -> DeploymentRolledBack:
    return DeploymentRolledBack(model_name=MODEL, model_version=v, restored_version=restored)


V = 3
"""The version acted on; version 2 is the champion where there is one."""
SETUPS: dict[VersionState, ModelLifecycle] = {
    S.AVAILABLE: _fold(_promoted(2)),
    S.DEPLOYING: _fold(_promoted(2), _requested(V, 2)),
    S.CANARY: _fold(_promoted(2), _requested(V, 2), _canary(V, 2)),
    S.CHAMPION: _fold(_promoted(2), _promoted(V, 2)),
    S.RETIRED: _fold(_promoted(V), _promoted(2, V)),
    S.ROLLED_BACK: _fold(_promoted(2), _requested(V, 2), _rolled_back(V, 2)),
}


def test_the_setups_put_the_version_in_each_state() -> None:
    assert {state: life.state_of(V) for state, life in SETUPS.items()} == {s: s for s in VersionState}


@pytest.mark.parametrize(("state", "command", "when"), ALLOWED, ids=lambda v: str(v))
def test_decide_performs_the_row_and_its_events_fold_to_the_next_state(
    state: VersionState, command: Command, when: When | None
) -> None:
    life = SETUPS[state]
    promote_now = when is When.PROMOTE_NOW
    decision = decide(life, V, command, promote_now=promote_now, reason="why", by="op", artifact_uri="uri")
    target, effects = EXPECTED[(state, command, when)]
    assert decision.transition.target is target and decision.after.state_of(V) is target
    kinds = [e.kind for e in decision.effects]
    # Optional effects drop out when there is nothing to act on (no other canary, nothing replaced).
    assert kinds == [k for k in effects if k in kinds]
    assert set(effects) - set(kinds) <= {E.SUPERSEDE_CANARY, E.RETIRE_REPLACED}
    published = [e.event for e in decision.effects if e.event is not None]
    assert all(event.model_name == MODEL for event in published)
    book = DeploymentBook()
    for event in (*_events_of(life), *published):
        book.apply(event)
    assert book.get(MODEL) == decision.after.deployment, "the gateway's fold agrees"


def _events_of(life: ModelLifecycle) -> list[EventData]:
    """Events that rebuild ``life.deployment`` alone (as after log compaction)."""
    d = life.deployment
    if d.canary_version is not None:
        assert d.champion_version is not None
        return [_canary(d.canary_version, d.champion_version)]
    events: list[EventData] = [_promoted(d.champion_version)] if d.champion_version is not None else []
    if d.pending_version is not None:
        events.append(_requested(d.pending_version, d.champion_version))
    return events


@pytest.mark.parametrize(("state", "command"), REFUSED, ids=lambda v: str(v))
def test_decide_refuses_what_the_table_refuses(state: VersionState, command: Command) -> None:
    with pytest.raises(IllegalTransition, match=f"^m version {V} is"):
        decide(SETUPS[state], V, command)


def test_the_first_version_is_promoted_at_once() -> None:
    life = ModelLifecycle.empty(MODEL)
    deploy = decide(life, 1, C.DEPLOY, by="evaluation", artifact_uri="store/models/m/1")
    assert [(e.kind, e.version) for e in deploy.effects] == [(E.PUBLISH_REQUESTED, 1), (E.GO_LIVE, 1)]
    assert deploy.effects[0].event == DeploymentRequested(
        model_name=MODEL,
        model_version=1,
        artifact_uri="store/models/m/1",
        champion_version=None,
        requested_by="evaluation",
    )
    passed = decide(deploy.after, 1, C.GO_LIVE_PASSED, by="evaluation")
    assert passed.transition.when is When.PROMOTE_NOW
    assert [e.event for e in passed.effects] == [
        DeploymentPromoted(
            model_name=MODEL,
            model_version=1,
            previous_version=None,
            reason="first version: nothing to compare with",
            promoted_by="evaluation",
        )
    ]
    assert passed.after.deployment.champion_version == 1 and passed.after.champions == (1,)


def test_a_new_candidate_supersedes_the_canary_then_canaries_behind_the_champion() -> None:
    life = SETUPS[S.CANARY]  # champion 2, canary 3
    deploy = decide(life, 4, C.DEPLOY, by="evaluation")
    assert [(e.kind, e.version) for e in deploy.effects] == [
        (E.SUPERSEDE_CANARY, 3),  # then the canary's rollback, inline
        (E.STOP_WATCH, 3),
        (E.PUBLISH_ROLLED_BACK, 3),
        (E.RETIRE_LATER, 3),
        (E.PUBLISH_REQUESTED, 4),
        (E.GO_LIVE, 4),
    ]
    assert deploy.effects[2].event == DeploymentRolledBack(
        model_name=MODEL,
        model_version=3,
        restored_version=2,
        reason="superseded by version 4",
        rolled_back_by="evaluation",
    )
    assert deploy.after.state_of(3) is S.ROLLED_BACK and deploy.after.state_of(4) is S.DEPLOYING
    passed = decide(deploy.after, 4, C.GO_LIVE_PASSED, traffic_share=0.25)
    assert [e.event for e in passed.effects if e.event] == [_canary(4, 2).model_copy(update={"traffic_share": 0.25})]
    assert [(e.kind, e.version) for e in passed.effects][1:] == [(E.WATCH_CANARY, 4)]


def test_an_operator_promote_skips_the_canary_and_retires_the_champion() -> None:
    life = decide(SETUPS[S.AVAILABLE], V, C.PROMOTE, by="operator:ann").after
    passed = decide(life, V, C.GO_LIVE_PASSED, promote_now=True, by="operator:ann", reason="promoted by an operator")
    assert [(e.kind, e.version) for e in passed.effects] == [(E.PUBLISH_PROMOTED, V), (E.RETIRE_REPLACED, 2)]
    assert passed.effects[0].event == DeploymentPromoted(
        model_name=MODEL,
        model_version=V,
        previous_version=2,
        reason="promoted by an operator",
        promoted_by="operator:ann",
    )
    assert passed.after.state_of(2) is S.RETIRED


def test_a_failed_go_live_rolls_back_to_the_champion_and_retires_at_once() -> None:
    failed = decide(SETUPS[S.DEPLOYING], V, C.GO_LIVE_FAILED, reason="smoke_test_failed: text 0: …")
    assert [e.event for e in failed.effects if e.event] == [
        DeploymentRolledBack(
            model_name=MODEL,
            model_version=V,
            restored_version=2,
            reason="smoke_test_failed: text 0: …",
            rolled_back_by="deployment",
        )
    ]
    assert [(e.kind, e.version) for e in failed.effects][1:] == [(E.RETIRE_NOW, V)]


def test_the_canary_ends_promoted_or_rolled_back() -> None:
    promoted = decide(SETUPS[S.CANARY], V, C.PROMOTE, reason="healthy over 50 requests: no errors")
    assert [(e.kind, e.version) for e in promoted.effects] == [
        (E.STOP_WATCH, V),
        (E.PUBLISH_PROMOTED, V),
        (E.RETIRE_REPLACED, 2),
    ]
    assert promoted.effects[1].event == _promoted(V, 2).model_copy(
        update={"reason": "healthy over 50 requests: no errors"}
    )
    assert promoted.after.state_of(2) is S.RETIRED and promoted.after.champions == (2, V)

    rolled = decide(SETUPS[S.CANARY], V, C.ROLLBACK, reason="error rate 80.0%", by="deployment")
    assert [(e.kind, e.version) for e in rolled.effects] == [
        (E.STOP_WATCH, V),
        (E.PUBLISH_ROLLED_BACK, V),
        (E.RETIRE_LATER, V),
    ]
    assert rolled.effects[1].event == _rolled_back(V, 2).model_copy(update={"reason": "error rate 80.0%"})


def test_a_restore_loads_first_then_rolls_the_champion_and_the_canary_back() -> None:
    life = _fold(_promoted(1), _promoted(2, 1), _requested(3, 2), _canary(3, 2))
    restore = decide(life, 1, C.RESTORE, reason="drill", by="operator")
    assert [(e.kind, e.version) for e in restore.effects] == [
        (E.GO_LIVE, 1),
        (E.STOP_WATCH, 3),
        (E.PUBLISH_ROLLED_BACK, 1),
        (E.RETIRE_REPLACED, 2),
        (E.RETIRE_REPLACED, 3),
    ]
    assert restore.effects[2].event == DeploymentRolledBack(
        model_name=MODEL, model_version=2, restored_version=1, reason="drill", rolled_back_by="operator"
    )
    after = restore.after
    assert [after.state_of(v) for v in (1, 2, 3)] == [S.CHAMPION, S.ROLLED_BACK, S.ROLLED_BACK]


def test_rollback_without_a_version_walks_back_through_earlier_champions() -> None:
    life = _fold(_promoted(1), _promoted(2, 1), _promoted(3, 2))
    assert life.champions == (1, 2, 3) and life.previous_champion() == 2
    life = decide(life, 2, C.RESTORE).after
    assert life.previous_champion() == 1, "the version rolled back from is no longer a way back"
    life = decide(life, 1, C.RESTORE).after
    assert life.previous_champion() is None and life.deployment.champion_version == 1
    assert ModelLifecycle.empty(MODEL).previous_champion() is None


def test_a_resume_goes_live_again_without_publishing() -> None:
    """The reconciler's way to finish a deployment left in ``deploying`` (a crash, an I/O error,
    Triton unreachable past the retry budget): ``requested`` is on the topic already."""
    resume = decide(SETUPS[S.DEPLOYING], V, C.RESUME)
    assert [(e.kind, e.version, e.event) for e in resume.effects] == [(E.GO_LIVE, V, None)]
    assert resume.after == SETUPS[S.DEPLOYING]
    passed = decide(resume.after, V, C.GO_LIVE_PASSED)
    assert passed.after.state_of(V) is S.CANARY
    for state in (S.AVAILABLE, S.CANARY, S.CHAMPION, S.RETIRED, S.ROLLED_BACK):
        with pytest.raises(IllegalTransition):
            decide(SETUPS[state], V, C.RESUME)


def test_a_canary_verdict_is_a_command() -> None:
    assert command_for(CanaryAction.PROMOTE) is C.PROMOTE
    assert command_for(CanaryAction.ROLLBACK) is C.ROLLBACK
    assert command_for(CanaryAction.WAIT) is None


def test_random_walks_keep_the_fold_and_the_states_consistent() -> None:
    """Whatever commands arrive in whatever order, the lifecycle's fold agrees with the gateway's,
    one version at most is in each live state, and every refusal leaves the state as it was."""
    rng = random.Random(13)
    for _ in range(30):
        life, book = ModelLifecycle.empty(MODEL), DeploymentBook()
        for _ in range(60):
            version, command = rng.randint(1, 4), rng.choice(list(Command))
            try:
                decision = decide(life, version, command, promote_now=rng.random() < 0.3)
            except IllegalTransition:
                continue
            for effect in decision.effects:
                if effect.event is not None:
                    book.apply(effect.event)
            life = decision.after
            assert book.get(MODEL) == life.deployment
            states = [life.state_of(v) for v in range(1, 5)]
            for live in (S.CHAMPION, S.CANARY, S.DEPLOYING):
                assert states.count(live) <= 1
            assert S.CANARY not in states or S.CHAMPION in states, "a canary always has a champion"
            assert life.deployment.champion_version in (None, *life.champions)


# ---- the README --------------------------------------------------------------------------------


def test_the_readme_shows_the_transition_table() -> None:
    text = README.read_text()
    start = text.index("| version state | command |")
    shown = "\n".join(re.findall(r"^\|.*\|$", text[start:].split("\n\n", 1)[0], flags=re.MULTILINE))
    assert shown == render_table(), (
        "the README's lifecycle table differs from domain/lifecycle.py's; paste the output of\n"
        "  .venv/bin/python -c 'from llmops_deployment.domain.lifecycle import render_table; print(render_table())'"
    )

"""The monitoring's pure logic: windows, the feedback join, the drift policy and its debounce."""

from __future__ import annotations

import random
from datetime import UTC, datetime
from pathlib import Path

import pytest
from pydantic import ValidationError

from llmops_monitoring.domain.analysis import oov_share, vocabulary_of
from llmops_monitoring.domain.policy import (
    DAY_SECONDS,
    Action,
    DriftPolicy,
    PolicyState,
    decide,
    load_policy,
)
from llmops_monitoring.domain.windows import LabelJoin, Observation, WindowBook, WindowKey
from llmops_workloads import noisy, out_of_domain_texts, shifted_texts

KEY = WindowKey("banking", 1)
REPO = Path(__file__).resolve().parents[4]


def _observation(request_id: str, label: str = "card_arrival") -> Observation:
    return Observation(request_id, "where is my card", label, 0.9, datetime(2026, 1, 1, tzinfo=UTC))


# -- windows ---------------------------------------------------------------------------------


def test_count_window_closes_at_max_events_and_a_new_one_opens() -> None:
    book: WindowBook[Observation] = WindowBook(max_events=3, max_seconds=None)
    closed = [book.add(KEY, _observation(str(i)), now=0.0)[1] for i in range(7)]
    full = [w for w in closed if w is not None]
    assert [w.size for w in full] == [3, 3]
    assert [o.request_id for o in full[1].observations] == ["3", "4", "5"]
    assert [w.size for w in book.open_windows()] == [1]


def test_windows_are_per_model_version() -> None:
    book: WindowBook[Observation] = WindowBook(max_events=2, max_seconds=None)
    other = WindowKey("banking", 2)
    assert book.add(KEY, _observation("a"), now=0)[1] is None
    assert book.add(other, _observation("b"), now=0)[1] is None
    closed = book.add(KEY, _observation("c"), now=0)[1]
    assert closed is not None and closed.key == KEY and closed.size == 2
    assert [w.key for w in book.open_windows()] == [other]


def test_time_window_expires_after_max_seconds() -> None:
    book: WindowBook[Observation] = WindowBook(max_events=100, max_seconds=60)
    book.add(KEY, _observation("a"), now=10.0)
    book.add(KEY, _observation("b"), now=50.0)
    assert book.expired(now=69.0) == []
    [expired] = book.expired(now=70.0)
    assert expired.size == 2
    assert book.open_windows() == []


def test_close_on_demand() -> None:
    book: WindowBook[Observation] = WindowBook(max_events=100, max_seconds=None)
    book.add(KEY, _observation("a"), now=0)
    window = book.close(KEY)
    assert window is not None and window.size == 1
    assert book.close(KEY) is None


# -- feedback join ---------------------------------------------------------------------------


def test_feedback_labels_the_open_window() -> None:
    book: WindowBook[Observation] = WindowBook(max_events=10, max_seconds=None)
    join = LabelJoin()
    window, _ = book.add(KEY, observation := _observation("r1"), now=0)
    join.served(window, observation)
    assert join.feedback("r1", "lost_card", book=book) == "window"
    assert [o.true_label for o in window.labelled] == ["lost_card"]
    assert join.take_late(KEY) == []


def test_late_feedback_goes_to_the_next_report_of_the_version() -> None:
    book: WindowBook[Observation] = WindowBook(max_events=1, max_seconds=None)
    join = LabelJoin()
    window, closed = book.add(KEY, observation := _observation("r1"), now=0)
    join.served(window, observation)
    assert closed is window
    assert join.feedback("r1", "lost_card", book=book) == "late"
    late = join.take_late(KEY)
    assert [(o.request_id, o.true_label) for o in late] == [("r1", "lost_card")]
    assert join.take_late(KEY) == []


def test_feedback_before_the_inference_event_waits_for_it() -> None:
    book: WindowBook[Observation] = WindowBook(max_events=10, max_seconds=None)
    join = LabelJoin()
    assert join.feedback("r1", "lost_card", book=book) == "early"
    window, _ = book.add(KEY, observation := _observation("r1"), now=0)
    join.served(window, observation)
    assert observation.true_label == "lost_card"


def test_the_join_forgets_the_oldest_requests_beyond_its_bound() -> None:
    book: WindowBook[Observation] = WindowBook(max_events=100, max_seconds=None)
    join = LabelJoin(max_tracked=2)
    for request_id in ("r1", "r2", "r3"):
        window, _ = book.add(KEY, observation := _observation(request_id), now=0)
        join.served(window, observation)
    assert join.feedback("r1", "x", book=book) == "early"  # forgotten: treated as not yet served
    assert join.feedback("r3", "x", book=book) == "window"


# -- policy ----------------------------------------------------------------------------------

POLICY = DriftPolicy(
    min_window_size=100,
    drift_thresholds={"embedding": 0.6, "confidence": 0.3, "oov_share": 0.5, "length": 0.2},
    decide_on=["embedding", "confidence", "oov_share"],
    min_breached_signals=2,
    quality_thresholds={"accuracy_drop": 0.1},
    min_labelled=20,
    consecutive_windows=2,
    cooldown_minutes=60,
    max_retrains_per_day=2,
)
CALM = {"embedding": 0.52, "confidence": 0.05, "oov_share": 0.05, "length": 0.9}
DRIFTED = {"embedding": 0.75, "confidence": 0.8, "oov_share": 4.0, "length": 0.2}


def test_no_breach_and_report_only_signals_do_not_decide() -> None:
    decision = decide(POLICY, signals=CALM, window_size=500, labelled=0, state=PolicyState(), now=0)
    assert decision.action is Action.NONE and decision.breached == []


def test_one_decisive_signal_is_not_enough_when_two_are_required() -> None:
    signals = {**CALM, "embedding": 0.9}
    decision = decide(POLICY, signals=signals, window_size=500, labelled=0, state=PolicyState(), now=0)
    assert decision.action is Action.NONE
    assert "1 decisive signal(s) above threshold, 2 needed" in decision.explanation


def test_small_windows_decide_nothing_and_keep_the_streak() -> None:
    state = PolicyState(consecutive_breaches=1)
    decision = decide(POLICY, signals=DRIFTED, window_size=99, labelled=0, state=state, now=0)
    assert decision.action is Action.INSUFFICIENT
    assert decision.state.consecutive_breaches == 1


def test_consecutive_windows_debounce_then_request_with_the_evidence() -> None:
    first = decide(POLICY, signals=DRIFTED, window_size=500, labelled=0, state=PolicyState(), now=1000)
    assert first.action is Action.DEBOUNCE and first.state.consecutive_breaches == 1
    second = decide(POLICY, signals=DRIFTED, window_size=500, labelled=0, state=first.state, now=1100)
    assert second.action is Action.REQUEST and second.kind == "drift"
    assert second.breached == ["confidence", "embedding", "oov_share"]
    assert "embedding=0.750>0.6" in second.explanation
    assert second.state == PolicyState(consecutive_breaches=0, request_times=(1100,), requests=1)


def test_a_calm_window_resets_the_streak() -> None:
    first = decide(POLICY, signals=DRIFTED, window_size=500, labelled=0, state=PolicyState(), now=0)
    calm = decide(POLICY, signals=CALM, window_size=500, labelled=0, state=first.state, now=10)
    again = decide(POLICY, signals=DRIFTED, window_size=500, labelled=0, state=calm.state, now=20)
    assert calm.state.consecutive_breaches == 0
    assert again.action is Action.DEBOUNCE


def test_cooldown_blocks_a_second_request_until_it_ends() -> None:
    state = PolicyState(consecutive_breaches=1, request_times=(0.0,))
    during = decide(POLICY, signals=DRIFTED, window_size=500, labelled=0, state=state, now=59 * 60)
    assert during.action is Action.COOLDOWN
    after = decide(POLICY, signals=DRIFTED, window_size=500, labelled=0, state=during.state, now=61 * 60)
    assert after.action is Action.REQUEST
    assert after.state.request_times == (0.0, 61 * 60)


def test_daily_cap() -> None:
    state = PolicyState(consecutive_breaches=5, request_times=(0.0, 2 * 3600.0))
    capped = decide(POLICY, signals=DRIFTED, window_size=500, labelled=0, state=state, now=4 * 3600)
    assert capped.action is Action.DAILY_CAP
    next_day = decide(POLICY, signals=DRIFTED, window_size=500, labelled=0, state=state, now=DAY_SECONDS + 1)
    assert next_day.action is Action.REQUEST
    assert next_day.state.request_times == (2 * 3600.0, DAY_SECONDS + 1)


def test_quality_breach_needs_enough_labels_and_wins_the_kind() -> None:
    signals = {**DRIFTED, "accuracy_drop": 0.3}
    state = PolicyState(consecutive_breaches=1)
    few = decide(POLICY, signals=signals, window_size=500, labelled=19, state=state, now=0)
    assert few.kind == "drift" and "accuracy_drop" not in few.breached
    enough = decide(POLICY, signals=signals, window_size=500, labelled=20, state=state, now=0)
    assert enough.action is Action.REQUEST and enough.kind == "quality"
    assert "accuracy_drop" in enough.breached
    quality_only = decide(
        POLICY, signals={**CALM, "accuracy_drop": 0.3}, window_size=500, labelled=50, state=state, now=0
    )
    assert quality_only.action is Action.REQUEST and quality_only.breached == ["accuracy_drop"]


def test_non_champion_versions_are_observed_only() -> None:
    state = PolicyState(consecutive_breaches=1)
    decision = decide(POLICY, signals=DRIFTED, window_size=500, labelled=0, state=state, now=0, actionable=False)
    assert decision.action is Action.OBSERVE_ONLY
    assert decision.state == state


def test_policy_file_rejects_unknown_keys_and_signals(tmp_path: Path) -> None:
    (tmp_path / "typo.yaml").write_text("cooldown_minuets: 10\n")
    with pytest.raises(ValidationError):
        load_policy(tmp_path / "typo.yaml")
    (tmp_path / "signal.yaml").write_text("drift_thresholds: {sentiment: 0.1}\ndecide_on: []\n")
    with pytest.raises(ValidationError, match="unknown drift signal"):
        load_policy(tmp_path / "signal.yaml")
    (tmp_path / "missing.yaml").write_text("drift_thresholds: {embedding: 0.6}\ndecide_on: [confidence]\n")
    with pytest.raises(ValidationError, match="no threshold"):
        load_policy(tmp_path / "missing.yaml")
    assert load_policy(tmp_path / "absent.yaml") == DriftPolicy()


def test_the_shipped_policy_loads_and_matches_the_built_in_defaults() -> None:
    assert load_policy(REPO / "deploy" / "policies" / "drift.yaml") == DriftPolicy()


# -- descriptors and traffic generators ------------------------------------------------------


def test_oov_share_against_the_training_vocabulary() -> None:
    vocabulary = vocabulary_of(["Where is my card?", "my card is lost"])
    assert oov_share(["where is my card", "my flight is late", "!!!"], vocabulary) == [0.0, 0.5, 0.0]


def test_shift_generators_are_seeded_and_leave_the_domain() -> None:
    base = [f"where is my card number {i}" for i in range(200)]
    shifted = shifted_texts(base, share=0.5, seed=3)
    assert shifted == shifted_texts(base, share=0.5, seed=3)
    changed = sum(a != b for a, b in zip(base, shifted, strict=True))
    assert 70 < changed < 130
    assert len(set(out_of_domain_texts(50, seed=1))) > 30
    assert noisy("where is my card", random.Random(1), rate=0.5) != "where is my card"


def test_the_cooldown_survives_a_restart(tmp_path: Path) -> None:
    from llmops_messaging import ProcessedEvents
    from llmops_monitoring.adapters.policy_state import PolicyStateStore

    before = ProcessedEvents(tmp_path / "monitoring.db", consumer="monitoring")
    requested = decide(POLICY, signals=DRIFTED, window_size=500, labelled=0, state=PolicyState(1), now=1000)
    assert requested.action is Action.REQUEST
    PolicyStateStore(before.connection).save("banking", requested.state)
    before.close()

    after = ProcessedEvents(tmp_path / "monitoring.db", consumer="monitoring")  # a new process
    state = PolicyStateStore(after.connection).load("banking")
    assert state == requested.state
    again = decide(POLICY, signals=DRIFTED, window_size=500, labelled=0, state=state, now=1000 + 30 * 60)
    assert again.action is Action.COOLDOWN
    assert PolicyStateStore(after.connection).load("other") == PolicyState()
    after.close()


def test_the_champion_is_remembered_across_restarts_and_rollbacks(tmp_path: Path) -> None:
    import sqlite3

    from llmops_events.v1 import DeploymentPromoted, DeploymentRequested, DeploymentRolledBack
    from llmops_serving import ChampionTable

    connection = sqlite3.connect(tmp_path / "state.db")
    ChampionTable(connection).apply(DeploymentPromoted(model_name="m", model_version=3))
    restarted = ChampionTable(connection)  # empty fold, same table
    restarted.apply(DeploymentRequested(model_name="m", model_version=4, artifact_uri="x"))
    assert restarted.champion("m") == 3
    restarted.apply(DeploymentRolledBack(model_name="m", model_version=3, restored_version=2))
    assert restarted.champion("m") == 2
    assert restarted.champion("other") is None


def test_monitoring_computes_exactly_the_signals_the_classifier_kind_declares() -> None:
    from llmops_models.kinds import CLASSIFIER
    from llmops_monitoring.domain.policy import DRIFT_SIGNALS, QUALITY_SIGNALS

    assert set(DRIFT_SIGNALS) | set(QUALITY_SIGNALS) == set(CLASSIFIER.monitoring_signals)


def test_monitoring_computes_exactly_the_signals_the_causal_lm_kind_declares() -> None:
    from llmops_models.kinds import CAUSAL_LM
    from llmops_monitoring.domain.policy import GENERATION_SIGNALS

    assert set(GENERATION_SIGNALS) == set(CAUSAL_LM.monitoring_signals)

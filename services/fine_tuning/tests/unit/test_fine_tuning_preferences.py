"""The pure parts of DPO: reading pairs, choosing the pairs a job trains on, its step count, the
loss and its metrics, and the policy's bounds."""

from __future__ import annotations

import json
import math

import pytest
import torch
from pydantic import ValidationError

from llmops_fine_tuning.adapters.dpo import dpo_loss, preference_metrics
from llmops_fine_tuning.domain.preferences import dpo_steps, select_pairs
from llmops_fine_tuning.domain.request import CausalLmTrainerPolicy
from llmops_models.kinds.causal_lm.conversations import InvalidConversation
from llmops_models.kinds.causal_lm.logprobs import final_answer_only
from llmops_models.kinds.causal_lm.preferences import PreferencePair, parse_pair, parse_pairs

PROMPT = json.dumps([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Where is my card?"}])


def _row(pair_id: str = "p1", **fields: object) -> dict[str, object]:
    return {
        "pair_id": pair_id,
        "messages_json": PROMPT,
        "chosen": "card_arrival",
        "rejected": "lost_card",
        "source": "correction",
        "split": "train",
        **fields,
    }


def _pair(pair_id: str) -> PreferencePair:
    return PreferencePair(pair_id=pair_id, prompt=[{"role": "user", "content": "q"}], chosen="a", rejected="b")


def test_a_row_becomes_a_pair_with_the_prompt_turns() -> None:
    pair = parse_pair(_row())
    assert pair.prompt == [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Where is my card?"}]
    assert (pair.chosen, pair.rejected, pair.source) == ("card_arrival", "lost_card", "correction")


@pytest.mark.parametrize(
    ("fields", "why"),
    [
        ({"chosen": "  "}, "non-empty"),
        ({"rejected": "Card arrival!"}, "same answer"),  # equal after normalisation: no preference
        ({"messages_json": "not json"}, "not JSON"),
        ({"messages_json": json.dumps([{"role": "system", "content": "x"}])}, "no user turn"),
        ({"messages_json": json.dumps({"role": "user"})}, "JSON array"),
        ({"pair_id": ""}, "pair_id"),
    ],
)
def test_unusable_rows_are_refused_with_a_reason(fields: dict[str, object], why: str) -> None:
    with pytest.raises(InvalidConversation, match=why):
        parse_pair(_row(**fields))


def test_parse_pairs_keeps_the_first_of_each_id_and_counts_the_rest() -> None:
    pairs, invalid = parse_pairs([_row("a"), _row("a", chosen="other"), _row("b", chosen=""), _row("c")])
    assert [(p.pair_id, p.chosen) for p in pairs] == [("a", "card_arrival"), ("c", "card_arrival")]
    assert len(invalid) == 1 and invalid[0].startswith("b:")


def test_select_pairs_needs_the_minimum_and_samples_above_the_maximum() -> None:
    pairs = [_pair(f"p{i:02d}") for i in range(10)]
    assert select_pairs(pairs, min_pairs=11, max_pairs=100, seed=1) == []
    everything = select_pairs(list(reversed(pairs)), min_pairs=10, max_pairs=100, seed=1)
    assert [p.pair_id for p in everything] == [f"p{i:02d}" for i in range(10)]  # ordered by id, whatever the input
    sample = select_pairs(pairs, min_pairs=2, max_pairs=4, seed=7)
    assert len(sample) == 4 and sample == sorted(sample, key=lambda p: p.pair_id)
    assert sample == select_pairs(list(reversed(pairs)), min_pairs=2, max_pairs=4, seed=7)  # seeded, order-free
    duplicated = [*pairs[:3], _pair("p00")]
    assert len(select_pairs(duplicated, min_pairs=4, max_pairs=10, seed=1)) == 0  # 3 distinct pairs


def test_dpo_steps_follow_the_epochs_and_batch_size() -> None:
    policy = CausalLmTrainerPolicy(dpo_epochs=2, dpo_batch_size=8)
    assert dpo_steps(0, policy) == 0
    assert dpo_steps(20, policy) == 6  # ceil(20 / 8) = 3 per epoch
    assert dpo_steps(1, CausalLmTrainerPolicy(dpo_epochs=0.1, dpo_batch_size=8)) == 1


@pytest.mark.parametrize(
    "field",
    [
        {"dpo_beta": 0},
        {"dpo_beta": 11},
        {"dpo_min_pairs": 0},
        {"dpo_max_pairs": 10**6},
        {"dpo_epochs": 20},
        {"dpo_sft_weight": -1},
    ],
)
def test_dpo_settings_are_bounded(field: dict[str, float]) -> None:
    with pytest.raises(ValidationError):
        CausalLmTrainerPolicy.model_validate(field)


def test_dpo_loss_is_log_two_where_the_policy_is_the_reference() -> None:
    chosen, rejected = torch.tensor([-3.0, -1.0]), torch.tensor([-2.0, -4.0])
    losses, chosen_rewards, rejected_rewards = dpo_loss(chosen, rejected, chosen, rejected, beta=0.1)
    assert torch.allclose(losses, torch.full((2,), math.log(2)))
    assert torch.equal(chosen_rewards, torch.zeros(2)) and torch.equal(rejected_rewards, torch.zeros(2))


def test_dpo_loss_falls_as_the_chosen_answer_gains_on_the_rejected_one() -> None:
    reference = torch.tensor([-5.0]), torch.tensor([-5.0])
    losses, chosen_rewards, rejected_rewards = dpo_loss(
        torch.tensor([-4.0]), torch.tensor([-6.0]), *reference, beta=0.5
    )
    assert float(chosen_rewards) == 0.5 and float(rejected_rewards) == -0.5
    assert float(losses) == pytest.approx(-math.log(1 / (1 + math.exp(-1.0))))


def test_preference_metrics_count_ties_as_wrong() -> None:
    metrics = preference_metrics([-1.0, -2.0, -3.0], [-2.0, -1.0, -3.0], [-1.5] * 3, [-1.5] * 3, beta=1.0)
    assert metrics["preference_accuracy"] == pytest.approx(1 / 3)
    assert metrics["reward_margin"] == pytest.approx((1.0 - 1.0 + 0.0) / 3)
    assert metrics["logp_margin"] == pytest.approx(0.0)


def test_only_the_final_answer_is_scored() -> None:
    assert final_answer_only([-100, 5, 6, -100, -100, 7, 8, -100]) == [-100, -100, -100, -100, -100, 7, 8, -100]
    assert final_answer_only([1, 2]) == [1, 2]
    assert final_answer_only([-100, -100]) == [-100, -100]


def test_the_dpo_guard_keeps_dpo_unless_it_costs_more_exact_match_than_the_policy_allows() -> None:
    from llmops_fine_tuning.adapters.causal_lm_trainer import LoraCausalLmTrainer

    judge = LoraCausalLmTrainer._judge_dpo
    strict = CausalLmTrainerPolicy(dpo_max_exact_match_drop=0.0)
    assert judge({"exact_match": 0.75}, 0.75, strict) == ""  # as good: kept
    assert judge({"exact_match": 0.9}, 0.75, strict) == ""  # better: kept
    reason = judge({"exact_match": 0.0}, 1.0, strict)  # the collapse measured in make demo
    assert reason and "1.0000 -> 0.0000" in reason and "dpo_max_exact_match_drop" in reason
    shipped = CausalLmTrainerPolicy()  # 0.05: one answer in 24 may flip
    assert judge({"exact_match": 0.3333}, 0.375, shipped) == ""
    assert judge({"exact_match": 0.375}, 0.5, shipped)  # the 400-pair flywheel run: restored
    # No guard: switched off, no SFT measurement, or no generated answers to judge.
    assert judge({"exact_match": 0.0}, 1.0, CausalLmTrainerPolicy(dpo_max_exact_match_drop=None)) is None
    assert judge({"exact_match": 0.0}, None, strict) is None
    assert judge({"loss": 1.0}, 1.0, strict) is None

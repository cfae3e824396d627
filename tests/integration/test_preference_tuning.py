"""SFT then DPO on the real SmolLM2, in-process, and the gate's win rate against a champion.

An instructions snapshot of BANKING-like conversations (customer message -> intent name) carries
preference pairs: the right intent chosen over a wrong one, the way a user's correction of a
thumbs-down answer arrives. The champion is trained on the same conversations without pairs (SFT
only); the candidate gets SFT then DPO. Then the evaluation service judges the candidate against
the champion on the held-out pairs: win rate, both models' preference accuracy, the report.

Tiny settings (two LoRA matrices of rank 4, 64 tokens, a few steps, one thread) keep it around a
minute on two shared cores."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

from llmops_evaluation.adapters.metrics import EvaluationMetrics
from llmops_evaluation.handlers import EvaluationService
from llmops_evaluation.settings import EvaluationSettings
from llmops_events import Envelope
from llmops_events.v1 import DeploymentPromoted
from llmops_events.v1.training import (
    Hyperparameters,
    TrainingCompleted,
    TrainingProgressed,
    TrainingRequested,
    TrainingTask,
)
from llmops_fine_tuning.adapters.defaults import load_defaults
from llmops_fine_tuning.domain.request import TaskDefaults, TrainingDefaults
from llmops_fine_tuning.settings import FineTuningSettings
from llmops_models.snapshots import PREFERENCE_COLUMNS, SnapshotReader, write_snapshot
from llmops_serving import ChampionTable
from llmops_storage import ArtifactStore
from tests.causal_lm_data import LABELS, instruction_rows
from tests.fine_tuning_inprocess import CollectedEvents, in_process_service

pytestmark = pytest.mark.integration

TINY = Hyperparameters(
    epochs=2, batch_size=8, max_length=64, lora_rank=4, target_modules=["q_proj", "v_proj"], learning_rate=5e-3
)
DPO = {
    "dpo_min_pairs": 8,
    "dpo_batch_size": 4,
    "dpo_epochs": 2,
    "dpo_learning_rate": 2e-3,
    "dpo_beta": 0.1,
    "dpo_sft_weight": 1.0,
}
# DPO made to do harm: the highest learning rate the policy allows, many epochs, nothing holding
# the chosen answers up (no RPO term, no replay), and a guard that tolerates no loss of exact match.
HARMFUL_DPO = {
    **DPO,
    "dpo_epochs": 5,
    "dpo_learning_rate": 1e-2,
    "dpo_beta": 0.05,
    "dpo_sft_weight": 0.0,
    "dpo_replay_weight": 0.0,
    "dpo_max_exact_match_drop": 0.0,
}
POLICY = """\
causal_lm:
  min_examples: 5
  min_format_validity: null
  max_prompt_leakage: 1.0
  max_exact_match_drop: null
  max_rouge_l_drop: null
  reject_if_significantly_worse: false
  min_win_rate: 0.0
  min_win_rate_pairs: 1
"""


def preference_pairs(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """One pair per conversation: its prompt, the right intent chosen, the next intent rejected."""
    pairs = []
    for row in rows:
        messages = json.loads(row["messages_json"])
        wrong = LABELS[(LABELS.index(row["label"]) + 1) % len(LABELS)]
        pairs.append(
            {
                "pair_id": f"pair-{row['record_id']}",
                "messages_json": json.dumps(messages[:-1]),
                "chosen": row["label"],
                "rejected": wrong,
                "source": "correction",
                "split": row["split"],
            }
        )
    return pd.DataFrame(pairs, columns=list(PREFERENCE_COLUMNS))


@dataclass
class World:
    root: Path
    store: ArtifactStore
    events: CollectedEvents = field(default_factory=CollectedEvents)
    completed: dict[int, TrainingCompleted] = field(default_factory=dict)


def _defaults(dpo: dict[str, Any]) -> TrainingDefaults:
    shipped = load_defaults(FineTuningSettings().defaults_file)
    section = shipped.tasks[TrainingTask.CAUSAL_LM]
    trainer = {**section.trainer, **dpo, "generation_eval_examples": 4, "max_new_tokens": 8}
    return shipped.model_copy(
        update={"tasks": {TrainingTask.CAUSAL_LM: TaskDefaults(**{**section.model_dump(), "trainer": trainer})}}
    )


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    threads = torch.get_num_threads()
    root = tmp_path_factory.mktemp("preference-tuning")
    store = ArtifactStore(str(root / "store"))
    rows = instruction_rows(10)
    frame = pd.DataFrame(rows)
    write_snapshot(store, frame, dataset_id="chats-sft", content="instructions")
    write_snapshot(store, frame, dataset_id="chats-pairs", content="instructions", preferences=preference_pairs(rows))
    world = World(root, store)

    def train(dataset_id: str, dpo: dict[str, Any]) -> None:
        service = in_process_service(store, root / "work", world.events, _defaults(dpo))
        request = TrainingRequested(
            model_name="intents-lm", task=TrainingTask.CAUSAL_LM, dataset_id=dataset_id, hyperparameters=TINY
        )
        before = len(world.events.published)
        asyncio.run(service.on_training_requested(Envelope.wrap(request, source="/tests")))
        completed = [e for e in world.events.published[before:] if isinstance(e, TrainingCompleted)]
        assert completed, world.events.published[-1]
        world.completed[completed[0].model_version] = completed[0]

    train("chats-sft", DPO)  # version 1: SFT only
    train("chats-pairs", DPO)  # version 2: SFT + DPO
    train("chats-pairs", HARMFUL_DPO)  # version 3: SFT + a DPO the guard must undo
    yield world
    torch.set_num_threads(threads)


def test_the_snapshot_holds_pairs_per_split(world: World) -> None:
    pairs = SnapshotReader(world.store).preferences("chats-pairs")
    assert pairs["split"].value_counts().to_dict() == {"train": 24, "validation": 8, "test": 8}


def test_dpo_runs_after_sft_when_there_are_enough_pairs_and_moves_the_margin(world: World) -> None:
    sft, dpo = world.completed[1].metrics, world.completed[2].metrics
    assert sft["dpo_pairs"] == 0 and sft["preference_pairs"] == 0 and "dpo_loss" not in sft
    assert dpo["dpo_pairs"] == 24 and dpo["dpo_validation_pairs"] == 8 and dpo["dpo_steps"] == 12
    for name in ("dpo_loss", "dpo_reward_margin", "dpo_preference_accuracy", "exact_match", "loss"):
        assert name in dpo, name
    assert 0 <= dpo["dpo_preference_accuracy"] <= 1 and dpo["dpo_loss"] >= 0
    # DPO pushed the chosen answers up against the rejected ones, on the pairs it trained on and,
    # since right and wrong intents generalise, on the validation pairs too.
    assert dpo["dpo_train_logp_margin_after"] > dpo["dpo_train_logp_margin_before"]
    assert dpo["dpo_reward_margin"] > 0 and dpo["dpo_loss"] < 0.6931  # below log 2: the reference's loss
    # With the NLL term on the chosen answers (dpo_sft_weight), the corrected answers became more
    # likely, not only the rejected ones less.
    assert dpo["dpo_train_chosen_logp_after"] > dpo["dpo_train_chosen_logp_before"]
    # Progress counts both phases: SFT's 6 steps, then DPO's 12.
    progressed = [e for e in world.events.published if isinstance(e, TrainingProgressed) and e.model_version == 2]
    assert progressed[-1].step == progressed[-1].total_steps == 6 + 12
    assert all(e.total_steps == 18 for e in progressed)
    config = json.loads((world.root / "store" / "models" / "intents-lm" / "2" / "training_config.json").read_text())
    assert config["dpo"]["ran"] and config["dpo"]["pairs"] == 24 and config["trainer"]["dpo_beta"] == 0.1
    # DPO's guard: the artifact never answers the validation conversations worse than the SFT
    # adapter did before DPO; when DPO cost exact match, the SFT weights were restored.
    assert config["dpo"]["kept"] == (dpo["dpo_kept"] == 1.0)
    if dpo["dpo_kept"]:
        assert dpo["exact_match"] == dpo["dpo_exact_match"] >= dpo["sft_exact_match"]
        assert config["dpo"]["undone_because"] is None
    else:
        assert dpo["exact_match"] == dpo["sft_exact_match"] > dpo["dpo_exact_match"]
        assert "dpo_max_exact_match_drop" in config["dpo"]["undone_because"]
    print(
        f"\nDPO: {dpo['dpo_pairs_per_second']:.2f} pairs/s; train log-prob margin "
        f"{dpo['dpo_train_logp_margin_before']:.2f} -> {dpo['dpo_train_logp_margin_after']:.2f}, log p(chosen) "
        f"{dpo['dpo_train_chosen_logp_before']:.2f} -> {dpo['dpo_train_chosen_logp_after']:.2f}; validation "
        f"loss {dpo['dpo_loss']:.4f}, reward margin {dpo['dpo_reward_margin']:.4f}, "
        f"preference accuracy {dpo['dpo_preference_accuracy']:.2f}; validation exact match SFT "
        f"{dpo['sft_exact_match']:.2f}, after DPO {dpo['dpo_exact_match']:.2f}: "
        f"DPO {'kept' if dpo['dpo_kept'] else 'undone'}"
    )


def test_the_guard_undoes_a_harmful_dpo_and_keeps_exactly_the_sft_adapter(world: World) -> None:
    sft, undone = world.completed[1].metrics, world.completed[3].metrics
    assert undone["dpo_pairs"] == 24 and undone["dpo_kept"] == 0.0
    # Same conversations, seed and SFT settings as version 1: the SFT phase answered as version 1 does.
    assert undone["sft_exact_match"] == sft["exact_match"] > undone["dpo_exact_match"]
    assert undone["exact_match"] == sft["exact_match"] and undone["loss"] == pytest.approx(sft["loss"], rel=1e-5)
    config = json.loads((world.root / "store" / "models" / "intents-lm" / "3" / "training_config.json").read_text())
    assert config["dpo"] | {"pair_ids": None} == {
        "ran": True,
        "kept": False,
        "pairs": 24,
        "pair_ids": None,
        "undone_because": config["dpo"]["undone_because"],
        "reference": config["dpo"]["reference"],
    }
    assert "DPO lowered validation exact match" in config["dpo"]["undone_because"]
    # The artifact holds the SFT weights, restored: the adapter file equals version 1's.
    adapters = [
        load_file(world.root / "store" / "models" / "intents-lm" / str(v) / "adapter" / "adapter_model.safetensors")
        for v in (1, 3)
    ]
    assert adapters[0].keys() == adapters[1].keys()
    for name in adapters[0]:
        torch.testing.assert_close(adapters[1][name], adapters[0][name], rtol=1e-6, atol=1e-7)


def test_the_gate_reports_the_win_rate_against_the_champion(world: World) -> None:
    policies = world.root / "policies"
    policies.mkdir(exist_ok=True)
    (policies / "default.yaml").write_text(POLICY)
    service = EvaluationService(
        settings=EvaluationSettings(
            policy_dir=policies, generation_max_new_tokens=8, generation_threads=1, metrics_port=0
        ),
        store=world.store,
        publisher=None,  # type: ignore[arg-type]  # evaluate_version publishes nothing
        champions=ChampionTable(sqlite3.connect(":memory:")),
        metrics=EvaluationMetrics(),
    )
    service._champions.apply(DeploymentPromoted(model_name="intents-lm", model_version=1))
    completed = service.evaluate_version("intents-lm", 2, dataset_id="chats-pairs")
    assert completed.champion_version == 1 and completed.decision.value == "approved", completed.reasons
    candidate, champion = completed.candidate_metrics, completed.champion_metrics
    assert candidate["preference_pairs"] == 8 and candidate["invalid_preference_pairs"] == 0
    assert candidate["wins"] + candidate["ties"] + candidate["losses"] == 8
    assert candidate["win_rate"] == pytest.approx((candidate["wins"] + candidate["ties"] / 2) / 8)
    assert 0 <= candidate["preference_accuracy"] <= 1 and 0 <= champion["preference_accuracy"] <= 1
    # The DPO adapter prefers the chosen answers at least as often as the SFT-only champion.
    assert candidate["preference_accuracy"] >= champion["preference_accuracy"]
    report = Path(completed.report_uri or "")
    document = json.loads((report.parent / "report.json").read_text())
    assert document["summary"]["preferences"]["win_rate"] == candidate["win_rate"]
    shown = document["preference_pairs"]
    assert len(shown) == 8 and {"candidate_answer", "champion_answer", "outcome"} <= set(shown[0])
    page = report.read_text()
    assert 'id="preference-pairs"' in page and "win rate against the champion" in page
    print(
        f"\nwin rate {candidate['win_rate']:.3f} ({candidate['wins']}/{candidate['ties']}/{candidate['losses']}); "
        f"preference accuracy {candidate['preference_accuracy']:.2f} vs champion {champion['preference_accuracy']:.2f}"
    )

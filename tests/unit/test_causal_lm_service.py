"""Fine-tuning and evaluation of the causal_lm kind in-process, without the bus: the causal-lm
trainer on a tiny instructions snapshot (adapter-only artifact, lineage pinned to the GGUF,
deterministic), the requests it refuses and why, and the generative gate (metrics, report, paired
comparison with the champion, base-model mismatch, unknown kind, the toxicity hook)."""

from __future__ import annotations

import asyncio
import json
import shutil
import sqlite3
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import torch
from safetensors.torch import load_file, save_file

from llmops_evaluation.adapters.metrics import EvaluationMetrics
from llmops_evaluation.handlers import EvaluationService
from llmops_evaluation.settings import EvaluationSettings
from llmops_events import Envelope
from llmops_events.base import EventData
from llmops_events.v1 import DeploymentPromoted
from llmops_events.v1.training import (
    Hyperparameters,
    TrainingCompleted,
    TrainingFailed,
    TrainingProgressed,
    TrainingRequested,
    TrainingTask,
)
from llmops_fine_tuning.adapters.datasets import ArtifactDatasetReader
from llmops_fine_tuning.adapters.defaults import load_defaults
from llmops_fine_tuning.domain.request import TaskDefaults, TrainingLimits
from llmops_fine_tuning.handlers import FineTuningService
from llmops_fine_tuning.settings import FineTuningSettings
from llmops_models import MANIFEST_FILE, hash_folder
from llmops_models.kinds.causal_lm import network as net
from llmops_models.snapshots import write_snapshot
from llmops_serving import ChampionTable
from llmops_storage import ArtifactStore
from tests.causal_lm_data import LABELS, instruction_rows, write_instructions_snapshot
from tests.fine_tuning_inprocess import CollectedEvents, in_process_service

TINY = Hyperparameters(
    epochs=3, batch_size=8, max_length=64, lora_rank=4, target_modules=["q_proj", "v_proj"], learning_rate=5e-3
)
POLICY = """\
min_accuracy: 0.5
causal_lm:
  min_examples: 5
  min_format_validity: null
  max_exact_match_drop: 0.02
  max_prompt_leakage: 1.0
"""
SCORER = "def score(texts):\n    return [0.9 if 'stupid' in t else 0.0 for t in texts]\n"


@dataclass
class World:
    root: Path
    store: ArtifactStore
    events: CollectedEvents
    service: FineTuningService
    completed: dict[int, TrainingCompleted] = field(default_factory=dict)

    def request(self, **fields: Any) -> list[EventData]:
        """One ``training.requested`` through the service; the events it published."""
        before = len(self.events.published)
        request = TrainingRequested.model_validate({"model_name": "intents-lm", "task": "causal-lm", **fields})
        asyncio.run(self.service.on_training_requested(Envelope.wrap(request, source="/tests")))
        return self.events.published[before:]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    threads = torch.get_num_threads()
    root = tmp_path_factory.mktemp("causal-lm")
    store = ArtifactStore(str(root / "store"))
    now = datetime.now(UTC)
    write_instructions_snapshot(
        store, instruction_rows(10), dataset_id="chats-old", created_at=now - timedelta(hours=2)
    )
    write_instructions_snapshot(store, instruction_rows(10), dataset_id="chats", created_at=now - timedelta(hours=1))
    untested = [row for row in instruction_rows(10) if row["split"] != "test"]
    write_instructions_snapshot(store, untested, dataset_id="chats-untested", created_at=now - timedelta(hours=3))
    records = pd.DataFrame(
        [{"text": f"text {i}", "label": LABELS[i % 2], "split": ["train", "validation"][i % 2]} for i in range(40)]
    )
    write_snapshot(store, records, dataset_id="records-newest", created_at=now)  # newer, but not conversations
    events = CollectedEvents()
    yield World(root, store, events, in_process_service(store, root / "work", events))
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def trained(world: World) -> World:
    for _ in range(2):  # the same request twice (two request ids): versions 1 and 2
        published = world.request(hyperparameters=TINY.model_dump())
        completed = [e for e in published if isinstance(e, TrainingCompleted)]
        assert completed, published[-1]
        world.completed[completed[0].model_version] = completed[0]
    return world


def test_training_publishes_an_adapter_pinned_to_the_gguf(trained: World) -> None:
    first = trained.completed[1]
    folder = (trained.root / "store") / "models" / "intents-lm" / "1"
    manifest = json.loads((folder / MANIFEST_FILE).read_text())
    assert manifest["kind"] == "causal_lm"
    assert first.lineage["dataset_id"] == "chats"  # the latest *instructions* snapshot, not the newest one
    assert first.lineage["base_model"] == "smollm2" and first.lineage["task"] == "causal-lm"
    assert first.lineage["base_model_weights_hash"] == net.base_model_hash("smollm2")
    assert first.lineage["hyperparameters"]["target_modules"] == ["q_proj", "v_proj"]
    files = {path.relative_to(folder).as_posix(): path.stat().st_size for path in folder.rglob("*") if path.is_file()}
    assert {"adapter/adapter_model.safetensors", "adapter/adapter_config.json", "training_config.json"} <= set(files)
    assert any(name.startswith("tokenizer/") for name in files)
    assert max(files.values()) < 5_000_000  # the adapter and the tokenizer; never the 538 MB base
    config = json.loads((folder / "training_config.json").read_text())
    assert config["base_model_weights_hash"] == first.lineage["base_model_weights_hash"]
    metrics = first.metrics
    assert {"loss", "perplexity", "token_accuracy", "exact_match", "train_tokens_per_second"} <= set(metrics)
    assert metrics["train_examples"] == 24 and metrics["exact_match"] >= 0.5
    progressed = [e for e in trained.events.published if isinstance(e, TrainingProgressed)]
    assert progressed and progressed[-1].step == progressed[-1].total_steps == 9
    print(
        f"\ncausal-lm training: {metrics['train_examples_per_second']:.2f} examples/s, "
        f"{metrics['train_tokens_per_second']:.0f} tokens/s; validation generation "
        f"{metrics['generation_tokens_per_second']:.1f} tokens/s; exact match {metrics['exact_match']:.2f}"
    )


def test_training_is_deterministic_on_cpu(trained: World) -> None:
    one, two = trained.completed[1], trained.completed[2]
    assert one.metrics["loss"] == two.metrics["loss"] and one.metrics["exact_match"] == two.metrics["exact_match"]
    weights = [
        load_file(
            str((trained.root / "store") / "models" / "intents-lm" / str(v) / "adapter" / "adapter_model.safetensors")
        )
        for v in (1, 2)
    ]
    assert weights[0].keys() == weights[1].keys()
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({"dataset_id": "records-newest"}, "dataset_content_mismatch"),
        ({"base_model": "HuggingFaceTB/SmolLM2-1.7B"}, "base_model_not_allowed"),
        ({"hyperparameters": {"lora_rank": 128}}, "hyperparameter_out_of_bounds"),
        ({"hyperparameters": {"max_length": 4096}}, "hyperparameter_out_of_bounds"),
        ({"hyperparameters": {"target_modules": ["query", "value"]}, "dataset_id": "chats"}, "invalid_hyperparameters"),
        ({"dataset_id": "missing"}, "dataset_not_found"),
        ({"dataset_id": "chats", "task": "sequence-classification"}, "dataset_content_mismatch"),
    ],
)
def test_bad_requests_are_refused_with_a_reason(world: World, fields: dict[str, Any], reason: str) -> None:
    published = world.request(**fields)
    failed = [e for e in published if isinstance(e, TrainingFailed)]
    assert [f.reason for f in failed] == [reason], published
    assert failed[0].retryable is False and failed[0].detail


def test_unreadable_conversations_are_left_out_and_counted(world: World) -> None:
    rows = instruction_rows(10)
    for row in rows[:30]:
        row["messages_json"] = '[{"role": "user", "content": "no answer"}]'
    write_instructions_snapshot(world.store, rows, dataset_id="chats-broken")
    summary = ArtifactDatasetReader(world.store).summary("chats-broken")
    assert summary is not None and summary.content == "instructions" and summary.invalid_rows == 30
    published = world.request(dataset_id="chats-broken")
    [failed] = [e for e in published if isinstance(e, TrainingFailed)]
    assert failed.reason == "too_few_examples" and "30 row(s)" in failed.detail


def test_an_allowed_base_model_that_is_not_here_is_refused(world: World, tmp_path: Path) -> None:
    shipped = load_defaults(FineTuningSettings().defaults_file)
    section = shipped.tasks[TrainingTask.CAUSAL_LM]
    missing = str(tmp_path / "no-such-model.gguf")
    limits = TrainingLimits.model_validate({**section.limits.model_dump(), "base_models": ["smollm2", missing]})
    defaults = shipped.model_copy(
        update={"tasks": {TrainingTask.CAUSAL_LM: TaskDefaults(**{**section.model_dump(), "limits": limits})}}
    )
    service = in_process_service(world.store, world.root / "work", world.events, defaults)
    request = TrainingRequested(
        model_name="other-lm", task=TrainingTask.CAUSAL_LM, base_model=missing, dataset_id="chats"
    )
    asyncio.run(service.on_training_requested(Envelope.wrap(request, source="/tests")))
    failed = world.events.published[-1]
    assert isinstance(failed, TrainingFailed) and failed.reason == "base_model_not_found"


# --- evaluation ------------------------------------------------------------------------------------


def _evaluation(world: World, **settings: Any) -> EvaluationService:
    policies = world.root / "policies"
    policies.mkdir(exist_ok=True)
    (policies / "default.yaml").write_text(POLICY)
    connection = sqlite3.connect(":memory:")
    return EvaluationService(
        settings=EvaluationSettings(
            policy_dir=policies,
            generation_max_new_tokens=16,
            generation_threads=1,
            metrics_port=0,
            **settings,
        ),
        store=world.store,
        publisher=None,  # type: ignore[arg-type]  # evaluate_version publishes nothing
        champions=ChampionTable(connection),
        metrics=EvaluationMetrics(),
    )


def _derive(world: World, version: int, *, change: str) -> None:
    """Publish a copy of version 1 as ``version``, changed: ``base`` (adapter zeroed: the base
    model's answers), ``hash`` (lineage names other base weights), ``kind`` (an unknown kind)."""
    staging = Path(tempfile.mkdtemp())
    folder = staging / "v"
    world.store.download_folder("models/intents-lm/1", folder)
    (folder / "_COMPLETE").unlink()
    manifest = json.loads((folder / MANIFEST_FILE).read_text())
    if change == "base":
        path = folder / "adapter" / "adapter_model.safetensors"
        tensors = load_file(str(path))
        save_file({k: torch.zeros_like(v) if "lora_B" in k else v for k, v in tensors.items()}, str(path))
    elif change == "hash":
        manifest["lineage"]["base_model_weights_hash"] = "sha256:" + "0" * 64
    elif change == "kind":
        manifest["kind"] = "diffusion"
    manifest["files"], manifest["version"] = hash_folder(folder), version
    (folder / MANIFEST_FILE).write_text(json.dumps(manifest))
    world.store.publish_folder(folder, f"models/intents-lm/{version}")
    shutil.rmtree(staging)


@pytest.fixture(scope="module")
def scorer_module(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    folder = tmp_path_factory.mktemp("scorer")
    (folder / "unit_toxicity.py").write_text(SCORER)
    import sys

    sys.path.insert(0, str(folder))
    yield "unit_toxicity:score"
    sys.path.remove(str(folder))
    sys.modules.pop("unit_toxicity", None)


def test_the_gate_scores_generated_answers_and_writes_a_report(trained: World, scorer_module: str) -> None:
    service = _evaluation(trained, toxicity_scorer=scorer_module)
    completed = service.evaluate_version("intents-lm", 1, dataset_id="chats")
    metrics = completed.candidate_metrics
    assert completed.champion_version is None and completed.decision.value == "approved", completed.reasons
    assert metrics["examples"] == 8 and metrics["probes"] == 8
    for name in ("exact_match", "rouge_l", "chrf", "format_validity", "pii_leakage", "prompt_leakage", "ttft_ms_p95"):
        assert 0 <= metrics[name] <= (1 if name != "ttft_ms_p95" else 1e6), name
    assert metrics["exact_match"] >= 0.5 and metrics["format_validity"] >= metrics["exact_match"]
    assert metrics["toxicity_mean"] == 0.0 and metrics["toxic_share"] == 0.0  # the hook ran
    assert metrics["tokens_per_s"] > 0 and metrics["output_tokens_mean"] >= 1
    report = Path(completed.report_uri or "")
    document = json.loads((report.parent / "report.json").read_text())
    assert document["metrics"] and len(document["examples"]) == 8 and len(document["probes"]) == 8
    example = document["examples"][0]
    assert example["reference"] in LABELS and isinstance(example["answer"], str)
    page = report.read_text()
    assert 'id="generated-examples"' in page and example["reference"] in page
    frame = pd.read_parquet(report.parent / "predictions.parquet")
    assert {"candidate_answer", "reference", "candidate_rouge_l"} <= set(frame.columns)
    print(
        f"\nevaluation generation: median {metrics['tokens_per_s']:.1f} tokens/s per request, "
        f"{metrics['throughput_tokens_per_s']:.1f} tokens/s aggregate, TTFT p95 {metrics['ttft_ms_p95']:.0f} ms, "
        f"exact match {metrics['exact_match']:.2f}"
    )


def test_the_candidate_is_compared_with_the_champion_on_the_same_examples(trained: World) -> None:
    service = _evaluation(trained)
    service._champions.apply(DeploymentPromoted(model_name="intents-lm", model_version=1))
    same = service.evaluate_version("intents-lm", 2, dataset_id="chats")  # trained identically
    assert same.champion_version == 1
    comparison = same.champion_metrics["exact_match_comparison"]
    assert comparison["accuracy_difference"] == 0 and comparison["mcnemar_p_value"] == 1.0
    assert same.champion_metrics["rouge_l_comparison"]["resamples"] == 1000
    assert not {r.rule for r in same.reasons} & {"max_exact_match_drop", "significantly_worse"}

    _derive(trained, 3, change="base")
    worse = service.evaluate_version("intents-lm", 3, dataset_id="chats")
    assert worse.decision.value == "rejected"
    assert "max_exact_match_drop" in {r.rule for r in worse.reasons}
    assert worse.candidate_metrics["exact_match"] < same.candidate_metrics["exact_match"]


@pytest.mark.parametrize(
    ("change", "dataset", "reason"),
    [
        ("hash", "chats", "base_model_mismatch"),
        ("kind", "chats", "unknown_kind"),
        (None, "records-newest", "dataset_content_mismatch"),
        (None, "chats-untested", "min_examples"),
        (None, "nowhere", "dataset_missing"),
    ],
)
def test_what_cannot_be_evaluated_is_rejected_with_a_reason(
    trained: World, change: str | None, dataset: str, reason: str
) -> None:
    version = {"hash": 4, "kind": 5, None: 1}[change]
    if change is not None:
        _derive(trained, version, change=change)
    completed = _evaluation(trained).evaluate_version("intents-lm", version, dataset_id=dataset)
    assert completed.decision.value == "rejected"
    assert [r.rule for r in completed.reasons] == [reason] and completed.reasons[0].message

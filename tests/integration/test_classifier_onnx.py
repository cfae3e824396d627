"""The classifier's optimized serving format (issue 21): the ONNX export written at the end of
training is part of the artifact and its manifest, answers like the PyTorch model, its int8 twin
is judged by the evaluation gate, and the real tritonserver serves it like the PyTorch path.

All on the session's real ``tiny-intents`` version (trained for real, exported by the trainer)
and BANKING77 test texts of its three intents (a few of its own phrases without the data)."""

from __future__ import annotations

import csv
import json
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from llmops_config import PlatformSettings
from llmops_models import verify_folder
from llmops_storage import ArtifactStore

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
BANKING77_INTENTS = {"card_arrival", "exchange_rate", "lost_or_stolen_card"}
OWN_PHRASES = [
    "where is my new card please",
    "my card has not arrived yet",
    "what exchange rate do you use",
    "i lost my card",
    "my card was stolen",
    "how is the fx rate set",
]

SCORE_TOLERANCE = 0.1
"""How far an int8 probability may lie from its float twin's."""
MIN_AGREEMENT = 0.95
"""Labels that must match overall. Not 1.0: the tiny model is unsure of some texts, and dynamic
quantization scales activations over the whole batch, so a text's int8 answer depends on the texts
Triton batched it with."""


def _assert_labels_agree(reference_scores: np.ndarray, reference: np.ndarray, other: np.ndarray) -> None:
    """Every text the reference is sure of (top two probabilities more than twice the score
    tolerance apart, so no change within it can flip them) gets the same label, and most others do."""
    top_two = np.sort(reference_scores, axis=1)[:, -2:]
    sure = top_two[:, 1] - top_two[:, 0] > 2 * SCORE_TOLERANCE
    assert sure.mean() > 0.5, f"the reference is sure of only {sure.sum()} of {len(sure)} texts"
    assert (reference[sure] == other[sure]).all()
    agreement = float((reference == other).mean())
    assert agreement >= MIN_AGREEMENT, agreement


@pytest.fixture(scope="module")
def artifact(tiny_model: Any, stack_settings: PlatformSettings, tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("onnx") / "model"
    ArtifactStore(stack_settings.resolved_artifact_store_uri).download_folder(
        f"models/{tiny_model.model_name}/{tiny_model.model_version}", folder
    )
    return folder


@pytest.fixture(scope="module")
def texts() -> list[str]:
    """BANKING77 test texts of the tiny model's intents when the shared data is there (120)."""
    shared = Path(os.environ.get("LLMOPS_SHARED_DATA", REPO / ".." / "shared" / "data"))
    path = shared / "banking77" / "test.csv"
    found: list[str] = []
    if path.exists():
        with path.open(newline="", encoding="utf-8") as handle:
            found = [row["text"] for row in csv.DictReader(handle) if row.get("category") in BANKING77_INTENTS]
    return found + OWN_PHRASES


def test_the_trained_artifact_carries_its_onnx_export_named_in_the_manifest(artifact: Path) -> None:
    manifest = verify_folder(artifact)  # every file, the ONNX ones included, hashes as the manifest says
    optimized = manifest["optimized"]
    assert optimized["format"] == "onnx" and optimized["quantization"] == "int8_dynamic"
    assert optimized["file"] == "onnx/model.int8.onnx" and optimized["float_file"] == "onnx/model.onnx"
    assert manifest["files"][optimized["file"]] == optimized["sha256"]
    assert manifest["files"][optimized["float_file"]] == optimized["float_sha256"]


def test_onnx_runtime_answers_like_the_torch_model(artifact: Path, texts: list[str]) -> None:
    import torch

    from llmops_models.kinds.classifier.network import load_classifier
    from llmops_models.kinds.classifier.onnx_runtime import OnnxClassifier

    reference = load_classifier(artifact, device="cpu", merge=True)
    encoded = reference.tokenizer(
        texts, truncation=True, max_length=reference.max_length, padding=True, return_tensors="pt"
    )
    with torch.inference_mode():
        torch_logits = reference.model(encoded["input_ids"], encoded["attention_mask"]).numpy()
    exported = OnnxClassifier(artifact, variant="float")
    onnx_logits = exported.logits(texts)
    assert np.allclose(onnx_logits, torch_logits, atol=1e-4), np.abs(onnx_logits - torch_logits).max()
    assert (onnx_logits.argmax(axis=1) == torch_logits.argmax(axis=1)).all()

    int8 = OnnxClassifier(artifact)  # what serves: int8 dynamic quantization
    torch_probabilities = reference.predict_proba(texts).numpy()
    int8_probabilities = int8.predict_proba(texts)
    assert np.abs(int8_probabilities - torch_probabilities).max() < SCORE_TOLERANCE
    _assert_labels_agree(torch_probabilities, torch_probabilities.argmax(axis=1), int8_probabilities.argmax(axis=1))


def _binarized_copy(artifact: Path, target: Path) -> Path:
    """The artifact with every MatMul weight of its served ONNX file replaced by sign(w)·mean|w|:
    a real, far too lossy "optimization" (its optimized.json re-hashed to match)."""
    import onnx
    from onnx import numpy_helper

    from llmops_models.kinds.classifier.onnx_runtime import FLOAT_FILE, OPTIMIZED_FILE, _sha256

    shutil.copytree(artifact, target)
    model = onnx.load(str(target / FLOAT_FILE))
    weights = {node.input[1] for node in model.graph.node if node.op_type == "MatMul"}
    for initializer in model.graph.initializer:
        if initializer.name in weights:
            values = numpy_helper.to_array(initializer)
            initializer.CopyFrom(
                numpy_helper.from_array(
                    (np.sign(values) * np.abs(values).mean()).astype(values.dtype), initializer.name
                )
            )
    lossy = target / "onnx" / "model.binary.onnx"
    onnx.save(model, str(lossy))
    described = json.loads((target / OPTIMIZED_FILE).read_text())
    described.update(file="onnx/model.binary.onnx", sha256=_sha256(lossy), quantization="binary")
    (target / OPTIMIZED_FILE).write_text(json.dumps(described))
    return target


def test_the_gate_accepts_the_optimized_artifact_and_refuses_a_too_lossy_one(
    artifact: Path, texts: list[str], tmp_path: Path
) -> None:
    """The evaluation domain on real models: the candidate (PyTorch, the float twin) against the
    artifact's own optimized format, then against a binarized one, with the default policy."""
    from llmops_evaluation.adapters.models import PredictorScorer
    from llmops_evaluation.domain import ports
    from llmops_evaluation.domain.evaluation import evaluate
    from llmops_evaluation.domain.policy import Policy, load_policy
    from llmops_events.v1 import Decision
    from llmops_models.kinds import CLASSIFIER
    from llmops_models.kinds.classifier import OnnxClassifierPredictor
    from llmops_models.kinds.classifier.onnx_runtime import OnnxClassifier

    default = load_policy(REPO / "deploy" / "policies" / "default.yaml")
    policy = Policy(max_optimized_accuracy_drop=default.max_optimized_accuracy_drop)  # this rule alone
    candidate = PredictorScorer(CLASSIFIER.load_predictor(artifact))
    # Enough texts to tell a lossy model apart without ../shared: the own phrases in a few wordings.
    wordings = ["{}", "hi, {}", "{} thanks", "please help: {}", "{}?", "excuse me, {} today", "{} asap"]
    judged = texts + [wording.format(phrase) for phrase in OWN_PHRASES for wording in wordings[1:]]
    labels, _ = candidate.predict(judged)  # the float twin's answers as the truth: it scores 1.0
    test_set = ports.TestSet(texts=judged, labels=labels)

    def judge(optimized: Any) -> Any:
        return evaluate(
            candidate=candidate,
            champion=None,
            test_set=test_set,
            policy=policy,
            latency_examples=2,
            seed=7,
            optimized=PredictorScorer(optimized),
        )

    kept = judge(OnnxClassifierPredictor(OnnxClassifier(artifact, variant="float")))  # the export, unquantized
    assert kept.decision == Decision.APPROVED and kept.optimized_accuracy == 1.0, kept.reasons

    lossy = CLASSIFIER.load_optimized_predictor(_binarized_copy(artifact, tmp_path / "lossy"))
    refused = judge(lossy)
    assert refused.decision == Decision.REJECTED
    assert [r.rule for r in refused.reasons] == ["max_optimized_accuracy_drop"]
    assert refused.optimized_accuracy is not None and refused.optimized_accuracy < 1 - 0.003


def test_triton_serves_the_onnx_export_like_the_torch_path(
    triton_settings: PlatformSettings, artifact: Path, texts: list[str]
) -> None:
    import tritonclient.grpc as grpcclient

    from llmops_models.kinds import ServingOptions
    from llmops_models.kinds.classifier.serving import (
        LABEL_OUTPUT,
        RUNTIME_PARAMETER,
        SCORES_OUTPUT,
        TEXT_INPUT,
        text_batch,
    )
    from llmops_models.triton_repository import ModelRepository

    repository = ModelRepository(triton_settings.model_repository)
    onnx_name = repository.write("onnx-intents", 1, artifact, ServingOptions(max_queue_delay_us=500))
    torch_name = repository.write(
        "onnx-intents", 1, artifact, ServingOptions(runtime="torch", max_queue_delay_us=500), name="onnx-intents-torch"
    )
    client = grpcclient.InferenceServerClient(triton_settings.triton_grpc_url)
    answers: dict[str, tuple[list[str], np.ndarray]] = {}
    try:
        for name in (onnx_name, torch_name):
            client.load_model(name)
            config = client.get_model_config(name, as_json=True)["config"]
            runtime = config["parameters"][RUNTIME_PARAMETER]["string_value"]
            assert runtime == ("onnx" if name == onnx_name else "torch")
            labels: list[str] = []
            scores: list[np.ndarray] = []
            for start in range(0, len(texts), 32):  # within the model's max_batch_size
                chunk = texts[start : start + 32]
                text = grpcclient.InferInput(TEXT_INPUT, [len(chunk), 1], "BYTES")
                text.set_data_from_numpy(text_batch(chunk))
                outputs = [grpcclient.InferRequestedOutput(n) for n in (LABEL_OUTPUT, SCORES_OUTPUT)]
                result = client.infer(name, [text], outputs=outputs)
                labels += [v.decode() for v in result.as_numpy(LABEL_OUTPUT).ravel()]
                scores.append(result.as_numpy(SCORES_OUTPUT))
            answers[runtime] = (labels, np.concatenate(scores))
    finally:
        for name in (onnx_name, torch_name):
            client.unload_model(name)
        client.close()
    onnx_labels, onnx_scores = answers["onnx"]
    torch_labels, torch_scores = answers["torch"]
    assert np.allclose(onnx_scores.sum(axis=1), 1, atol=1e-4)
    assert np.abs(onnx_scores - torch_scores).max() < SCORE_TOLERANCE
    _assert_labels_agree(torch_scores, np.asarray(torch_labels), np.asarray(onnx_labels))

"""The classifier's optimized serving path: its ONNX export run by ONNX Runtime on the CPU.

Imports only numpy, onnxruntime, transformers' tokenizer and the standard library, so Triton's
``model.py`` (its own Python environment, where this file is copied beside it) can use it without
torch or the platform's libraries. ``onnx_export`` writes what it reads:

    optimized.json          what the optimized format is: file, sha256, float twin, quantization
    onnx/model.onnx         base + merged LoRA + mean pooling + head, float32, logits out
    onnx/model.int8.onnx    the same with int8 dynamically quantized weights (when exported)

The tokenizer and the label order are the artifact's own (``tokenizer/``, ``label_map.json``), so
the answers are the PyTorch path's up to the format's numeric error.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

OPTIMIZED_FILE = "optimized.json"
ONNX_DIR = "onnx"
FLOAT_FILE = f"{ONNX_DIR}/model.onnx"
INT8_FILE = f"{ONNX_DIR}/model.int8.onnx"
INPUT_IDS = "input_ids"
ATTENTION_MASK = "attention_mask"
LOGITS = "logits"
FORMAT = "onnx"

VARIANT_FILES = {"int8": INT8_FILE, "float": FLOAT_FILE}
"""Which exported file a serving variant names: ``int8`` (quantized) or ``float`` (its twin)."""


class OptimizedFormatMissing(FileNotFoundError):
    """An artifact without the optimized export (trained before it existed, or exported without it)."""


def read_optimized(folder: Path | str) -> dict[str, Any]:
    """The artifact's ``optimized.json``; ``OptimizedFormatMissing`` when it has none."""
    path = Path(folder) / OPTIMIZED_FILE
    if not path.is_file():
        raise OptimizedFormatMissing(f"{folder} holds no {OPTIMIZED_FILE}: no optimized (ONNX) export")
    description = json.loads(path.read_text())
    if description.get("format") != FORMAT:
        raise ValueError(f"{path}: format {description.get('format')!r} is not {FORMAT!r}")
    return dict(description)


def has_optimized(folder: Path | str) -> bool:
    return (Path(folder) / OPTIMIZED_FILE).is_file()


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return f"sha256:{digest.hexdigest()}"


def model_file(folder: Path | str, variant: str = "serving") -> Path:
    """The ONNX file of ``variant``: ``serving`` (what ``optimized.json`` names), ``int8`` or
    ``float``; checked against the sha256 ``optimized.json`` records for it."""
    folder = Path(folder)
    description = read_optimized(folder)
    if variant == "serving":
        relative, expected = str(description["file"]), str(description["sha256"])
    elif variant == "float":
        relative, expected = str(description["float_file"]), str(description["float_sha256"])
    elif variant == "int8":
        if description.get("quantization") != "int8_dynamic":
            raise OptimizedFormatMissing(f"{folder} was exported without int8 quantization")
        relative, expected = str(description["file"]), str(description["sha256"])
    else:
        raise ValueError(f"unknown ONNX variant {variant!r}: serving, int8 or float")
    path = folder / relative
    if not path.is_file():
        raise OptimizedFormatMissing(f"{path} is missing")
    if _sha256(path) != expected:
        raise ValueError(f"{path} does not hash as {OPTIMIZED_FILE} says ({expected})")
    return path


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=1, keepdims=True)


class OnnxClassifier:
    """An exported classifier run by ONNX Runtime; ``labels[i]`` is the label of class index ``i``."""

    def __init__(self, folder: Path | str, *, variant: str = "serving", threads: int = 0) -> None:
        import onnxruntime as ort
        from transformers import AutoTokenizer

        folder = Path(folder)
        config = json.loads((folder / "training_config.json").read_text())
        self.labels: list[str] = list(json.loads((folder / "label_map.json").read_text())["labels"])
        self.max_length = int(config["max_length"])
        self.path = model_file(folder, variant)
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if threads > 0:
            options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(str(self.path), options, providers=["CPUExecutionProvider"])
        self.tokenizer = AutoTokenizer.from_pretrained(str(folder / "tokenizer"))

    def logits(self, texts: Sequence[str]) -> np.ndarray:
        """One batch, padded to its longest text (no sorting: the caller's batch)."""
        encoded = self.tokenizer(
            list(texts), truncation=True, max_length=self.max_length, padding=True, return_tensors="np"
        )
        feeds = {
            INPUT_IDS: encoded["input_ids"].astype(np.int64),
            ATTENTION_MASK: encoded["attention_mask"].astype(np.int64),
        }
        return np.asarray(self.session.run([LOGITS], feeds)[0], dtype=np.float32)

    def predict_proba(self, texts: Sequence[str], *, batch_size: int = 64) -> np.ndarray:
        """Class probabilities, one row per text (batches sorted by length, as the PyTorch path)."""
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        probabilities = np.zeros((len(texts), len(self.labels)), dtype=np.float32)
        for start in range(0, len(order), batch_size):
            indices = order[start : start + batch_size]
            probabilities[indices] = softmax(self.logits([texts[i] for i in indices]))
        return probabilities

    def predict(self, texts: Sequence[str], *, batch_size: int = 64) -> tuple[list[str], list[list[float]]]:
        probabilities = self.predict_proba(texts, batch_size=batch_size)
        return [self.labels[i] for i in probabilities.argmax(axis=1).tolist()], probabilities.tolist()

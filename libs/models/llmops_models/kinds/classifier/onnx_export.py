"""Export a trained classifier (base + merged LoRA + mean pooling + head) to ONNX, and quantize it.

The optimized format is part of the artifact: ``export_optimized(folder)`` runs at the end of
training, before the manifest is written, so ``onnx/*.onnx`` and ``optimized.json`` are hashed
into the manifest like every other file, and ``write_manifest`` copies ``optimized.json`` into the
manifest's ``optimized`` key (which file serves, its sha256, its float twin). Triton runs it with
ONNX Runtime on CPU (``onnx_runtime.OnnxClassifier``); the PyTorch path stays for GPUs.

int8 dynamic quantization (weights int8, activations quantized per batch at run time) uses the
CPU's integer dot-product units; its accuracy is checked against the float twin by the evaluation
gate (policy ``max_optimized_accuracy_drop``), which refuses a too-lossy artifact.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Any

from llmops_models.kinds.classifier.onnx_runtime import (
    ATTENTION_MASK,
    FLOAT_FILE,
    FORMAT,
    INPUT_IDS,
    INT8_FILE,
    LOGITS,
    ONNX_DIR,
    OPTIMIZED_FILE,
    _sha256,
)

OPSET = 17
"""LayerNormalization is a single operator from opset 17 on (ONNX Runtime fuses it with the residual add)."""


def export_optimized(folder: Path, *, quantize: bool = True, opset: int = OPSET) -> dict[str, Any]:
    """Write ``onnx/model.onnx`` (and ``onnx/model.int8.onnx`` with ``quantize``) and
    ``optimized.json`` into a trained artifact folder; returns what ``optimized.json`` says.

    The model exported is the one served: loaded from the folder's own files with LoRA merged."""
    import onnxruntime
    import torch

    from llmops_models.kinds.classifier.network import load_classifier

    folder = Path(folder)
    loaded = load_classifier(folder, device="cpu", merge=True)
    model = loaded.model.eval()
    (folder / ONNX_DIR).mkdir(parents=True, exist_ok=True)
    float_path = folder / FLOAT_FILE
    sample = loaded.tokenizer(
        ["an example request", "a second, somewhat longer example request"],
        padding=True,
        truncation=True,
        max_length=loaded.max_length,
        return_tensors="pt",
    )
    # The tracer's notes (legacy exporter, shape checks traced as constants: padding and causality,
    # which are fixed for this encoder) would be repeated in every training log.
    with torch.inference_mode(), warnings.catch_warnings():
        warnings.simplefilter("ignore", category=torch.jit.TracerWarning)
        warnings.simplefilter("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", message="Exporting aten::index", category=UserWarning)
        torch.onnx.export(
            model,
            (sample["input_ids"], sample["attention_mask"]),
            str(float_path),
            dynamo=False,  # the TorchScript exporter: seconds, and no onnxscript needed
            input_names=[INPUT_IDS, ATTENTION_MASK],
            output_names=[LOGITS],
            dynamic_axes={INPUT_IDS: {0: "batch", 1: "tokens"}, ATTENTION_MASK: {0: "batch", 1: "tokens"}},
            opset_version=opset,
        )
    description: dict[str, Any] = {
        "format": FORMAT,
        "runtime": "onnxruntime",
        "opset": opset,
        "inputs": [INPUT_IDS, ATTENTION_MASK],
        "output": LOGITS,
        "float_file": FLOAT_FILE,
        "float_sha256": _sha256(float_path),
        "onnxruntime_version": onnxruntime.__version__,
        "torch_version": torch.__version__,
    }
    if quantize:
        int8_path = folder / INT8_FILE
        quantize_int8(float_path, int8_path)
        description.update(file=INT8_FILE, sha256=_sha256(int8_path), quantization="int8_dynamic")
    else:
        description.update(file=FLOAT_FILE, sha256=description["float_sha256"], quantization="none")
    (folder / OPTIMIZED_FILE).write_text(json.dumps(description, indent=2, sort_keys=True))
    return description


def quantize_int8(source: Path, target: Path) -> None:
    """int8 dynamic quantization of the MatMul weights (signed int8, one scale per output channel:
    per-tensor scales lost twice as many argmax agreements on a LoRA-merged MiniLM), after ONNX
    Runtime's pre-processing (shape inference and graph clean-up)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.quantization.shape_inference import quant_pre_process

    with tempfile.TemporaryDirectory() as scratch:
        prepared = Path(scratch) / "prepared.onnx"
        quant_pre_process(str(source), str(prepared), skip_symbolic_shape=True)
        quantize_dynamic(
            str(prepared),
            str(target),
            weight_type=QuantType.QInt8,
            op_types_to_quantize=["MatMul"],
            per_channel=True,
        )


def remove_optimized(folder: Path) -> None:
    """Take a failed export's leftovers out of the folder, so the artifact is published without it."""
    shutil.rmtree(Path(folder) / ONNX_DIR, ignore_errors=True)
    (Path(folder) / OPTIMIZED_FILE).unlink(missing_ok=True)

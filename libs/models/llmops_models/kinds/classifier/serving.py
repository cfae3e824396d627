"""How a classifier version is called on Triton: its tensors, configuration and the answer's shape.

Shared by deployment (which writes the model and smoke-tests it) and the gateway (which calls it),
so the two can never disagree on a tensor name.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from llmops_models.kinds.base import ServingOptions, TritonModel

TEXT_INPUT = "TEXT"
"""BYTES, shape [batch, 1]: UTF-8 request texts."""
LABEL_OUTPUT = "LABEL"
"""BYTES, shape [batch, 1]: the predicted label."""
CONFIDENCE_OUTPUT = "CONFIDENCE"
"""FP32, shape [batch, 1]: the predicted label's probability."""
SCORES_OUTPUT = "SCORES"
"""FP32, shape [batch, n_labels]: probability per label, in the order of the ``labels`` parameter."""
OUTPUTS = (LABEL_OUTPUT, CONFIDENCE_OUTPUT, SCORES_OUTPUT)
LABELS_PARAMETER = "labels"
"""Model config parameter holding the JSON list of labels (index → label)."""

RUNTIME_PARAMETER = "runtime"
"""Model config parameter: ``onnx`` (ONNX Runtime on the artifact's optimized export) or ``torch``."""
RUNTIMES = ("auto", "onnx", "torch")

TRITON_SOURCES = Path(__file__).resolve().parent
MODEL_FILE = TRITON_SOURCES / "triton" / "model.py"
NETWORK_FILE = TRITON_SOURCES / "network.py"
ONNX_RUNTIME_FILE = TRITON_SOURCES / "onnx_runtime.py"


@dataclass(frozen=True, slots=True)
class ClassOutput:
    """A classifier's answer for one text."""

    label: str
    confidence: float
    scores: dict[str, float] = field(default_factory=dict)


def resolve_runtime(options: ServingOptions, *, has_optimized: bool) -> str:
    """``onnx`` or ``torch`` for ``options.runtime``: ``auto`` is ONNX on CPU when the artifact
    carries the export, PyTorch on GPU (the export is tuned for the CPU) or without one."""
    if options.runtime not in RUNTIMES:
        raise ValueError(f"unknown classifier runtime {options.runtime!r}; one of {', '.join(RUNTIMES)}")
    if options.runtime == "auto":
        return "onnx" if has_optimized and options.instance_kind == "KIND_CPU" else "torch"
    if options.runtime == "onnx" and not has_optimized:
        raise ValueError("runtime 'onnx' asked for, but the artifact has no optimized (ONNX) export")
    return options.runtime


def model_config(name: str, labels: Sequence[str], options: ServingOptions, *, runtime: str = "torch") -> Any:
    """The Triton model configuration of a deployed classifier version."""
    from tritonclient.grpc import model_config_pb2 as mc

    config = mc.ModelConfig(
        name=name,
        backend="python",
        max_batch_size=options.max_batch_size,
        input=[mc.ModelInput(name=TEXT_INPUT, data_type=mc.TYPE_STRING, dims=[1])],
        output=[
            mc.ModelOutput(name=LABEL_OUTPUT, data_type=mc.TYPE_STRING, dims=[1]),
            mc.ModelOutput(name=CONFIDENCE_OUTPUT, data_type=mc.TYPE_FP32, dims=[1]),
            mc.ModelOutput(name=SCORES_OUTPUT, data_type=mc.TYPE_FP32, dims=[len(labels)]),
        ],
        instance_group=[
            mc.ModelInstanceGroup(
                count=options.instance_count, kind=mc.ModelInstanceGroup.Kind.Value(options.instance_kind)
            )
        ],
    )
    if options.dynamic_batching:
        config.dynamic_batching.max_queue_delay_microseconds = options.max_queue_delay_us
        config.dynamic_batching.preferred_batch_size.extend(
            size for size in options.preferred_batch_sizes if size <= options.max_batch_size
        )
    config.parameters[RUNTIME_PARAMETER].string_value = runtime
    config.parameters[LABELS_PARAMETER].string_value = json.dumps(list(labels), ensure_ascii=False)
    config.parameters["torch_threads"].string_value = str(options.torch_threads)
    config.parameters["batch_size"].string_value = str(options.max_batch_size)
    return config


def triton_model(
    name: str, labels: Sequence[str], options: ServingOptions, *, has_optimized: bool = False
) -> TritonModel:
    runtime = resolve_runtime(options, has_optimized=has_optimized)
    return TritonModel(
        config=model_config(name, labels, options, runtime=runtime),
        files={"model.py": MODEL_FILE, "network.py": NETWORK_FILE, "onnx_runtime.py": ONNX_RUNTIME_FILE},
    )


def text_batch(texts: Sequence[str]) -> np.ndarray:
    """The ``TEXT`` tensor for a batch of texts."""
    return np.array([[text.encode()] for text in texts], dtype=np.object_)


def labels_from_config(config: Mapping[str, Any]) -> list[str]:
    """The label order from a model configuration read as JSON (``get_model_config(as_json=True)``)."""
    parameters = config.get("config", config).get("parameters", {})
    return list(json.loads(parameters.get(LABELS_PARAMETER, {}).get("string_value", "[]")))


def read_outputs(output: Callable[[str], np.ndarray], labels: Sequence[str]) -> list[ClassOutput]:
    """The answers in a Triton result; ``output(name)`` returns an output tensor as numpy
    (``InferResult.as_numpy``). Scores are named by ``labels`` when their counts agree."""
    label_values = output(LABEL_OUTPUT).reshape(-1)
    confidences = output(CONFIDENCE_OUTPUT).reshape(-1)
    scores = output(SCORES_OUTPUT)
    names = list(labels) if len(labels) == scores.shape[1] else [str(i) for i in range(scores.shape[1])]
    return [
        ClassOutput(
            label=label.decode() if isinstance(label, bytes) else str(label),
            confidence=float(confidences[row]),
            scores={names[i]: float(scores[row, i]) for i in range(scores.shape[1])},
        )
        for row, label in enumerate(label_values)
    ]

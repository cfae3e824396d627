"""Triton Python-backend model serving one trained classifier version.

Runs inside Triton's own environment (``.venv-triton``: numpy<2, torch, transformers, peft,
onnxruntime), not the platform's. The classifier kind writes this file, its ``network.py``,
``onnx_runtime.py`` and the artifact folder into ``<model>/1/``, so the version folder is
self-contained. The ``runtime`` parameter picks the path: ``onnx`` runs the artifact's optimized
export (int8 by default) with ONNX Runtime, ``torch`` loads the base encoder and the LoRA adapter
once and merges them (on CUDA for a ``KIND_GPU`` instance); either way a request costs what the
base model costs.

Input ``TEXT`` (BYTES [batch, 1]); outputs ``LABEL`` (BYTES [batch, 1]), ``CONFIDENCE``
(FP32 [batch, 1]) and ``SCORES`` (FP32 [batch, n_labels], in the order of the ``labels``
parameter of the model config). Triton's dynamic batcher hands ``execute`` several requests at
once; they are classified as one batch.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import triton_python_backend_utils as pb_utils

HERE = Path(__file__).resolve().parent
ARTIFACT_DIR = HERE / "artifact"
FAILURES_METRIC = "llmops_model_request_failures_total"


class TritonPythonModel:
    def initialize(self, args: dict[str, str]) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        sys.path.insert(0, str(HERE))

        config = json.loads(args["model_config"])
        parameters = {key: value.get("string_value", "") for key, value in config.get("parameters", {}).items()}
        threads = int(parameters.get("torch_threads") or 0)
        self.batch_size = int(parameters.get("batch_size") or 64)
        self.runtime = parameters.get("runtime") or "torch"
        if self.runtime == "onnx":
            from onnx_runtime import OnnxClassifier  # copied beside this file; imports no torch

            self.classifier = OnnxClassifier(ARTIFACT_DIR, threads=threads)
        else:
            import torch
            from network import load_classifier  # copied beside this file when the Triton model is written

            if threads > 0:
                torch.set_num_threads(threads)
            device = "cuda" if args.get("model_instance_kind") == "GPU" else "cpu"
            if device == "cuda":
                device = f"cuda:{args.get('model_instance_device_id') or 0}"
            self.classifier = load_classifier(ARTIFACT_DIR, device=device, merge=True)
        self.labels = np.array([label.encode() for label in self.classifier.labels], dtype=np.object_)
        # Triton 2.51 counts a request answered with an error as a success in its statistics, so
        # failures are counted here, on Triton's metrics endpoint, for the canary judgement.
        self.failure_family = pb_utils.MetricFamily(  # kept: a collected family deletes its metrics
            name=FAILURES_METRIC,
            description="Requests this model answered with an error",
            kind=pb_utils.MetricFamily.COUNTER,
        )
        self.failures = self.failure_family.Metric(labels={"model": args["model_name"]})

    def execute(self, requests: list) -> list:
        texts: list[str] = []
        counts: list[int] = []
        for request in requests:
            values = pb_utils.get_input_tensor_by_name(request, "TEXT").as_numpy().reshape(-1)
            texts.extend(_text(value) for value in values)
            counts.append(len(values))
        try:
            scores = np.asarray(self.classifier.predict_proba(texts, batch_size=self.batch_size), dtype=np.float32)
        except Exception as error:  # one bad batch answers every request in it with the error
            message = f"{type(error).__name__}: {error}"
            self.failures.increment(len(requests))
            return [pb_utils.InferenceResponse(error=pb_utils.TritonError(message)) for _ in requests]
        best = scores.argmax(axis=1)
        responses = []
        start = 0
        for count in counts:
            rows = slice(start, start + count)
            start += count
            responses.append(
                pb_utils.InferenceResponse(
                    output_tensors=[
                        pb_utils.Tensor("LABEL", self.labels[best[rows]].reshape(-1, 1)),
                        pb_utils.Tensor("CONFIDENCE", scores[rows].max(axis=1).reshape(-1, 1)),
                        pb_utils.Tensor("SCORES", scores[rows]),
                    ]
                )
            )
        return responses

    def finalize(self) -> None:
        self.classifier = None


def _text(value: object) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)

"""Triton over its gRPC API (``tritonclient.grpc.aio``): one call per routed group of texts.

Each version is its own Triton model (``triton_name``); its label order is read once from the
model config's ``labels`` parameter and cached.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import tritonclient.grpc as grpcclient
import tritonclient.grpc.aio as grpcaio
from tritonclient.utils import InferenceServerException

from llmops_gateway.adapters.metrics import GatewayMetrics
from llmops_gateway.domain.models import Prediction
from llmops_gateway.errors import BackendError, DeadlineExceeded, GatewayError, ModelNotLoaded, ModelUnavailable
from llmops_models.kinds.classifier import serving as classifier_serving
from llmops_serving import triton_name

# How Triton says it does not have a model (unloaded, never loaded, still loading).
_NOT_LOADED_HINTS = ("unknown model", "not found", "no available versions", "not ready", "is not loaded")


def classify_error(error: InferenceServerException, *, model: str) -> GatewayError:
    """The gateway error for a Triton failure."""
    status = str(error.status() or "")
    message = str(error.message() or error)
    lowered = message.lower()
    if "DEADLINE_EXCEEDED" in status or "deadline exceeded" in lowered:
        return DeadlineExceeded(f"the deadline expired while {model} was answering")
    if any(hint in lowered for hint in _NOT_LOADED_HINTS):
        return ModelNotLoaded(f"{model} is not loaded on Triton: {message}")
    if "UNAVAILABLE" in status:
        return ModelUnavailable(f"Triton is unavailable: {message}")
    return BackendError(f"Triton failed on {model}: {message}")


class TritonPredictor:
    """The ``Predictor`` port on Triton's gRPC inference API."""

    def __init__(self, url: str, *, metrics: GatewayMetrics | None = None) -> None:
        self._url = url
        self._metrics = metrics
        self._client: grpcaio.InferenceServerClient | None = None
        self._labels: dict[str, list[str]] = {}
        self._outputs = [grpcclient.InferRequestedOutput(name) for name in classifier_serving.OUTPUTS]

    async def start(self) -> None:
        # Created here, not in __init__: the aio channel binds to the running event loop.
        self._client = grpcaio.InferenceServerClient(self._url)

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None

    async def predict(
        self, model_name: str, version: int, texts: Sequence[str], *, timeout: float | None
    ) -> list[Prediction]:
        if self._client is None:
            raise RuntimeError("TritonPredictor.start() was not called")
        name = triton_name(model_name, version)
        started = time.perf_counter()
        text = grpcclient.InferInput(classifier_serving.TEXT_INPUT, [len(texts), 1], "BYTES")
        text.set_data_from_numpy(classifier_serving.text_batch(texts))
        try:
            labels = await self._labels_of(name, timeout=timeout)
            remaining = None if timeout is None else timeout - (time.perf_counter() - started)
            if remaining is not None and remaining <= 0:
                raise DeadlineExceeded(f"the deadline expired before {name} was called")
            result = await self._client.infer(name, [text], outputs=self._outputs, client_timeout=remaining)
        except InferenceServerException as error:
            raise classify_error(error, model=name) from error
        except TimeoutError as error:
            raise DeadlineExceeded(f"the deadline expired while {name} was answering") from error
        if self._metrics is not None:
            self._metrics.backend_latency.labels(model_name, str(version)).observe(time.perf_counter() - started)
        return _predictions(result, labels)

    async def _labels_of(self, name: str, *, timeout: float | None) -> list[str]:
        labels = self._labels.get(name)
        if labels is None:
            assert self._client is not None
            config: Any = await self._client.get_model_config(name, as_json=True, client_timeout=timeout)
            labels = classifier_serving.labels_from_config(config)
            self._labels[name] = labels
        return labels


def _predictions(result: Any, labels: list[str]) -> list[Prediction]:
    return [
        Prediction(label=output.label, confidence=output.confidence, scores=output.scores)
        for output in classifier_serving.read_outputs(result.as_numpy, labels)
    ]

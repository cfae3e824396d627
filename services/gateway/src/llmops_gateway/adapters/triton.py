"""Triton over its gRPC API (``tritonclient.grpc.aio``).

Classifiers: one call per routed group of texts; each version is its own Triton model
(``triton_name``) whose label order is read once from the model config's ``labels`` parameter.
Causal LMs: one decoupled model serves the base for every version, each version a LoRA adapter
named per request; a generation is one request on Triton's bidirectional stream, answered by a
response per chunk until the one with a finish reason.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator, Sequence
from typing import Any

import grpc
import tritonclient.grpc as grpcclient
import tritonclient.grpc.aio as grpcaio
from tritonclient.utils import InferenceServerException

from llmops_gateway.adapters.metrics import GatewayMetrics
from llmops_gateway.domain.generation import Chunk, GenerateItem
from llmops_gateway.domain.models import Prediction
from llmops_gateway.errors import (
    BackendError,
    DeadlineExceeded,
    GatewayError,
    InvalidRequest,
    ModelNotLoaded,
    ModelUnavailable,
    Overloaded,
)
from llmops_models.kinds.causal_lm import serving as causal_lm_serving
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


def classify_generation_error(message: str, *, model: str, adapter: str) -> GatewayError | None:
    """The gateway error for an error response of the causal-LM model, by its message's prefix
    (``invalid argument:``, ``resource exhausted:``); None when it has neither."""
    prefix = causal_lm_serving.error_prefix(message)
    detail = message.partition(prefix)[2].strip() if prefix else message
    if prefix == causal_lm_serving.RESOURCE_EXHAUSTED:
        return Overloaded(f"{model} is at capacity ({detail}); retry later with backoff")
    if prefix == causal_lm_serving.INVALID_ARGUMENT:
        if adapter and adapter in message:
            # The routed version's adapter is not where the model looks: the deployment's problem,
            # not the caller's; worth re-routing (it may just have been rolled back).
            return ModelNotLoaded(f"adapter {adapter} is not available on {model}: {detail}")
        return InvalidRequest(detail)
    return None


def _rpc_error(error: grpc.aio.AioRpcError, *, model: str) -> GatewayError:
    code = error.code()
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return DeadlineExceeded(f"the deadline expired while {model} was generating")
    if code == grpc.StatusCode.UNAVAILABLE:
        return ModelUnavailable(f"Triton is unavailable: {error.details()}")
    return classify_error(InferenceServerException(msg=error.details() or "", status=str(code)), model=model)


class TritonGenerator:
    """The ``Generator`` port on Triton's streaming gRPC API (``stream_infer``), calling the one
    causal-LM model (``triton_model``) with ``ADAPTER`` naming the version."""

    def __init__(self, url: str, *, triton_model: str, metrics: GatewayMetrics | None = None) -> None:
        self._url = url
        self._model = triton_model
        self._metrics = metrics
        self._client: grpcaio.InferenceServerClient | None = None
        self._outputs = [grpcclient.InferRequestedOutput(name) for name in causal_lm_serving.OUTPUTS]

    async def start(self) -> None:
        # Created here, not in __init__: the aio channel binds to the running event loop.
        self._client = grpcaio.InferenceServerClient(self._url)

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None

    async def generate(self, *, adapter: str, item: GenerateItem, timeout: float | None) -> AsyncGenerator[Chunk, None]:
        if self._client is None:
            raise RuntimeError("TritonGenerator.start() was not called")
        inputs = self._inputs(adapter, item)
        finished = asyncio.Event()

        async def requests() -> AsyncGenerator[dict[str, Any], None]:
            yield {"model_name": self._model, "inputs": inputs, "outputs": self._outputs, "request_id": item.request_id}
            # Keep our side of the stream open until the last response: the stream is the request's
            # lifetime on Triton, and cancelling it is how the model learns the caller went away.
            await finished.wait()

        responses = self._client.stream_infer(requests(), stream_timeout=timeout)
        try:
            async for result, error in responses:
                if error is not None:
                    message = str(error.message() or error)
                    raise classify_generation_error(message, model=self._model, adapter=adapter) or classify_error(
                        error, model=self._model
                    )
                read = causal_lm_serving.read_chunk(result.as_numpy)
                yield Chunk(read.text, read.finish_reason, read.prompt_tokens, read.completion_tokens)
                if read.final:
                    return
            raise BackendError(f"Triton ended the stream of {self._model} before the last response")
        except InferenceServerException as error:
            raise classify_error(error, model=self._model) from error
        except grpc.aio.AioRpcError as error:
            raise _rpc_error(error, model=self._model) from error
        finally:
            finished.set()
            # A no-op after the last response; otherwise (the caller went away, its deadline passed,
            # a failure here) Triton cancels the request and the model frees its slot.
            responses.cancel()

    def _inputs(self, adapter: str, item: GenerateItem) -> list[grpcclient.InferInput]:
        tensors = causal_lm_serving.generation_inputs(
            [{"role": turn.role, "content": turn.content} for turn in item.messages],
            adapter=adapter,
            max_tokens=item.max_tokens,
            temperature=item.temperature,
            top_p=item.top_p,
            seed=item.seed,
            stop=item.stop,
        )
        inputs = []
        for name, array in tensors.items():
            tensor = grpcclient.InferInput(name, list(array.shape), causal_lm_serving.TRITON_DATATYPES[name])
            tensor.set_data_from_numpy(array)
            inputs.append(tensor)
        return inputs

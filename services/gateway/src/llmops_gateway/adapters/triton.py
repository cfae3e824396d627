"""Triton over its gRPC API (the generated stub for classifiers, ``tritonclient.grpc.aio`` for streams).

Classifiers: one call per routed group of texts (calls in the same loop turn coalesced); each
version is its own Triton model (``triton_name``) whose label order is read once from the model
config's ``labels`` parameter.
Causal LMs: one decoupled model serves the base for every version, each version a LoRA adapter
named per request; a generation is one request on Triton's bidirectional stream, answered by a
response per chunk until the one with a finish reason.
"""

from __future__ import annotations

import asyncio
import contextvars
import copy
import struct
import time
from collections.abc import AsyncGenerator, Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import grpc
import numpy as np
import tritonclient.grpc as grpcclient
import tritonclient.grpc.aio as grpcaio
from google.protobuf import json_format
from tritonclient.grpc import service_pb2, service_pb2_grpc
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
    """The ``Predictor`` port on Triton's gRPC inference API, called through its generated stub.

    Two costs of the per-request path are cut here (issue 21, measured with py-spy under load):

    * Calls to one Triton model are coalesced into one ``ModelInfer`` of all their texts (up to the
      model's ``max_batch_size`` rows): those arriving in the same turn of the event loop are sent
      at the end of that turn, and while ``max_calls_per_model`` calls to the model are already in
      flight the rest wait for the first of them to return (Triton's instances are busy then
      anyway). An idle gateway sends at once; a busy one makes one client-side RPC, the costliest
      part of a call in ``grpc.aio`` (about 0.35 ms of CPU), serve many requests. Each caller keeps
      its own deadline and cancellation; a failed call fails each of its callers as their own
      call would.
    * The request is a ``ModelInferRequest`` built directly (BYTES tensor packed once) and the
      answer is read from its raw output bytes, instead of ``tritonclient``'s ``InferInput`` and
      ``InferResult`` round trips through numpy object arrays.
    """

    def __init__(
        self,
        url: str,
        *,
        metrics: GatewayMetrics | None = None,
        coalesce: bool = True,
        max_calls_per_model: int = 2,
        channel_options: Sequence[tuple[str, Any]] = (),
    ) -> None:
        if max_calls_per_model < 1:
            raise ValueError("max_calls_per_model must be at least 1")
        self._url = url
        self._channel_options = (*_CHANNEL_OPTIONS, *channel_options)
        self._metrics = metrics
        self._coalesce = coalesce
        self._max_calls = max_calls_per_model
        self._in_flight: dict[str, int] = {}
        self._flushing: set[str] = set()
        self._channel: grpc.aio.Channel | None = None
        self._stub: Any = None
        self._models: dict[str, _ModelInfo] = {}
        self._pending: dict[str, list[_Waiting]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._retiring: set[asyncio.Task[None]] = set()
        self._outputs = [
            service_pb2.ModelInferRequest.InferRequestedOutputTensor(name=n) for n in classifier_serving.OUTPUTS
        ]

    async def start(self) -> None:
        # Created here, not in __init__: the aio channel binds to the running event loop. Message
        # limits as tritonclient sets them (a batch of long texts or wide scores can exceed 4 MiB).
        self._channel = grpc.aio.insecure_channel(self._url, options=self._channel_options)
        self._stub = service_pb2_grpc.GRPCInferenceServiceStub(self._channel)

    async def retarget(self, url: str, *, grace_s: float) -> None:
        """Send new calls to ``url`` (the Triton pool's members changed); calls in flight on the
        old channel finish on it, given ``grace_s`` before it closes."""
        if url == self._url or self._channel is None:
            self._url = url
            return
        old, self._url = self._channel, url
        await self.start()
        task = asyncio.get_running_loop().create_task(old.close(grace_s))
        self._retiring.add(task)
        task.add_done_callback(self._retiring.discard)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        if self._retiring:
            await asyncio.gather(*self._retiring, return_exceptions=True)
        if self._channel is not None:
            await self._channel.close()
            self._channel = None
            self._stub = None

    async def predict(
        self, model_name: str, version: int, texts: Sequence[str], *, timeout: float | None
    ) -> list[Prediction]:
        if self._stub is None:
            raise RuntimeError("TritonPredictor.start() was not called")
        name = triton_name(model_name, version)
        started = time.perf_counter()
        info = self._models.get(name) or await self._model_info(name, timeout=timeout)
        remaining = None if timeout is None else timeout - (time.perf_counter() - started)
        if remaining is not None and remaining <= 0:
            raise DeadlineExceeded(f"the deadline expired before {name} was called")
        if not self._coalesce:
            return await self._infer(name, (model_name, str(version)), info, texts, remaining)
        loop = asyncio.get_running_loop()
        waiting = _Waiting(
            list(texts),
            loop.create_future(),
            None if remaining is None else loop.time() + remaining,
            contextvars.copy_context(),
        )
        self._pending.setdefault(name, []).append(waiting)
        self._schedule(name, (model_name, str(version)), info)
        return await waiting.answer

    def _schedule(self, name: str, labels: tuple[str, str], info: _ModelInfo) -> None:
        """Flush ``name`` at the end of this loop turn, unless its calls in flight are at the bound
        (then the first to return flushes) or a flush is already due."""
        if name in self._flushing or self._in_flight.get(name, 0) >= self._max_calls or not self._pending.get(name):
            return
        self._flushing.add(name)
        asyncio.get_running_loop().call_soon(self._flush, name, labels, info)

    def _flush(self, name: str, labels: tuple[str, str], info: _ModelInfo) -> None:
        """Send what is waiting for ``name``: one call per group of at most ``max_batch_size`` rows."""
        self._flushing.discard(name)
        waiting = [w for w in self._pending.pop(name, []) if not w.answer.done()]
        for group in coalesce(waiting, max_rows=info.max_batch_size, rows=lambda w: len(w.texts)):
            self._in_flight[name] = self._in_flight.get(name, 0) + 1
            # In the first caller's context: a traced call's Triton span is a child of that caller's
            # span (not of whichever call happened to flush), the others' traces end at the gateway.
            task = asyncio.get_running_loop().create_task(
                self._answer(name, labels, info, group), context=group[0].context
            )
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _answer(self, name: str, labels: tuple[str, str], info: _ModelInfo, group: list[_Waiting]) -> None:
        loop = asyncio.get_running_loop()
        deadlines = [w.deadline for w in group]
        # The group's call may take as long as its most patient caller; each caller's own deadline
        # still bounds its wait (the gRPC layer's timeout around the whole call).
        timeout = None if None in deadlines else max(d for d in deadlines if d is not None) - loop.time()
        try:
            texts = [text for w in group for text in w.texts]
            predictions = await self._infer(name, labels, info, texts, timeout)
        except asyncio.CancelledError:
            for w in group:
                w.answer.cancel()
            raise
        except Exception as error:
            for w in group:
                if not w.answer.done():
                    w.answer.set_exception(copy.copy(error))
            return
        finally:
            self._in_flight[name] -= 1
            self._schedule(name, labels, info)  # what queued up meanwhile goes now, as one call
        start = 0
        for w in group:
            if not w.answer.done():
                w.answer.set_result(predictions[start : start + len(w.texts)])
            start += len(w.texts)

    async def _infer(
        self, name: str, labels: tuple[str, str], info: _ModelInfo, texts: Sequence[str], timeout: float | None
    ) -> list[Prediction]:
        if timeout is not None and timeout <= 0:
            raise DeadlineExceeded(f"the deadline expired before {name} was called")
        request = service_pb2.ModelInferRequest(model_name=name, outputs=self._outputs)
        tensor = request.inputs.add(name=classifier_serving.TEXT_INPUT, datatype="BYTES")
        tensor.shape.extend((len(texts), 1))
        request.raw_input_contents.append(bytes_tensor(texts))
        started = time.perf_counter()
        try:
            response = await self._stub.ModelInfer(request, timeout=timeout)
        except grpc.aio.AioRpcError as error:
            raise _infer_error(error, model=name) from error
        if self._metrics is not None:
            self._metrics.backend_latency.labels(*labels).observe(time.perf_counter() - started)
            self._metrics.backend_rows.observe(len(texts))
        try:
            outputs = raw_outputs(response)
            answers = classifier_serving.read_outputs(outputs.__getitem__, info.labels)
        except (KeyError, ValueError) as error:
            raise BackendError(f"Triton's answer from {name} is malformed: {error}") from error
        if len(answers) != len(texts):
            raise BackendError(f"{name} answered {len(answers)} rows for {len(texts)} texts")
        return [Prediction(label=a.label, confidence=a.confidence, scores=a.scores) for a in answers]

    async def _model_info(self, name: str, *, timeout: float | None) -> _ModelInfo:
        """The label order and batch bound of ``name``, read once from its model config."""
        try:
            response = await self._stub.ModelConfig(service_pb2.ModelConfigRequest(name=name), timeout=timeout)
        except grpc.aio.AioRpcError as error:
            raise _infer_error(error, model=name) from error
        config = json_format.MessageToDict(response, preserving_proto_field_name=True)
        info = _ModelInfo(
            labels=classifier_serving.labels_from_config(config),
            # 0: the model does not batch; a call then carries one request's texts, as before.
            max_batch_size=max(0, int(response.config.max_batch_size)),
        )
        self._models[name] = info
        return info


_CHANNEL_OPTIONS = (("grpc.max_send_message_length", 2**31 - 1), ("grpc.max_receive_message_length", 2**31 - 1))
_LENGTH = struct.Struct("<I")
_NUMPY_TYPES = {"FP32": np.float32, "FP64": np.float64, "INT32": np.int32, "INT64": np.int64}


@dataclass(frozen=True, slots=True)
class _ModelInfo:
    labels: list[str]
    max_batch_size: int


@dataclass(slots=True)
class _Waiting:
    """One caller's texts waiting to be sent, and where its answer goes."""

    texts: list[str]
    answer: asyncio.Future[list[Prediction]]
    deadline: float | None
    """Loop time by which the caller needs the answer; None: no deadline."""
    context: contextvars.Context
    """The caller's context (its trace span, when tracing is on)."""


T = TypeVar("T")


def coalesce(waiting: Sequence[T], *, max_rows: int, rows: Callable[[T], int]) -> list[list[T]]:
    """Group callers, in arrival order, into calls of at most ``max_rows`` rows (0: no batching,
    one call per caller); a caller with more rows than that is a call of its own (Triton answers
    it as it would have answered it alone)."""
    groups: list[list[T]] = []
    size = 0
    for item in waiting:
        count = rows(item)
        if groups and max_rows > 0 and size + count <= max_rows:
            groups[-1].append(item)
            size += count
        else:
            groups.append([item])
            size = count
    return groups


def bytes_tensor(texts: Sequence[str]) -> bytes:
    """A BYTES tensor's raw contents: each element's length (4 bytes, little-endian), then its bytes."""
    parts = []
    for text in texts:
        data = text.encode()
        parts.append(_LENGTH.pack(len(data)))
        parts.append(data)
    return b"".join(parts)


def raw_outputs(response: Any) -> dict[str, np.ndarray]:
    """The output tensors of a ``ModelInferResponse`` (raw contents, in the order of ``outputs``) as
    numpy arrays of their shapes: BYTES as an object array of ``bytes``."""
    if len(response.raw_output_contents) != len(response.outputs):
        raise ValueError(f"{len(response.outputs)} outputs but {len(response.raw_output_contents)} raw contents")
    arrays: dict[str, np.ndarray] = {}
    for output, raw in zip(response.outputs, response.raw_output_contents, strict=True):
        shape = tuple(output.shape)
        if output.datatype == "BYTES":
            values: list[bytes] = []
            offset = 0
            while offset < len(raw):
                (length,) = _LENGTH.unpack_from(raw, offset)
                offset += 4
                values.append(raw[offset : offset + length])
                offset += length
            array = np.empty(len(values), dtype=np.object_)
            array[:] = values
        elif output.datatype in _NUMPY_TYPES:
            array = np.frombuffer(raw, dtype=_NUMPY_TYPES[output.datatype])
        else:
            raise ValueError(f"output {output.name} has the unsupported datatype {output.datatype}")
        arrays[output.name] = array.reshape(shape)
    return arrays


def _infer_error(error: grpc.aio.AioRpcError, *, model: str) -> GatewayError:
    return classify_error(InferenceServerException(msg=error.details() or "", status=str(error.code())), model=model)


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

    def __init__(
        self,
        url: str,
        *,
        triton_model: str,
        metrics: GatewayMetrics | None = None,
        channel_options: Sequence[tuple[str, Any]] = (),
    ) -> None:
        self._url = url
        # tritonclient's own channel options unless the target needs more (a pool: round robin).
        self._channel_args = [*_CHANNEL_OPTIONS, *channel_options] if channel_options else None
        self._model = triton_model
        self._metrics = metrics
        self._client: grpcaio.InferenceServerClient | None = None
        self._streams: dict[grpcaio.InferenceServerClient, int] = {}
        """Streams open on each client; a client retired by ``retarget`` closes with its last one."""
        self._closing: set[asyncio.Task[None]] = set()
        self._outputs = [grpcclient.InferRequestedOutput(name) for name in causal_lm_serving.OUTPUTS]

    async def start(self) -> None:
        # Created here, not in __init__: the aio channel binds to the running event loop.
        self._client = grpcaio.InferenceServerClient(self._url, channel_args=self._channel_args)
        self._streams[self._client] = 0

    async def retarget(self, url: str) -> None:
        """Open new streams on ``url`` (the Triton pool's members changed); streams already open
        run to their end on the old client, which closes after the last of them."""
        if url == self._url or self._client is None:
            self._url = url
            return
        old, self._url = self._client, url
        await self.start()
        self._close_if_idle(old)

    def _close_if_idle(self, client: grpcaio.InferenceServerClient) -> None:
        """Close a retired client with no stream left (in the background: called from a stream's end)."""
        if client is not self._client and self._streams.get(client) == 0:
            del self._streams[client]
            task = asyncio.get_running_loop().create_task(client.close())
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)

    async def close(self) -> None:
        clients, self._client = list(self._streams), None
        self._streams.clear()
        for client in clients:
            await client.close()
        if self._closing:
            await asyncio.gather(*self._closing, return_exceptions=True)

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

        client = self._client
        self._streams[client] += 1
        responses = client.stream_infer(requests(), stream_timeout=timeout)
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
            if client in self._streams:
                self._streams[client] -= 1
                self._close_if_idle(client)

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

"""The gRPC surface (``llmops.inference.v1.InferenceService``): converts wire messages to domain
values and back, authenticates, and maps the gateway's errors to gRPC status codes in one place."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

import grpc

from llmops.inference.v1 import inference_pb2, inference_pb2_grpc
from llmops_gateway.adapters.metrics import GatewayMetrics
from llmops_gateway.domain.admission import Admission
from llmops_gateway.domain.auth import ApiKeys
from llmops_gateway.domain.models import ServedPrediction
from llmops_gateway.domain.validation import Limits, RawItem, validate_batch, validate_item
from llmops_gateway.errors import DeadlineExceeded, ErrorCode, GatewayError
from llmops_gateway.handlers import InferenceCore, Remaining

logger = logging.getLogger(__name__)

SERVICE_NAME = inference_pb2.DESCRIPTOR.services_by_name["InferenceService"].full_name

STATUS: dict[ErrorCode, grpc.StatusCode] = {
    ErrorCode.INVALID_ARGUMENT: grpc.StatusCode.INVALID_ARGUMENT,
    ErrorCode.UNAUTHENTICATED: grpc.StatusCode.UNAUTHENTICATED,
    ErrorCode.UNAVAILABLE: grpc.StatusCode.UNAVAILABLE,
    ErrorCode.DEADLINE_EXCEEDED: grpc.StatusCode.DEADLINE_EXCEEDED,
    ErrorCode.RESOURCE_EXHAUSTED: grpc.StatusCode.RESOURCE_EXHAUSTED,
    ErrorCode.INTERNAL: grpc.StatusCode.INTERNAL,
}

Response = TypeVar("Response")


def grpc_status(error: GatewayError) -> grpc.StatusCode:
    """The one mapping from the gateway's error codes to gRPC status codes."""
    return STATUS.get(error.code, grpc.StatusCode.INTERNAL)


def _raw(request: inference_pb2.PredictRequest) -> RawItem:
    return RawItem(text=request.text, model=request.model, tenant=request.tenant, request_id=request.request_id)


def _response(served: ServedPrediction) -> inference_pb2.PredictResponse:
    return inference_pb2.PredictResponse(
        label=served.prediction.label,
        confidence=served.prediction.confidence,
        scores=served.prediction.scores,
        model_name=served.model_name,
        model_version=served.model_version,
        request_id=served.item.request_id,
    )


def _version_label(served: Sequence[ServedPrediction]) -> tuple[str, str]:
    models = {s.model_name for s in served}
    versions = {s.model_version for s in served}
    model = next(iter(models)) if len(models) == 1 else ("mixed" if models else "")
    version = str(next(iter(versions))) if len(versions) == 1 else ("mixed" if versions else "")
    return model, version


class InferenceServicer(inference_pb2_grpc.InferenceServiceServicer):
    def __init__(
        self, *, core: InferenceCore, keys: ApiKeys, limits: Limits, admission: Admission, metrics: GatewayMetrics
    ) -> None:
        self._core = core
        self._keys = keys
        self._limits = limits
        self._admission = admission
        self._metrics = metrics

    async def Predict(
        self, request: inference_pb2.PredictRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> inference_pb2.PredictResponse:
        async def serve(remaining: Remaining) -> tuple[inference_pb2.PredictResponse, list[ServedPrediction]]:
            item = validate_item(_raw(request), self._limits)
            served = await self._core.predict([item], remaining=remaining)
            return _response(served[0]), served

        return await self._call("Predict", context, serve)

    async def PredictBatch(
        self, request: inference_pb2.PredictBatchRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> inference_pb2.PredictBatchResponse:
        async def serve(remaining: Remaining) -> tuple[inference_pb2.PredictBatchResponse, list[ServedPrediction]]:
            items = validate_batch([_raw(r) for r in request.items], self._limits)
            served = await self._core.predict(items, remaining=remaining)
            return inference_pb2.PredictBatchResponse(items=[_response(s) for s in served]), served

        return await self._call("PredictBatch", context, serve)

    async def _call(
        self,
        method: str,
        context: grpc.aio.ServicerContext[Any, Any],
        serve: Callable[[Remaining], Awaitable[tuple[Response, list[ServedPrediction]]]],
    ) -> Response:
        started = time.perf_counter()
        try:
            self._keys.check(_authorization(context))  # before anything else: an unauthenticated call is never served
            with self._admission.slot():  # a call beyond the bound is refused at once (RESOURCE_EXHAUSTED)
                self._metrics.in_flight.inc()
                try:
                    response, served = await self._within_deadline(context, serve)
                finally:
                    self._metrics.in_flight.dec()
        except GatewayError as error:
            status = grpc_status(error)
            # No model label from the request: a caller must not be able to mint metric series.
            self._metrics.requests.labels(method, "", "", status.name).inc()
            await context.abort(status, error.message)
            raise AssertionError("unreachable: abort raises") from error
        except (asyncio.CancelledError, grpc.aio.AbortError):
            raise
        except Exception as error:
            logger.exception("unexpected error serving %s", method)
            self._metrics.requests.labels(method, "", "", grpc.StatusCode.INTERNAL.name).inc()
            await context.abort(grpc.StatusCode.INTERNAL, f"internal error: {type(error).__name__}")
            raise AssertionError("unreachable: abort raises") from error
        model, version = _version_label(served)
        self._metrics.requests.labels(method, model, version, grpc.StatusCode.OK.name).inc()
        self._metrics.latency.labels(method, model, version).observe(time.perf_counter() - started)
        return response

    async def _within_deadline(
        self,
        context: grpc.aio.ServicerContext[Any, Any],
        serve: Callable[[Remaining], Awaitable[tuple[Response, list[ServedPrediction]]]],
    ) -> tuple[Response, list[ServedPrediction]]:
        """Serve under the call's budget: the client's deadline cut to the maximum, or the default when
        it set none. Triton is called with what is left of it; the timeout here also bounds anything
        that would not honour it, so no call outlives its budget."""
        budget = self._admission.budget(context.time_remaining())
        deadline = time.monotonic() + budget

        def remaining() -> float:
            return deadline - time.monotonic()

        try:
            async with asyncio.timeout(budget):
                return await serve(remaining)
        except TimeoutError as error:
            raise DeadlineExceeded(f"the deadline ({budget:.3g} s) expired before the model answered") from error


def _authorization(context: grpc.aio.ServicerContext[Any, Any]) -> str | None:
    for key, value in context.invocation_metadata() or ():
        if key.lower() == "authorization":
            return value if isinstance(value, str) else value.decode()
    return None

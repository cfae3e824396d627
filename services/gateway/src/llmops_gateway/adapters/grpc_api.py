"""The gRPC surface (``llmops.inference.v1.InferenceService``): converts wire messages to domain
values and back, authenticates and authorises each call's API key (tenant, scope, rate,
concurrency), applies generation's guardrails, and maps the gateway's errors to gRPC status codes
in one place."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import aclosing
from dataclasses import dataclass
from typing import Any, Protocol, TypeAlias, TypeVar

import grpc

from llmops.inference.v1 import inference_pb2, inference_pb2_grpc
from llmops_events.v1 import AuditAction, FeedbackSubmitted
from llmops_gateway.adapters.audit import Denial, DenialAudit
from llmops_gateway.adapters.metrics import GatewayMetrics
from llmops_gateway.domain.admission import Admission
from llmops_gateway.domain.auth import ApiKey, KeyRing, Scope, tenant_for
from llmops_gateway.domain.feedback import FeedbackLimits, RawFeedback, validate_feedback
from llmops_gateway.domain.generation import (
    GenerationLimits,
    RawGeneration,
    ServedChunk,
    Turn,
    validate_generation,
)
from llmops_gateway.domain.guardrails import GuardrailsPolicy, SpanFinder, StreamRedactor, check_prompt, redact_text
from llmops_gateway.domain.models import ServedPrediction
from llmops_gateway.domain.validation import DEFAULT_TENANT, Limits, RawItem, validate_batch, validate_item
from llmops_gateway.errors import (
    BackendError,
    DeadlineExceeded,
    ErrorCode,
    GatewayError,
    ModelUnavailable,
    NotAuthenticated,
    PermissionDenied,
    RateLimited,
    Refused,
    TooManyConcurrent,
)
from llmops_gateway.handlers import GenerationCore, InferenceCore, Remaining

logger = logging.getLogger(__name__)

SERVICE_NAME = inference_pb2.DESCRIPTOR.services_by_name["InferenceService"].full_name

STATUS: dict[ErrorCode, grpc.StatusCode] = {
    ErrorCode.INVALID_ARGUMENT: grpc.StatusCode.INVALID_ARGUMENT,
    ErrorCode.FAILED_PRECONDITION: grpc.StatusCode.FAILED_PRECONDITION,
    ErrorCode.UNAUTHENTICATED: grpc.StatusCode.UNAUTHENTICATED,
    ErrorCode.PERMISSION_DENIED: grpc.StatusCode.PERMISSION_DENIED,
    ErrorCode.UNAVAILABLE: grpc.StatusCode.UNAVAILABLE,
    ErrorCode.DEADLINE_EXCEEDED: grpc.StatusCode.DEADLINE_EXCEEDED,
    ErrorCode.RESOURCE_EXHAUSTED: grpc.StatusCode.RESOURCE_EXHAUSTED,
    ErrorCode.INTERNAL: grpc.StatusCode.INTERNAL,
}

Response = TypeVar("Response")
Labels = tuple[str, str]
"""The model and version labels of a served call's metrics."""
Serve = Callable[[Callable[[], float | None], ApiKey], Awaitable[tuple[Response, Labels]]]
"""One RPC's work, given what is left of its deadline and the caller's verified key."""
GenerateMessage: TypeAlias = inference_pb2.GenerateRequest | inference_pb2.GenerateStreamRequest


class FeedbackPublisher(Protocol):
    async def publish(self, data: FeedbackSubmitted, *, id: str | None = None) -> object: ...


@dataclass(frozen=True, slots=True)
class Deadlines:
    """A call's deadline when its client set none, and the longest it may ask for."""

    default_s: float
    max_s: float


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


def _raw_generation(request: GenerateMessage) -> RawGeneration:
    return RawGeneration(
        messages=[Turn(message.role, message.content) for message in request.messages],
        prompt=request.prompt,
        model=request.model,
        tenant=request.tenant,
        request_id=request.request_id,
        max_tokens=request.max_tokens if request.HasField("max_tokens") else None,
        temperature=request.temperature if request.HasField("temperature") else None,
        top_p=request.top_p if request.HasField("top_p") else None,
        seed=request.seed if request.HasField("seed") else None,
        stop=list(request.stop),
    )


def _usage(served: ServedChunk) -> inference_pb2.Usage:
    return inference_pb2.Usage(
        prompt_tokens=served.chunk.prompt_tokens, completion_tokens=served.chunk.completion_tokens
    )


def _chunk_response(served: ServedChunk, request_id: str) -> inference_pb2.GenerateStreamResponse:
    return inference_pb2.GenerateStreamResponse(
        text=served.chunk.text,
        finish_reason=served.chunk.finish_reason,
        usage=_usage(served) if served.chunk.final else None,
        model_name=served.model_name,
        model_version=served.model_version,
        request_id=request_id,
    )


def _version_label(served: Sequence[ServedPrediction]) -> tuple[str, str]:
    models = {s.model_name for s in served}
    versions = {s.model_version for s in served}
    model = next(iter(models)) if len(models) == 1 else ("mixed" if models else "")
    version = str(next(iter(versions))) if len(versions) == 1 else ("mixed" if versions else "")
    return model, version


@dataclass(frozen=True, slots=True)
class Guardrails:
    """Generation's policy and the PII finder answers are redacted with (None: answers are not redacted)."""

    policy: GuardrailsPolicy
    finder: SpanFinder | None = None


class InferenceServicer(inference_pb2_grpc.InferenceServiceServicer):
    def __init__(
        self,
        *,
        core: InferenceCore,
        keys: KeyRing,
        limits: Limits,
        admission: Admission,
        metrics: GatewayMetrics,
        generation: GenerationCore | None = None,
        generation_limits: GenerationLimits | None = None,
        generation_deadlines: Deadlines | None = None,
        feedback: FeedbackPublisher | None = None,
        feedback_limits: FeedbackLimits | None = None,
        guardrails: Guardrails | None = None,
        audit: DenialAudit | None = None,
    ) -> None:
        self._core = core
        self._keys = keys
        self._limits = limits
        self._admission = admission
        self._metrics = metrics
        self._generation = generation
        self._generation_limits = generation_limits or GenerationLimits()
        self._generation_deadlines = generation_deadlines
        self._feedback = feedback
        self._feedback_limits = feedback_limits or FeedbackLimits()
        self._guardrails = guardrails
        self._audit = audit

    async def Predict(
        self, request: inference_pb2.PredictRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> inference_pb2.PredictResponse:
        async def serve(remaining: Remaining, key: ApiKey) -> tuple[inference_pb2.PredictResponse, Labels]:
            item = validate_item(_raw(request), self._limits)
            item = dataclasses.replace(item, tenant=self._tenant(key, request.tenant, "Predict"))
            served = await self._core.predict([item], remaining=remaining)
            return _response(served[0]), _version_label(served)

        return await self._call("Predict", context, serve, scope=Scope.PREDICT)

    async def PredictBatch(
        self, request: inference_pb2.PredictBatchRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> inference_pb2.PredictBatchResponse:
        async def serve(remaining: Remaining, key: ApiKey) -> tuple[inference_pb2.PredictBatchResponse, Labels]:
            items = validate_batch([_raw(r) for r in request.items], self._limits)
            items = [
                dataclasses.replace(item, tenant=self._tenant(key, r.tenant, "PredictBatch"))
                for item, r in zip(items, request.items, strict=True)
            ]
            served = await self._core.predict(items, remaining=remaining)
            return inference_pb2.PredictBatchResponse(items=[_response(s) for s in served]), _version_label(served)

        return await self._call("PredictBatch", context, serve, scope=Scope.PREDICT)

    async def Generate(
        self, request: inference_pb2.GenerateRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> inference_pb2.GenerateResponse:
        async def serve(remaining: Remaining, key: ApiKey) -> tuple[inference_pb2.GenerateResponse, Labels]:
            core = self._generation_core()
            item = self._checked_generation(request, key, "Generate")
            parts: list[str] = []
            last: ServedChunk | None = None
            async with aclosing(core.generate(item, remaining=remaining)) as chunks:
                async for served in chunks:
                    parts.append(served.chunk.text)
                    last = served
            if last is None:
                raise BackendError("the model answered nothing")
            response = inference_pb2.GenerateResponse(
                text=self._redacted_answer(item.tenant, "".join(parts)),
                finish_reason=last.chunk.finish_reason,
                usage=_usage(last),
                model_name=last.model_name,
                model_version=last.model_version,
                request_id=item.request_id,
            )
            return response, (last.model_name, str(last.model_version))

        return await self._call("Generate", context, serve, scope=Scope.GENERATE, deadlines=self._generation_deadlines)

    async def GenerateStream(
        self, request: inference_pb2.GenerateStreamRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> None:
        # Written with context.write, not as an async generator: the call's deadline (a timeout
        # around the whole handler) then also covers the time spent writing to a slow client.
        async def serve(remaining: Remaining, key: ApiKey) -> tuple[None, Labels]:
            core = self._generation_core()
            item = self._checked_generation(request, key, "GenerateStream")
            redactor = self._stream_redactor(item.tenant)
            last: ServedChunk | None = None
            async with aclosing(core.generate(item, remaining=remaining)) as chunks:
                async for served in chunks:
                    last = served
                    if redactor is not None:
                        # Held back a little (the look-behind) so a PII span split across chunks is caught.
                        text = redactor.feed(served.chunk.text)
                        if served.chunk.final:
                            text += redactor.flush()
                            self._count_redactions(redactor.counts)
                        elif not text:
                            continue
                        served = dataclasses.replace(served, chunk=dataclasses.replace(served.chunk, text=text))
                    await context.write(_chunk_response(served, item.request_id))
            return None, ("", "") if last is None else (last.model_name, str(last.model_version))

        await self._call("GenerateStream", context, serve, scope=Scope.GENERATE, deadlines=self._generation_deadlines)

    async def SubmitFeedback(
        self, request: inference_pb2.SubmitFeedbackRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> inference_pb2.SubmitFeedbackResponse:
        async def serve(remaining: Remaining, key: ApiKey) -> tuple[inference_pb2.SubmitFeedbackResponse, Labels]:
            if self._feedback is None:
                raise BackendError("feedback is not configured on this gateway")
            feedback = validate_feedback(
                RawFeedback(
                    request_id=request.request_id,
                    rating=request.rating,
                    corrected_answer=request.corrected_answer,
                    true_label=request.true_label,
                    comment=request.comment,
                ),
                self._feedback_limits,
            )
            event = FeedbackSubmitted(
                request_id=feedback.request_id,
                rating=feedback.rating,
                corrected_answer=feedback.corrected_answer,
                true_label=feedback.true_label,
                comment=feedback.comment,
            )
            try:
                await self._feedback.publish(event, id=feedback.event_id)
            except (asyncio.CancelledError, GatewayError):
                raise
            except Exception as error:  # the broker: the caller may retry (the event id stays the same)
                raise ModelUnavailable(f"the feedback could not be published: {type(error).__name__}") from error
            return inference_pb2.SubmitFeedbackResponse(event_id=feedback.event_id), ("", "")

        return await self._call("SubmitFeedback", context, serve, scope=Scope.FEEDBACK)

    def _generation_core(self) -> GenerationCore:
        if self._generation is None:
            raise BackendError("generation is not configured on this gateway")
        return self._generation

    def _tenant(self, key: ApiKey, requested: str, method: str) -> str:
        """The tenant the call acts for (``requested``, already length-checked), if the key may."""
        try:
            return tenant_for(key, requested, DEFAULT_TENANT)
        except PermissionDenied as error:
            self._deny(key.principal, "tenant", error.message, method, tenant=requested.strip() or None)
            raise

    def _checked_generation(self, request: GenerateMessage, key: ApiKey, method: str) -> Any:
        """The validated request, for a tenant the key may act for, past the input guardrails."""
        item = validate_generation(_raw_generation(request), self._generation_limits)
        item = dataclasses.replace(item, tenant=self._tenant(key, request.tenant, method))
        if self._guardrails is not None:
            try:
                check_prompt(self._guardrails.policy, [turn.content for turn in item.messages])
            except Refused as refused:
                self._metrics.guardrail_refusals.labels(refused.reason_code).inc()
                logger.info(
                    "generation refused by a guardrail",
                    extra={"code": refused.reason_code, "key": key.id, "request_id": item.request_id},
                )
                if self._audit is not None:
                    self._audit.record(
                        Denial(
                            key.principal,
                            refused.reason_code,
                            refused.message,
                            method,
                            tenant=item.tenant,
                            action=AuditAction.GUARDRAIL_REFUSAL,
                        )
                    )
                raise
        return item

    def _redacts(self, tenant: str) -> SpanFinder | None:
        guardrails = self._guardrails
        if guardrails is None or guardrails.finder is None or not guardrails.policy.redacts_output(tenant):
            return None
        return guardrails.finder

    def _redacted_answer(self, tenant: str, text: str) -> str:
        finder = self._redacts(tenant)
        if finder is None:
            return text
        counts: Counter[str] = Counter()
        redacted = redact_text(finder, text, counts)
        self._count_redactions(counts)
        return redacted

    def _stream_redactor(self, tenant: str) -> StreamRedactor | None:
        finder = self._redacts(tenant)
        if finder is None or self._guardrails is None:
            return None
        return StreamRedactor(finder, lookbehind_chars=self._guardrails.policy.lookbehind_chars)

    def _count_redactions(self, counts: Counter[str]) -> None:
        for kind, count in counts.items():
            self._metrics.output_redactions.labels(kind).inc(count)

    def _deny(self, principal: str, reason: str, message: str, method: str, *, tenant: str | None = None) -> None:
        self._metrics.key_denials.labels(reason).inc()
        if self._audit is not None and reason in ("unauthenticated", "tenant", "scope"):
            self._audit.record(Denial(principal, reason, message, method, tenant=tenant[:128] if tenant else None))

    def _authorised(self, method: str, context: grpc.aio.ServicerContext[Any, Any]) -> ApiKey:
        try:
            return self._keys.authenticate(_authorization(context))
        except NotAuthenticated as error:
            self._deny("key:unknown", "unauthenticated", error.message, method)
            raise

    async def _call(
        self,
        method: str,
        context: grpc.aio.ServicerContext[Any, Any],
        serve: Serve[Response],
        *,
        scope: Scope,
        deadlines: Deadlines | None = None,
    ) -> Response:
        started = time.perf_counter()
        try:
            key = self._authorised(method, context)  # before anything else: an unauthenticated call is never served
            with self._admitted(key, scope, method), self._admission.slot():
                # A call beyond the key's rate or concurrency, or the gateway's bound, is refused at once.
                self._metrics.in_flight.inc()
                try:
                    response, (model, version) = await self._within_deadline(
                        context, lambda remaining: serve(remaining, key), deadlines
                    )
                finally:
                    self._metrics.in_flight.dec()
        except asyncio.CancelledError:
            # The client went away (or the server is stopping): the backend call was cancelled with it.
            self._metrics.requests.labels(method, "", "", grpc.StatusCode.CANCELLED.name).inc()
            raise
        except GatewayError as error:
            status = grpc_status(error)
            # No model label from the request: a caller must not be able to mint metric series.
            self._metrics.requests.labels(method, "", "", status.name).inc()
            await context.abort(status, error.message)
            raise AssertionError("unreachable: abort raises") from error
        except grpc.aio.AbortError:
            raise
        except Exception as error:
            logger.exception("unexpected error serving %s", method)
            self._metrics.requests.labels(method, "", "", grpc.StatusCode.INTERNAL.name).inc()
            await context.abort(grpc.StatusCode.INTERNAL, f"internal error: {type(error).__name__}")
            raise AssertionError("unreachable: abort raises") from error
        self._metrics.requests.labels(method, model, version, grpc.StatusCode.OK.name).inc()
        self._metrics.latency.labels(method, model, version).observe(time.perf_counter() - started)
        return response

    @contextlib.contextmanager
    def _admitted(self, key: ApiKey, scope: Scope, method: str) -> Iterator[None]:
        """The key's scope, rate and concurrency, held for the call; each refusal counted (and audited)."""
        try:
            self._keys.acquire(key, scope)
        except PermissionDenied as error:
            self._deny(key.principal, "scope", error.message, method)
            raise
        except RateLimited as error:
            self._deny(key.principal, "rate", error.message, method)
            raise
        except TooManyConcurrent as error:
            self._deny(key.principal, "concurrency", error.message, method)
            raise
        try:
            yield
        finally:
            self._keys.release(key)

    async def _within_deadline(
        self,
        context: grpc.aio.ServicerContext[Any, Any],
        serve: Callable[[Remaining], Awaitable[tuple[Response, Labels]]],
        deadlines: Deadlines | None,
    ) -> tuple[Response, Labels]:
        """Serve under the call's budget: the client's deadline cut to the maximum, or the default when
        it set none. Triton is called with what is left of it; the timeout here also bounds anything
        that would not honour it, so no call outlives its budget."""
        client = context.time_remaining()
        if deadlines is None:
            budget = self._admission.budget(client)
        else:
            budget = deadlines.default_s if client is None else min(client, deadlines.max_s)
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

"""Fuzzing every gRPC request message (issue 20, chaos suite), fast: the gateway's real gRPC layer
(``InferenceServicer``: authentication, admission, deadlines, validation, routing in the real
``InferenceCore``) and the deployment service's real ops API (``OpsServicer`` over a real
``DeploymentService`` with a local artifact store), each served by ``grpc.aio`` on a real socket and
called over a real channel. Only what lies behind them is a stand-in: a predictor that answers
instead of Triton, an inference log that keeps nothing. ``test_fuzz_grpc_live.py`` sends fewer
examples through the real gateway, Triton and Kafka. Generation (``Generate``, ``GenerateStream``)
runs the real ``GenerationCore`` on a stand-in for Triton's streaming causal-LM model; feedback
goes to a stand-in publisher.

Property: every call answers OK or a canonical refusal (INVALID_ARGUMENT, UNAUTHENTICATED,
RESOURCE_EXHAUSTED, UNAVAILABLE, DEADLINE_EXCEEDED, NOT_FOUND, FAILED_PRECONDITION; CANCELLED for a
stream its client cancelled) with a non-empty, printable message — never UNKNOWN or INTERNAL; a
stream that ends OK ends with a message carrying the finish reason and usage (and no message before
it does); and the server keeps serving: after every example its health check answers SERVING, a
valid Predict and Generate succeed and no admission slot is held."""

from __future__ import annotations

import asyncio
import tempfile
import time
from collections.abc import AsyncGenerator, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from llmops.inference.v1 import inference_pb2, inference_pb2_grpc
from llmops.ops.v1 import ops_pb2, ops_pb2_grpc
from llmops_config import PlatformSettings
from llmops_config.tls import add_server_port, aio_channel
from llmops_deployment.adapters.artifacts import Artifacts
from llmops_deployment.adapters.ops_server import OpsServicer
from llmops_deployment.adapters.triton import TritonControl
from llmops_deployment.handlers import DeploymentService
from llmops_deployment.settings import DeploymentSettings
from llmops_events.v1 import DeploymentPromoted, DeploymentRolledBack, FeedbackSubmitted
from llmops_gateway.adapters.grpc_api import SERVICE_NAME, Deadlines, InferenceServicer
from llmops_gateway.adapters.metrics import GatewayMetrics
from llmops_gateway.domain.admission import Admission
from llmops_gateway.domain.auth import ApiKeys
from llmops_gateway.domain.feedback import FeedbackLimits
from llmops_gateway.domain.generation import FINISH_REASONS, Chunk, GenerateItem, GenerationLimits, ServedGeneration
from llmops_gateway.domain.models import Prediction, ServedPrediction
from llmops_gateway.domain.validation import Limits
from llmops_gateway.handlers import GenerationCore, InferenceCore
from llmops_messaging import EventPublisher
from llmops_models.triton_repository import ModelRepository
from llmops_serving import ModelDeployment
from llmops_stack import free_port
from llmops_storage import ArtifactStore

from .grpc_harness import LoopThread, metadata, serving, status_of
from .strategies import (
    ascii_metadata,
    authorizations,
    batch_requests,
    check_answer,
    deadlines,
    describe,
    feedback_requests,
    generate_requests,
    ops_requests,
    predict_requests,
    proto_strings,
    tiny_deadlines,
)

EXAMPLES = {
    "predict": 300,
    "batch": 150,
    "generate": 200,
    "generate_stream": 200,
    "feedback": 150,
    "ops": 300,
    "ops_any_name": 100,
}
KEY = "fuzz-key-0123456789"
TEXT_LIMIT = 200
BATCH_LIMIT = 8
SERVED = "fuzz-served"  # champion v1, canary v2 at 50 %
GONE = "fuzz-gone"  # known, nothing live
MODELS = (SERVED, GONE)
CHAT = "fuzz-chat"  # causal_lm: champion v1, canary v2 at 50 %
CHAT_GONE = "fuzz-chat-gone"  # causal_lm, nothing live
BASE = "fuzz-base"  # the base model alone (the gateway's base alias)
GENERATE_MODELS = (CHAT, CHAT_GONE, BASE, SERVED)  # SERVED: a classifier, refused for Generate
GENERATION = GenerationLimits(
    max_messages=6, max_chars=TEXT_LIMIT, max_tokens=16, default_max_tokens=4, max_stop=4, max_stop_chars=16
)
FEEDBACK = FeedbackLimits(max_answer_chars=TEXT_LIMIT, max_comment_chars=2_000)
MOSTLY_AUTHORIZED = st.tuples(st.integers(0, 3), authorizations(KEY)).map(
    lambda pair: f"Bearer {KEY}" if pair[0] else pair[1]
)
"""Generation requests have many fields to get right: most calls carry the right key to reach them."""
CHUNK_GAP_S = 0.002
STREAM_ENDINGS = frozenset({grpc.StatusCode.CANCELLED})
"""Where a generation may also end: the client cancelled its stream."""
OPS_KNOWN = ("ops-champion", "ops-gone")
AUTH = (("authorization", f"Bearer {KEY}"),)

FUZZ = settings(
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
)


def fuzz(examples: str) -> settings:
    return settings(FUZZ, max_examples=EXAMPLES[examples])


# ---------------------------------------------------------------------------------------------
# The gateway's gRPC layer
# ---------------------------------------------------------------------------------------------


class StandInPredictor:
    """Answers instead of Triton: a fixed distribution per text, at once."""

    def __init__(self) -> None:
        self.texts = 0

    async def predict(
        self, model_name: str, version: int, texts: Sequence[str], *, timeout: float | None
    ) -> list[Prediction]:
        self.texts += len(texts)
        return [Prediction(label="lost_card", confidence=0.7, scores={"lost_card": 0.7, "card_arrival": 0.3})] * len(
            texts
        )


class StandInTritonGenerator:
    """Streams instead of Triton's causal-LM model: up to three short chunks (``max_tokens`` of
    them at most), a moment apart as a real stream's are (so tiny deadlines and cancelling clients
    land mid-stream), then a last chunk with the finish reason and token counts."""

    def __init__(self) -> None:
        self.generations = 0

    async def generate(self, *, adapter: str, item: GenerateItem, timeout: float | None) -> AsyncGenerator[Chunk, None]:
        self.generations += 1
        prompt_tokens = sum(len(turn.content.split()) + 1 for turn in item.messages)
        produced = min(3, item.max_tokens)
        for index in range(produced):
            await asyncio.sleep(CHUNK_GAP_S)
            yield Chunk("tok ", prompt_tokens=prompt_tokens, completion_tokens=index + 1)
        await asyncio.sleep(CHUNK_GAP_S)
        yield Chunk("", "length" if produced == item.max_tokens else "stop", prompt_tokens, produced)


class DiscardingInferenceLog:
    """Stand-in for the inference-log buffer: counts what would have been published."""

    def __init__(self) -> None:
        self.recorded = 0

    def record(self, served: ServedPrediction, *, latency_ms: float) -> None:
        self.recorded += 1

    def record_generation(self, served: ServedGeneration, *, latency_ms: float) -> None:
        self.recorded += 1


class DiscardingFeedbackPublisher:
    """Stand-in for the Kafka publisher of feedback events: counts them."""

    def __init__(self) -> None:
        self.published = 0

    async def publish(self, data: FeedbackSubmitted, *, id: str | None = None) -> object:
        self.published += 1
        return id


@dataclass
class Gateway:
    channel: grpc.aio.Channel
    stub: inference_pb2_grpc.InferenceServiceStub
    admission: Admission
    server: grpc.aio.Server


@pytest.fixture(scope="module")
def loop() -> Iterator[LoopThread]:
    thread = LoopThread()
    yield thread
    thread.close()


@pytest.fixture(scope="module")
def gateway(loop: LoopThread) -> Iterator[Gateway]:
    book = {
        SERVED: ModelDeployment(SERVED, champion_version=1, canary_version=2, canary_share=0.5),
        GONE: ModelDeployment(GONE),
        CHAT: ModelDeployment(CHAT, champion_version=1, canary_version=2, canary_share=0.5, kind="causal_lm"),
        CHAT_GONE: ModelDeployment(CHAT_GONE, kind="causal_lm"),
    }
    metrics = GatewayMetrics()
    log = DiscardingInferenceLog()
    admission = Admission(max_in_flight=64, default_deadline_s=10, max_deadline_s=30)
    core = InferenceCore(
        predictor=StandInPredictor(),
        log=log,
        lookup=book.get,
        known_models=lambda: list(book),
        default_model=SERVED,
        metrics=metrics,
    )
    generation = GenerationCore(
        generator=StandInTritonGenerator(),
        log=log,
        lookup=book.get,
        known_models=lambda: [name for name, deployment in book.items() if deployment.kind == "causal_lm"],
        default_model="",
        base_model_alias=BASE,
        metrics=metrics,
    )
    servicer = InferenceServicer(
        core=core,
        keys=ApiKeys(["another-key", KEY]),
        limits=Limits(max_text_chars=TEXT_LIMIT, max_batch_items=BATCH_LIMIT),
        admission=admission,
        metrics=metrics,
        generation=generation,
        generation_limits=GENERATION,
        generation_deadlines=Deadlines(default_s=10, max_s=30),
        feedback=DiscardingFeedbackPublisher(),
        feedback_limits=FEEDBACK,
    )

    async def start() -> Gateway:
        server = grpc.aio.server()
        inference_pb2_grpc.add_InferenceServiceServicer_to_server(servicer, server)
        health_servicer = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        await health_servicer.set(SERVICE_NAME, health_pb2.HealthCheckResponse.SERVING)
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
        return Gateway(channel, inference_pb2_grpc.InferenceServiceStub(channel), admission, server)

    running = loop.run(start())
    yield running

    async def stop() -> None:
        await running.channel.close()
        await running.server.stop(None)

    loop.run(stop())


def still_serving(loop: LoopThread, gateway: Gateway) -> None:
    """After an example: SERVING, a valid call answers, no admission slot is left held."""

    async def check() -> None:
        assert await serving(gateway.channel, SERVICE_NAME)
        answer = await gateway.stub.Predict(
            inference_pb2.PredictRequest(text="i lost my card", model=SERVED), metadata=AUTH, timeout=10
        )
        assert answer.model_name == SERVED and answer.label
        generated = await gateway.stub.Generate(
            inference_pb2.GenerateRequest(prompt="hello", model=CHAT), metadata=AUTH, timeout=10
        )
        assert generated.model_name == CHAT and generated.finish_reason in FINISH_REASONS

    loop.run(check())
    deadline = time.monotonic() + 5  # a call the client gave up on may still be finishing server-side
    while gateway.admission.in_flight and time.monotonic() < deadline:
        time.sleep(0.01)
    assert gateway.admission.in_flight == 0, "an admission slot was never released"


@fuzz("predict")
@given(
    request=predict_requests(MODELS, text_limit=TEXT_LIMIT, id_chars=100_000, huge_text=4_200_000),
    authorization=authorizations(KEY),
    timeout=deadlines,
)
def test_every_predict_request_gets_a_canonical_answer(
    loop: LoopThread, gateway: Gateway, request: inference_pb2.PredictRequest, authorization: str | None, timeout: float
) -> None:
    code, details, response = loop.run(
        status_of(
            lambda: gateway.stub.Predict(request, metadata=metadata(authorization=authorization), timeout=timeout)
        )
    )
    event(f"Predict: {code.name}")
    check_answer(code, details, lambda: f"Predict({describe(request)})")
    if code is grpc.StatusCode.OK:
        assert response.label and response.request_id
    still_serving(loop, gateway)


@fuzz("batch")
@given(
    request=batch_requests(MODELS, text_limit=TEXT_LIMIT, id_chars=10_000, batch_limit=BATCH_LIMIT),
    authorization=authorizations(KEY),
    timeout=deadlines,
)
def test_every_batch_request_gets_a_canonical_answer(
    loop: LoopThread,
    gateway: Gateway,
    request: inference_pb2.PredictBatchRequest,
    authorization: str | None,
    timeout: float,
) -> None:
    code, details, response = loop.run(
        status_of(
            lambda: gateway.stub.PredictBatch(request, metadata=metadata(authorization=authorization), timeout=timeout)
        )
    )
    event(f"PredictBatch: {code.name}")
    check_answer(code, details, lambda: f"PredictBatch({describe(request)})")
    if code is grpc.StatusCode.OK:
        assert len(response.items) == len(request.items)
    still_serving(loop, gateway)


def test_a_huge_unknown_model_name_is_refused_as_invalid_argument(loop: LoopThread, gateway: Gateway) -> None:
    """Found by this fuzzing, fixed: the gateway repeats the requested model name in its
    INVALID_ARGUMENT message, unbounded (``unknown model '...'``); past gRPC's metadata limit (8 KiB
    soft, 16 KiB hard) the client never receives that verdict and reports RESOURCE_EXHAUSTED
    ("received metadata size exceeds hard limit"). Model names are now bounded too (#17): the
    message names the length, never the name."""
    request = inference_pb2.PredictRequest(text="hello", model="x" * 20_000)
    code, details, _ = loop.run(status_of(lambda: gateway.stub.Predict(request, metadata=AUTH, timeout=10)))
    assert code is grpc.StatusCode.INVALID_ARGUMENT, f"{code.name}: {details}"
    assert details == "model has 20000 characters; the limit is 128"
    still_serving(loop, gateway)


def generate_requests_of(message: type[Any]) -> Any:
    return generate_requests(
        message,
        GENERATE_MODELS,
        servable=(CHAT, BASE),
        content_limit=TEXT_LIMIT,
        max_messages=GENERATION.max_messages,
        max_tokens=GENERATION.max_tokens,
        max_stop=GENERATION.max_stop,
        max_stop_chars=GENERATION.max_stop_chars,
        id_chars=10_000,
    )


def check_final(last: Any, what: str) -> None:
    """The last message of a finished generation: a finish reason and the usage."""
    assert last.finish_reason in FINISH_REASONS, f"{what} ended with finish reason {last.finish_reason!r}"
    assert last.HasField("usage"), f"{what} ended without usage"
    assert last.usage.completion_tokens >= 0 and last.usage.prompt_tokens >= 0


@fuzz("generate")
@given(
    request=generate_requests_of(inference_pb2.GenerateRequest),
    authorization=MOSTLY_AUTHORIZED,
    timeout=tiny_deadlines,
)
def test_every_generate_request_gets_a_canonical_answer(
    loop: LoopThread,
    gateway: Gateway,
    request: inference_pb2.GenerateRequest,
    authorization: str | None,
    timeout: float,
) -> None:
    code, details, response = loop.run(
        status_of(
            lambda: gateway.stub.Generate(request, metadata=metadata(authorization=authorization), timeout=timeout)
        )
    )
    event(f"Generate: {code.name}")
    check_answer(code, details, lambda: f"Generate({describe(request)})")
    if code is grpc.StatusCode.OK:
        check_final(response, "Generate")
        assert response.request_id and response.model_name
    still_serving(loop, gateway)


async def consume_stream(
    gateway: Gateway,
    request: inference_pb2.GenerateStreamRequest,
    authorization: str | None,
    timeout: float | None,
    cancel_after: int | None,
) -> tuple[grpc.StatusCode, str, list[inference_pb2.GenerateStreamResponse]]:
    """Every message of the stream (or the first ``cancel_after``, then the client cancels) and how
    the call ended."""
    call = gateway.stub.GenerateStream(request, metadata=metadata(authorization=authorization), timeout=timeout)
    received: list[inference_pb2.GenerateStreamResponse] = []
    try:
        async for message in call:
            received.append(message)
            if cancel_after is not None and len(received) >= cancel_after:
                call.cancel()
                break
    except grpc.aio.AioRpcError as error:
        return error.code(), error.details() or "", received
    if call.cancelled():
        return grpc.StatusCode.CANCELLED, "cancelled by the client", received
    return await call.code(), await call.details() or "", received


@fuzz("generate_stream")
@given(
    request=generate_requests_of(inference_pb2.GenerateStreamRequest),
    authorization=MOSTLY_AUTHORIZED,
    timeout=tiny_deadlines,
    cancel_after=st.one_of(st.none(), st.none(), st.integers(1, 3)),
)
def test_every_generate_stream_request_ends_with_a_final_message_or_a_canonical_status(
    loop: LoopThread,
    gateway: Gateway,
    request: inference_pb2.GenerateStreamRequest,
    authorization: str | None,
    timeout: float,
    cancel_after: int | None,
) -> None:
    code, details, received = loop.run(consume_stream(gateway, request, authorization, timeout, cancel_after))
    event(f"GenerateStream: {code.name}")
    check_answer(code, details, lambda: f"GenerateStream({describe(request)})", also=STREAM_ENDINGS)
    for message in received[:-1]:
        assert not message.finish_reason and not message.HasField("usage"), f"a finish before the end: {message}"
    if code is grpc.StatusCode.OK:
        assert received, "GenerateStream answered OK with no message"
        check_final(received[-1], "GenerateStream")
        assert {message.model_name for message in received} == {received[-1].model_name}
    still_serving(loop, gateway)


@fuzz("feedback")
@given(request=feedback_requests(id_chars=10_000, answer_chars=TEXT_LIMIT), authorization=MOSTLY_AUTHORIZED)
def test_every_feedback_request_gets_a_canonical_answer(
    loop: LoopThread, gateway: Gateway, request: inference_pb2.SubmitFeedbackRequest, authorization: str | None
) -> None:
    code, details, response = loop.run(
        status_of(lambda: gateway.stub.SubmitFeedback(request, metadata=metadata(authorization=authorization)))
    )
    event(f"SubmitFeedback: {code.name}")
    check_answer(code, details, lambda: f"SubmitFeedback({describe(request)})")
    if code is grpc.StatusCode.OK:
        assert response.event_id
    still_serving(loop, gateway)


def test_a_huge_unknown_role_is_refused_as_invalid_argument(loop: LoopThread, gateway: Gateway) -> None:
    """Found by this fuzzing, fixed: the gateway repeated an unknown chat role in its
    INVALID_ARGUMENT message unbounded (``messages[0].role is '...'``); past gRPC's metadata limit
    the client never receives that verdict and reports RESOURCE_EXHAUSTED ("received metadata size
    exceeds hard limit")."""
    chat = [inference_pb2.ChatMessage(role="x" * 20_000, content="hello")]
    request = inference_pb2.GenerateRequest(messages=chat, model=CHAT)
    code, details, _ = loop.run(status_of(lambda: gateway.stub.Generate(request, metadata=AUTH, timeout=10)))
    assert code is grpc.StatusCode.INVALID_ARGUMENT, f"Generate: {code.name}: {details[:200]}"
    assert "role" in details and len(details) <= 500
    streamed = inference_pb2.GenerateStreamRequest(messages=chat, model=CHAT)
    code, details, _ = loop.run(consume_stream(gateway, streamed, f"Bearer {KEY}", 10, None))
    assert code is grpc.StatusCode.INVALID_ARGUMENT, f"GenerateStream: {code.name}: {details[:200]}"
    assert "role" in details and len(details) <= 500
    still_serving(loop, gateway)


# ---------------------------------------------------------------------------------------------
# The ops API, on the real deployment service
# ---------------------------------------------------------------------------------------------


@dataclass
class Ops:
    channel: grpc.aio.Channel
    stub: ops_pb2_grpc.OpsServiceStub
    server: grpc.aio.Server
    triton: TritonControl


@pytest.fixture(scope="module")
def ops(loop: LoopThread) -> Iterator[Ops]:
    """The real ``DeploymentService`` behind the real ``OpsServicer``: an empty local artifact store,
    Triton and Kafka addresses where nothing listens (no request here gets as far as either), and the
    state of two models folded in: ``ops-champion`` (v1 serving) and ``ops-gone`` (rolled back to nothing)."""
    with tempfile.TemporaryDirectory(prefix="fuzz-ops-") as folder:
        platform = PlatformSettings(
            var_dir=Path(folder),
            kafka_bootstrap_servers=f"127.0.0.1:{free_port()}",
            triton_grpc_port=free_port(),
            triton_metrics_port=free_port(),
        )
        settings = DeploymentSettings(platform=platform, metrics_port=0)

        async def start() -> Ops:
            triton = TritonControl(platform.triton_grpc_url, platform.triton_metrics_url)
            service = DeploymentService(
                settings=settings,
                artifacts=Artifacts(
                    ArtifactStore(platform.resolved_artifact_store_uri), ModelRepository(platform.model_repository)
                ),
                triton=triton,
                publisher=EventPublisher(platform, service="fuzz-ops"),  # never started: nothing may publish
            )
            service.replay(DeploymentPromoted(model_name="ops-champion", model_version=1))
            service.replay(DeploymentPromoted(model_name="ops-gone", model_version=1))
            service.replay(DeploymentRolledBack(model_name="ops-gone", model_version=1, restored_version=None))
            server = grpc.aio.server()
            ops_pb2_grpc.add_OpsServiceServicer_to_server(OpsServicer(service), server)
            health_servicer = health.aio.HealthServicer()
            health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
            # Mutual TLS as the deployment service serves it; the session's operator certificate is an admin's.
            port = add_server_port(server, "127.0.0.1:0", platform, require_client_cert=True, name="fuzzed ops API")
            await server.start()
            await health_servicer.set("", health_pb2.HealthCheckResponse.SERVING)
            channel = aio_channel(platform, f"127.0.0.1:{port}", client_cert=True)
            return Ops(channel, ops_pb2_grpc.OpsServiceStub(channel), server, triton)

        running = loop.run(start())
        yield running

        async def stop() -> None:
            await running.channel.close()
            await running.server.stop(None)
            await running.triton.close()

        loop.run(stop())


def ops_still_serving(loop: LoopThread, ops: Ops) -> None:
    async def check() -> None:
        assert await serving(ops.channel)
        answer = await ops.stub.GetStatus(ops_pb2.GetStatusRequest(), timeout=10)
        assert {status.model_name for status in answer.models} == set(OPS_KNOWN)

    loop.run(check())


def call_ops(loop: LoopThread, ops: Ops, method: str, request: Any, operator: str | None) -> None:
    code, details, _ = loop.run(
        status_of(lambda: getattr(ops.stub, method)(request, metadata=metadata(x_operator=operator), timeout=30))
    )
    event(f"{method}: {code.name}")
    check_answer(code, details, lambda: f"{method}({describe(request)})")
    ops_still_serving(loop, ops)


@fuzz("ops")
@given(call=ops_requests(OPS_KNOWN), operator=st.one_of(st.none(), ascii_metadata))
def test_every_ops_request_gets_a_canonical_answer(
    loop: LoopThread, ops: Ops, call: tuple[str, Any], operator: str | None
) -> None:
    method, request = call
    call_ops(loop, ops, method, request, operator)


@fuzz("ops_any_name")
@given(
    call=ops_requests(OPS_KNOWN, names=proto_strings(max_size=500), methods=("Promote", "Rollback")),
    operator=st.none(),
)
def test_promote_and_rollback_of_any_model_name_get_a_canonical_answer(
    loop: LoopThread, ops: Ops, call: tuple[str, Any], operator: str | None
) -> None:
    """Found by this fuzzing, fixed: Promote and Rollback of a model name the artifact layout
    refuses ('a/b', '..', 'é') answer INTERNAL "internal error: InvalidName":
    ``DeploymentService._require_model`` asks the registry, whose ``model_path`` raises
    ``llmops_models.InvalidName``, which the ops API does not map (INVALID_ARGUMENT or NOT_FOUND
    would be right)."""
    method, request = call
    call_ops(loop, ops, method, request, operator)


def test_a_huge_unknown_model_name_is_not_found(loop: LoopThread, ops: Ops) -> None:
    """Found by this fuzzing, fixed: the ops API repeats the requested model name in its
    NOT_FOUND message, unbounded; past gRPC's metadata limit the client reports RESOURCE_EXHAUSTED
    instead of the verdict."""
    code, details, _ = loop.run(
        status_of(lambda: ops.stub.GetStatus(ops_pb2.GetStatusRequest(model="x" * 20_000), timeout=10))
    )
    assert code is grpc.StatusCode.NOT_FOUND, f"{code.name}: {details}"


def test_the_ops_fixture_state_is_what_the_fuzzing_assumes(loop: LoopThread, ops: Ops) -> None:
    """Guards the fuzzing above: a known model and a canary-less one, so Promote and Rollback reach
    their refusals (FAILED_PRECONDITION, NOT_FOUND) without publishing or calling Triton."""
    code, details, _ = loop.run(
        status_of(lambda: ops.stub.Promote(ops_pb2.PromoteRequest(model="ops-champion"), timeout=10))
    )
    assert code is grpc.StatusCode.FAILED_PRECONDITION and "no canary" in details
    code, details, _ = loop.run(
        status_of(lambda: ops.stub.Rollback(ops_pb2.RollbackRequest(model="ops-gone", version=7), timeout=10))
    )
    assert code is grpc.StatusCode.NOT_FOUND and "no artifacts" in details

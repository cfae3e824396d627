"""Fuzzing every gRPC request message (issue 20, chaos suite), fast: the gateway's real gRPC layer
(``InferenceServicer``: authentication, admission, deadlines, validation, routing in the real
``InferenceCore``) and the deployment service's real ops API (``OpsServicer`` over a real
``DeploymentService`` with a local artifact store), each served by ``grpc.aio`` on a real socket and
called over a real channel. Only what lies behind them is a stand-in: a predictor that answers
instead of Triton, an inference log that keeps nothing. ``test_fuzz_grpc_live.py`` sends fewer
examples through the real gateway, Triton and Kafka.

Property: every call answers OK or a canonical refusal (INVALID_ARGUMENT, UNAUTHENTICATED,
RESOURCE_EXHAUSTED, UNAVAILABLE, DEADLINE_EXCEEDED, NOT_FOUND, FAILED_PRECONDITION) with a
non-empty, printable message — never UNKNOWN or INTERNAL — and the server keeps serving: after
every example its health check answers SERVING, a valid call succeeds and no admission slot is held."""

from __future__ import annotations

import tempfile
import time
from collections.abc import Iterator, Sequence
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
from llmops_deployment.adapters.artifacts import Artifacts
from llmops_deployment.adapters.ops_server import OpsServicer
from llmops_deployment.adapters.triton import TritonControl
from llmops_deployment.handlers import DeploymentService
from llmops_deployment.settings import DeploymentSettings
from llmops_events.v1 import DeploymentPromoted, DeploymentRolledBack
from llmops_gateway.adapters.grpc_api import SERVICE_NAME, InferenceServicer
from llmops_gateway.adapters.metrics import GatewayMetrics
from llmops_gateway.domain.admission import Admission
from llmops_gateway.domain.auth import ApiKeys
from llmops_gateway.domain.models import Prediction, ServedPrediction
from llmops_gateway.domain.validation import Limits
from llmops_gateway.handlers import InferenceCore
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
    ops_requests,
    predict_requests,
    proto_strings,
)

EXAMPLES = {"predict": 300, "batch": 150, "ops": 300, "ops_any_name": 100}
KEY = "fuzz-key-0123456789"
TEXT_LIMIT = 200
BATCH_LIMIT = 8
SERVED = "fuzz-served"  # champion v1, canary v2 at 50 %
GONE = "fuzz-gone"  # known, nothing live
MODELS = (SERVED, GONE)
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


class DiscardingInferenceLog:
    """Stand-in for the inference-log buffer: counts what would have been published."""

    def __init__(self) -> None:
        self.recorded = 0

    def record(self, served: ServedPrediction, *, latency_ms: float) -> None:
        self.recorded += 1


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
    }
    metrics = GatewayMetrics()
    admission = Admission(max_in_flight=64, default_deadline_s=10, max_deadline_s=30)
    core = InferenceCore(
        predictor=StandInPredictor(),
        log=DiscardingInferenceLog(),
        lookup=book.get,
        known_models=lambda: list(book),
        default_model=SERVED,
        metrics=metrics,
    )
    servicer = InferenceServicer(
        core=core,
        keys=ApiKeys(["another-key", KEY]),
        limits=Limits(max_text_chars=TEXT_LIMIT, max_batch_items=BATCH_LIMIT),
        admission=admission,
        metrics=metrics,
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
    ("received metadata size exceeds hard limit")."""
    request = inference_pb2.PredictRequest(text="hello", model="x" * 20_000)
    code, details, _ = loop.run(status_of(lambda: gateway.stub.Predict(request, metadata=AUTH, timeout=10)))
    assert code is grpc.StatusCode.INVALID_ARGUMENT, f"{code.name}: {details}"
    assert "unknown model" in details
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
            port = server.add_insecure_port("127.0.0.1:0")
            await server.start()
            await health_servicer.set("", health_pb2.HealthCheckResponse.SERVING)
            channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
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

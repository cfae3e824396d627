"""Fuzzing the real gRPC servers end to end (issue 20, chaos suite): the gateway (``GatewayRuntime``,
in-process, with the session's Kafka broker and the tiny model deployed on the session's Triton)
and the deployment service's ops API (``DeploymentRuntime`` on the same broker and Triton), called
over real sockets. Fewer examples than ``test_fuzz_grpc.py`` (every valid call reaches Triton), same
property: OK or a canonical refusal with a readable message, never UNKNOWN or INTERNAL, and the
server keeps serving. The ops fuzzing acts only on models without artifacts, so no request can
deploy anything; a test at the end checks that their state did not change."""

from __future__ import annotations

import asyncio
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
import tritonclient.grpc as grpcclient
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from llmops.inference.v1 import inference_pb2, inference_pb2_grpc
from llmops.ops.v1 import ops_pb2, ops_pb2_grpc
from llmops_config import PlatformSettings
from llmops_config.tls import aio_channel
from llmops_deployment.main import DeploymentRuntime
from llmops_deployment.settings import DeploymentSettings
from llmops_events.v1 import DeploymentPromoted, DeploymentRolledBack
from llmops_gateway.adapters.grpc_api import SERVICE_NAME
from llmops_gateway.main import GatewayRuntime
from llmops_gateway.settings import GatewaySettings
from llmops_messaging import EventPublisher
from llmops_models.kinds import ServingOptions
from llmops_models.triton_repository import ModelRepository
from llmops_privacy import Redactor
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
)

pytestmark = pytest.mark.integration

EXAMPLES = {"predict": 60, "batch": 30, "ops": 60}
KEY = "fuzz-live-key-0123456789"
AUTH = (("authorization", f"Bearer {KEY}"),)
TEXT_LIMIT = 200
BATCH_LIMIT = 8
SUFFIX = uuid.uuid4().hex[:8]
LIVE = f"fuzz-live-{SUFFIX}"  # the tiny model, champion v1 on Triton
GONE = f"fuzz-gone-{SUFFIX}"  # known, nothing live
OPS_MODEL = f"fuzz-ops-{SUFFIX}"  # managed by the deployment runtime under fuzz; no artifacts

FUZZ = settings(
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
)


def fuzz(examples: str) -> settings:
    return settings(FUZZ, max_examples=EXAMPLES[examples])


@pytest.fixture(scope="module")
def loop() -> Iterator[LoopThread]:
    thread = LoopThread("fuzz-live")
    yield thread
    thread.close()


@pytest.fixture(scope="module")
def deployed(
    kafka_settings: PlatformSettings, triton_settings: PlatformSettings, tiny_model: Any, loop: LoopThread
) -> Iterator[PlatformSettings]:
    """The tiny model loaded on Triton as ``LIVE`` v1 and announced as its champion; ``GONE`` and
    ``OPS_MODEL`` announced as rolled back to nothing."""
    store = ArtifactStore(triton_settings.resolved_artifact_store_uri)
    repository = ModelRepository(triton_settings.model_repository)
    client = grpcclient.InferenceServerClient(triton_settings.triton_grpc_url)
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch) / "model"
        store.download_folder(f"models/{tiny_model.model_name}/{tiny_model.model_version}", folder)
        name = repository.write(LIVE, 1, folder, ServingOptions(max_queue_delay_us=500))
    client.load_model(name)

    async def announce() -> None:
        async with EventPublisher(kafka_settings, service="fuzz-live") as publisher:
            await publisher.publish(DeploymentPromoted(model_name=LIVE, model_version=1))
            for model in (GONE, OPS_MODEL):
                await publisher.publish(DeploymentPromoted(model_name=model, model_version=1))
                await publisher.publish(DeploymentRolledBack(model_name=model, model_version=1, restored_version=None))

    loop.run(announce())
    try:
        yield triton_settings
    finally:
        client.unload_model(name)


@dataclass
class LiveGateway:
    runtime: GatewayRuntime
    channel: grpc.aio.Channel
    stub: inference_pb2_grpc.InferenceServiceStub


@pytest.fixture(scope="module")
def gateway(deployed: PlatformSettings, redactor: Redactor, loop: LoopThread) -> Iterator[LiveGateway]:
    settings = GatewaySettings(
        platform=deployed,
        api_keys=[KEY],
        default_model=LIVE,
        max_text_chars=TEXT_LIMIT,
        max_batch_items=BATCH_LIMIT,
        metrics_port=0,
        host="127.0.0.1",
    )

    async def start() -> LiveGateway:
        runtime = GatewayRuntime(settings, redactor=redactor, port=0)
        await runtime.start()
        deadline = time.monotonic() + 30
        while runtime.feed.get(LIVE) is None and time.monotonic() < deadline:  # the announcement is read
            await asyncio.sleep(0.1)
        channel = aio_channel(settings.platform, f"127.0.0.1:{runtime.port}")
        return LiveGateway(runtime, channel, inference_pb2_grpc.InferenceServiceStub(channel))

    running = loop.run(start())
    try:
        yield running
    finally:

        async def stop() -> None:
            await running.channel.close()
            await running.runtime.stop()

        loop.run(stop())


def _in_flight(runtime: GatewayRuntime) -> float:
    return runtime.metrics.registry.get_sample_value("llmops_gateway_in_flight") or 0.0


def gateway_still_serving(loop: LoopThread, gateway: LiveGateway) -> None:
    async def check() -> None:
        assert await serving(gateway.channel, SERVICE_NAME)
        answer = await gateway.stub.Predict(
            inference_pb2.PredictRequest(text="i lost my card", model=LIVE), metadata=AUTH, timeout=30
        )
        assert answer.model_name == LIVE and answer.model_version == 1 and answer.label

    loop.run(check())
    deadline = time.monotonic() + 10  # a call the client gave up on may still be finishing server-side
    while _in_flight(gateway.runtime) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert _in_flight(gateway.runtime) == 0, "a call is still counted in flight"


@fuzz("predict")
@given(
    request=predict_requests((LIVE, GONE), text_limit=TEXT_LIMIT, id_chars=5_000),
    authorization=authorizations(KEY),
    timeout=deadlines,
)
def test_the_live_gateway_answers_every_predict_canonically(
    loop: LoopThread, gateway: LiveGateway, request: Any, authorization: str | None, timeout: float | None
) -> None:
    code, details, response = loop.run(
        status_of(
            lambda: gateway.stub.Predict(request, metadata=metadata(authorization=authorization), timeout=timeout)
        )
    )
    event(f"Predict: {code.name}")
    check_answer(code, details, lambda: f"Predict({describe(request)})")
    if code is grpc.StatusCode.OK:
        assert response.model_name == LIVE and response.label and 0 <= response.confidence <= 1
    gateway_still_serving(loop, gateway)


@fuzz("batch")
@given(
    request=batch_requests((LIVE, GONE), text_limit=TEXT_LIMIT, id_chars=2_000, batch_limit=BATCH_LIMIT),
    authorization=authorizations(KEY),
    timeout=deadlines,
)
def test_the_live_gateway_answers_every_batch_canonically(
    loop: LoopThread, gateway: LiveGateway, request: Any, authorization: str | None, timeout: float | None
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
    gateway_still_serving(loop, gateway)


# ---------------------------------------------------------------------------------------------
# The ops API of a real DeploymentRuntime
# ---------------------------------------------------------------------------------------------


@dataclass
class LiveOps:
    runtime: DeploymentRuntime
    channel: grpc.aio.Channel
    stub: ops_pb2_grpc.OpsServiceStub


@pytest.fixture(scope="module")
def ops(deployed: PlatformSettings, loop: LoopThread, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveOps]:
    """The deployment service on the session's broker and Triton, managing ``OPS_MODEL`` only, with
    an artifact store of its own (empty: nothing can be deployed)."""
    platform = deployed.model_copy(
        update={"var_dir": tmp_path_factory.mktemp("fuzz-ops-var"), "artifact_store_uri": "", "ops_port": free_port()}
    )
    settings = DeploymentSettings(
        platform=platform, group_id=f"fuzz-ops-{SUFFIX}", model_names=[OPS_MODEL], metrics_port=0
    )

    async def start() -> LiveOps:
        runtime = DeploymentRuntime(settings)
        await runtime.open()
        await runtime.begin()
        channel = aio_channel(platform, f"127.0.0.1:{platform.ops_port}", client_cert=True)
        return LiveOps(runtime, channel, ops_pb2_grpc.OpsServiceStub(channel))

    running = loop.run(start())
    try:
        yield running
    finally:

        async def stop() -> None:
            await running.channel.close()
            await running.runtime.close()

        loop.run(stop())


def ops_still_serving(loop: LoopThread, ops: LiveOps) -> None:
    async def check() -> None:
        assert await serving(ops.channel)
        answer = await ops.stub.GetStatus(ops_pb2.GetStatusRequest(model=OPS_MODEL), timeout=30)
        assert [status.model_name for status in answer.models] == [OPS_MODEL]

    loop.run(check())


@fuzz("ops")
@given(call=ops_requests((OPS_MODEL, GONE)), operator=st.one_of(st.none(), ascii_metadata))
def test_the_live_ops_api_answers_every_request_canonically(
    loop: LoopThread, ops: LiveOps, call: tuple[str, Any], operator: str | None
) -> None:
    method, request = call
    code, details, _ = loop.run(
        status_of(lambda: getattr(ops.stub, method)(request, metadata=metadata(x_operator=operator), timeout=60))
    )
    event(f"{method}: {code.name}")
    check_answer(code, details, lambda: f"{method}({describe(request)})")
    ops_still_serving(loop, ops)


def test_the_ops_fuzzing_changed_no_deployment(loop: LoopThread, ops: LiveOps) -> None:
    """Runs after the fuzzing (file order): the models it acted on are as announced."""
    assert ops.runtime.service is not None
    for model in (OPS_MODEL, GONE):
        state = ops.runtime.service.state(model)
        assert (state.champion_version, state.canary_version, state.pending_version) == (None, None, None), state

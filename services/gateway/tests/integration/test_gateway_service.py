"""The gateway in-process against the real Kafka broker and the real tritonserver, called over a
real gRPC channel: every status code, the inference log of each served request, champion/canary
routing from the deployments topic, health checking, reflection, and grpcurl as an outside client."""

from __future__ import annotations

import asyncio
import json
import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
import tritonclient.grpc as grpcclient
from aiokafka import AIOKafkaConsumer
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from llmops.inference.v1 import inference_pb2, inference_pb2_grpc
from llmops_config import PlatformSettings
from llmops_config.kafka import kafka_client_options
from llmops_config.tls import aio_channel, tls_files
from llmops_events import KafkaRecord, decode
from llmops_events.topics import INFERENCE
from llmops_events.v1 import DeploymentCanaryStarted, DeploymentPromoted, DeploymentRolledBack, InferenceLogged
from llmops_gateway.adapters.grpc_api import SERVICE_NAME
from llmops_gateway.main import GatewayRuntime
from llmops_gateway.settings import GatewaySettings
from llmops_messaging import EventPublisher
from llmops_messaging.admin import topic_partitions
from llmops_models.kinds import ServingOptions
from llmops_models.triton_repository import ModelRepository
from llmops_privacy import Redactor
from llmops_serving import choose_route
from llmops_storage import ArtifactStore

pytestmark = pytest.mark.integration

KEY = "test-key-0123456789"
AUTH = (("authorization", f"Bearer {KEY}"),)
SUFFIX = uuid.uuid4().hex[:8]
SERVED = f"gw-served-{SUFFIX}"  # champion v1 and canary v2 (50 %) on Triton
GONE = f"gw-gone-{SUFFIX}"  # promoted, then rolled back to nothing: known, nothing live
REPO_ROOT = Path(__file__).resolve().parents[4]


@pytest.fixture(scope="module")
def deployed(triton_settings: PlatformSettings, tiny_model: Any) -> Iterator[PlatformSettings]:
    """The tiny model written twice (versions 1 and 2 of ``SERVED``) and loaded on Triton."""
    store = ArtifactStore(triton_settings.resolved_artifact_store_uri)
    repository = ModelRepository(triton_settings.model_repository)
    client = grpcclient.InferenceServerClient(triton_settings.triton_grpc_url)
    names = []
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch) / "model"
        store.download_folder(f"models/{tiny_model.model_name}/{tiny_model.model_version}", folder)
        for version in (1, 2):
            names.append(repository.write(SERVED, version, folder, ServingOptions(max_queue_delay_us=500)))
    for name in names:
        client.load_model(name)
    try:
        yield triton_settings
    finally:
        for name in names:
            client.unload_model(name)


@pytest.fixture(scope="module")
async def gateway(
    deployed: PlatformSettings, kafka_settings: PlatformSettings, redactor: Redactor
) -> AsyncIterator[GatewayRuntime]:
    async with EventPublisher(kafka_settings, service="gateway-test") as publisher:
        await publisher.publish(
            DeploymentCanaryStarted(model_name=SERVED, model_version=2, champion_version=1, traffic_share=0.5)
        )
        await publisher.publish(DeploymentPromoted(model_name=GONE, model_version=1))
        await publisher.publish(DeploymentRolledBack(model_name=GONE, model_version=1, restored_version=None))
    settings = GatewaySettings(
        platform=deployed,
        api_keys=["another-key", KEY],
        default_model=SERVED,
        max_text_chars=200,
        max_batch_items=4,
        metrics_port=0,
        host="127.0.0.1",
    )
    async with GatewayRuntime(settings, redactor=redactor, port=0) as runtime:
        yield runtime


@pytest.fixture
async def channel(gateway: GatewayRuntime) -> AsyncIterator[grpc.aio.Channel]:
    async with aio_channel(gateway.settings.platform, f"127.0.0.1:{gateway.port}") as channel:
        yield channel


def _stub(channel: grpc.aio.Channel) -> inference_pb2_grpc.InferenceServiceStub:
    return inference_pb2_grpc.InferenceServiceStub(channel)


async def _status_of(call: Any) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await call
    return raised.value.code(), raised.value.details() or ""


async def _logged(
    settings: PlatformSettings, request_ids: set[str], *, timeout: float = 60
) -> dict[str, InferenceLogged]:
    """The inference.logged events of ``request_ids`` (waits until all arrived)."""
    from aiokafka import TopicPartition

    partitions = [
        TopicPartition(INFERENCE, p)
        for p in await topic_partitions(kafka_client_options(settings, service="test"), INFERENCE)
    ]
    consumer = AIOKafkaConsumer(
        **kafka_client_options(settings, service="test").aiokafka(),
        group_id=f"reader-{uuid.uuid4().hex}",
        enable_auto_commit=False,
    )
    await consumer.start()
    found: dict[str, InferenceLogged] = {}
    try:
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        async with asyncio.timeout(timeout):
            while not request_ids <= set(found):
                for records in (await consumer.getmany(timeout_ms=300)).values():
                    for m in records:
                        data = decode(KafkaRecord(m.key, m.value or b"", tuple(m.headers or ()))).data
                        if isinstance(data, InferenceLogged):
                            found[data.request_id] = data
    finally:
        await consumer.stop()
    return found


async def test_predict_serves_and_logs_redacted(gateway: GatewayRuntime, channel: grpc.aio.Channel) -> None:
    request_id = f"ok-{uuid.uuid4().hex}"
    text = "my card was stolen, call me on +44 20 7946 0018 or mail jane.doe@example.com"
    response = await _stub(channel).Predict(
        inference_pb2.PredictRequest(text=text, model=SERVED, tenant="acme", request_id=request_id),
        metadata=AUTH,
        timeout=30,
    )
    assert response.request_id == request_id and response.model_name == SERVED
    expected = choose_route(gateway.feed.get(SERVED), request_id)  # type: ignore[arg-type]
    assert expected is not None and response.model_version == expected.version
    assert response.label == "lost_card"
    assert set(response.scores) == {"card_arrival", "exchange_rate", "lost_card"}
    assert response.confidence == pytest.approx(max(response.scores.values()), abs=1e-5)

    # The default model answers a request that names none; a generated request id comes back.
    default = await _stub(channel).Predict(
        inference_pb2.PredictRequest(text="where is my new card"), metadata=AUTH, timeout=30
    )
    assert default.model_name == SERVED and len(default.request_id) == 36

    logged = await _logged(gateway.settings.platform, {request_id, default.request_id})
    event = logged[request_id]
    assert event.tenant == "acme" and event.model_name == SERVED and event.model_version == response.model_version
    assert event.label == "lost_card" and event.route == expected.role and event.latency_ms > 0
    assert "+44 20 7946 0018" not in event.text and "jane.doe@example.com" not in event.text
    assert "<PHONE>" in event.text and event.text.startswith("my card was stolen")
    assert event.scores == pytest.approx(dict(response.scores), abs=1e-6)
    assert logged[default.request_id].tenant == "default"


async def test_batch_answers_in_order_with_one_log_per_item(gateway: GatewayRuntime, channel: grpc.aio.Channel) -> None:
    texts = ["i lost my card", "what exchange rate do you use", "where is my new card", "my card was stolen"]
    ids = [f"batch-{uuid.uuid4().hex}" for _ in texts]
    response = await _stub(channel).PredictBatch(
        inference_pb2.PredictBatchRequest(
            items=[
                inference_pb2.PredictRequest(text=t, model=SERVED, request_id=i)
                for t, i in zip(texts, ids, strict=True)
            ]
        ),
        metadata=AUTH,
        timeout=30,
    )
    assert [item.request_id for item in response.items] == ids
    assert [item.label for item in response.items] == ["lost_card", "exchange_rate", "card_arrival", "lost_card"]
    logged = await _logged(gateway.settings.platform, set(ids))
    assert {logged[i].label for i in ids} == {"lost_card", "exchange_rate", "card_arrival"}


async def test_unauthenticated_calls_are_refused_and_never_served(
    gateway: GatewayRuntime, channel: grpc.aio.Channel
) -> None:
    served_before = _predictions(gateway)
    ids = []
    for metadata in [None, (("authorization", "Bearer wrong-key"),), (("authorization", KEY),)]:
        request_id = f"unauth-{uuid.uuid4().hex}"
        ids.append(request_id)
        code, message = await _status_of(
            _stub(channel).Predict(
                inference_pb2.PredictRequest(text="i lost my card", model=SERVED, request_id=request_id),
                metadata=metadata,
                timeout=30,
            )
        )
        assert code == grpc.StatusCode.UNAUTHENTICATED, message
    code, _ = await _status_of(
        _stub(channel).PredictBatch(
            inference_pb2.PredictBatchRequest(items=[inference_pb2.PredictRequest(text="x", model=SERVED)]), timeout=30
        )
    )
    assert code == grpc.StatusCode.UNAUTHENTICATED
    assert _predictions(gateway) == served_before
    # A served request published after them is read back; none of the refused ones was logged.
    marker = f"after-unauth-{uuid.uuid4().hex}"
    await _stub(channel).Predict(
        inference_pb2.PredictRequest(text="hi", model=SERVED, request_id=marker), metadata=AUTH
    )
    logged = await _logged(gateway.settings.platform, {marker})
    assert not set(ids) & set(logged)


def _predictions(gateway: GatewayRuntime) -> float:
    return sum(
        sample.value
        for metric in gateway.metrics.predictions.collect()
        for sample in metric.samples
        if sample.name.endswith("_total")
    )


@pytest.mark.parametrize(
    ("request_message", "method", "message"),
    [
        (inference_pb2.PredictRequest(text="", model=SERVED), "Predict", "text is empty"),
        (inference_pb2.PredictRequest(text="x" * 201, model=SERVED), "Predict", "201 characters; the limit is 200"),
        (inference_pb2.PredictRequest(text="hello", model="no-such-model"), "Predict", "unknown model 'no-such-model'"),
        (
            inference_pb2.PredictBatchRequest(items=[inference_pb2.PredictRequest(text="a", model=SERVED)] * 5),
            "PredictBatch",
            "5 items in one batch; the limit is 4",
        ),
        (
            inference_pb2.PredictBatchRequest(
                items=[
                    inference_pb2.PredictRequest(text="a", model=SERVED),
                    inference_pb2.PredictRequest(text=" ", model=SERVED),
                ]
            ),
            "PredictBatch",
            "items[1]: text is empty",
        ),
    ],
)
async def test_invalid_requests(channel: grpc.aio.Channel, request_message: Any, method: str, message: str) -> None:
    code, details = await _status_of(getattr(_stub(channel), method)(request_message, metadata=AUTH, timeout=30))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert message in details


async def test_known_model_with_nothing_live_is_unavailable(gateway: GatewayRuntime, channel: grpc.aio.Channel) -> None:
    code, details = await _status_of(
        _stub(channel).Predict(inference_pb2.PredictRequest(text="hello", model=GONE), metadata=AUTH, timeout=30)
    )
    assert code == grpc.StatusCode.UNAVAILABLE and GONE in details


async def test_a_tiny_deadline_is_exceeded(channel: grpc.aio.Channel) -> None:
    code, _ = await _status_of(
        _stub(channel).Predict(inference_pb2.PredictRequest(text="hello", model=SERVED), metadata=AUTH, timeout=0.002)
    )
    assert code == grpc.StatusCode.DEADLINE_EXCEEDED


async def test_canary_share_is_routed_and_sticky(gateway: GatewayRuntime, channel: grpc.aio.Channel) -> None:
    ids = [f"sticky-{SUFFIX}-{i}" for i in range(24)]
    stub = _stub(channel)

    async def versions() -> list[int]:
        answers = await asyncio.gather(
            *(
                stub.Predict(
                    inference_pb2.PredictRequest(text="i lost my card", model=SERVED, request_id=i),
                    metadata=AUTH,
                    timeout=60,
                )
                for i in ids
            )
        )
        return [a.model_version for a in answers]

    first = await versions()
    assert set(first) == {1, 2}  # both the champion and the canary answer
    deployment = gateway.feed.get(SERVED)
    assert deployment is not None
    assert first == [choose_route(deployment, i).version for i in ids]  # type: ignore[union-attr]
    assert await versions() == first  # sticky per request id
    logged = await _logged(gateway.settings.platform, set(ids))
    assert {logged[i].route for i in ids} == {"champion", "canary"}
    assert all((logged[i].route == "canary") == (logged[i].model_version == 2) for i in ids)


async def test_health_and_reflection(gateway: GatewayRuntime, channel: grpc.aio.Channel) -> None:
    health = health_pb2_grpc.HealthStub(channel)
    for service in ("", SERVICE_NAME):
        answer = await health.Check(health_pb2.HealthCheckRequest(service=service), timeout=10)
        assert answer.status == health_pb2.HealthCheckResponse.SERVING

    call = reflection_pb2_grpc.ServerReflectionStub(channel).ServerReflectionInfo(timeout=10)
    await call.write(reflection_pb2.ServerReflectionRequest(list_services=""))
    answer = await call.read()
    await call.done_writing()
    names = {s.name for s in answer.list_services_response.service}
    assert {SERVICE_NAME, "grpc.health.v1.Health"} <= names


def _grpcurl() -> str:
    found = shutil.which("grpcurl") or str(REPO_ROOT / "build" / "go" / "bin" / "grpcurl")
    if not Path(found).is_file():
        pytest.skip("grpcurl not installed: `make setup` installs it into build/go/bin when Go is available")
    return found


async def _run(*args: str) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await asyncio.wait_for(process.communicate(), timeout=60)
    return process.returncode or 0, out.decode(), err.decode()


async def test_grpcurl_lists_and_calls_predict_with_a_key(gateway: GatewayRuntime) -> None:
    grpcurl = _grpcurl()
    address = f"127.0.0.1:{gateway.port}"
    ca = str(tls_files(gateway.settings.platform).ca)
    code, out, err = await _run(grpcurl, "-cacert", ca, address, "list")
    assert code == 0, err
    assert SERVICE_NAME in out.split()

    request = json.dumps({"text": "what exchange rate do you use", "model": SERVED, "request_id": "grpcurl-1"})
    code, out, err = await _run(
        grpcurl, "-cacert", ca, "-H", f"authorization: Bearer {KEY}", "-d", request, address, f"{SERVICE_NAME}/Predict"
    )
    assert code == 0, err
    answer = json.loads(out)
    assert answer["label"] == "exchange_rate"
    assert answer.get("requestId", answer.get("request_id")) == "grpcurl-1"  # grpcurl prints proto or JSON names

    code, _, err = await _run(grpcurl, "-cacert", ca, "-d", request, address, f"{SERVICE_NAME}/Predict")
    assert code != 0 and "Unauthenticated" in err


async def test_concurrent_calls_to_one_version_share_a_triton_call_and_each_gets_its_own_answer(
    gateway: GatewayRuntime,
) -> None:
    texts = ["i lost my card", "what exchange rate do you use", "where is my new card", "my card was stolen"] * 3
    alone = [(await gateway.predictor.predict(SERVED, 1, [text], timeout=30))[0] for text in texts]
    # Padding to the longest text of a batch moves scores a little: compare with the same batch.
    batched = await gateway.predictor.predict(SERVED, 1, texts, timeout=30)
    calls_before = _histogram_count(gateway, "llmops_gateway_triton_batch_rows")
    # Started in one loop turn: one ModelInfer carries them all, and the answers are split back.
    together = await asyncio.gather(*(gateway.predictor.predict(SERVED, 1, [text], timeout=30) for text in texts))
    assert _histogram_count(gateway, "llmops_gateway_triton_batch_rows") == calls_before + 1
    for in_batch, (shared,) in zip(batched, together, strict=True):
        assert shared.label == in_batch.label
        assert shared.scores == pytest.approx(in_batch.scores, abs=1e-5)
    # A caller that gives up does not take its companions' answers with it.
    tasks = [asyncio.create_task(gateway.predictor.predict(SERVED, 1, [text], timeout=30)) for text in texts[:3]]
    await asyncio.sleep(0)
    tasks[1].cancel()
    answers = await asyncio.gather(*tasks, return_exceptions=True)
    assert isinstance(answers[1], asyncio.CancelledError)
    assert [a[0].label for a in (answers[0], answers[2])] == [alone[0].label, alone[2].label]  # type: ignore[index]


def _histogram_count(gateway: GatewayRuntime, name: str) -> float:
    return gateway.metrics.registry.get_sample_value(f"{name}_count") or 0.0

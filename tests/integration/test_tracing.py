"""Traces that leave the process: the gateway, run as its own process with the OTLP endpoint set
(what ``make up`` does once Jaeger is up), serves a ``Predict`` from Triton, and Jaeger's HTTP query
API (``/api/traces?service=...``, the UI's own) has one trace holding the gRPC server span of the
call and the client span of its Triton inference. And a record's way to deployment, hop by hop over
the real broker with each service's spans from its own process (``trace_chain_stage.py``), is one
trace: ingestion's batch, the snapshot it set off, the training job, the evaluation, the go-live
(the services themselves do it in ``tests/e2e``).

Skips when ``make setup`` could not build Jaeger (no Go); CI's set-up builds it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
import tritonclient.grpc as grpcclient
from aiokafka import AIOKafkaConsumer
from grpc_health.v1 import health_pb2, health_pb2_grpc

from llmops.inference.v1 import inference_pb2, inference_pb2_grpc
from llmops_config import PlatformSettings
from llmops_config.kafka import kafka_client_options, kafka_environment
from llmops_config.tls import aio_channel
from llmops_events import ContentMode, Envelope, KafkaRecord, decode, encode
from llmops_events.topics import TopicSpec
from llmops_events.v1 import DatasetSnapshotted, DeploymentPromoted, RecordSubmitted, TrainingRequested
from llmops_messaging import EventPublisher
from llmops_models.kinds import ServingOptions
from llmops_models.triton_repository import ModelRepository
from llmops_stack import ensure_topics, free_port, repo_paths, running
from llmops_stack.jaeger import JaegerComponent, JaegerServer, jaeger_binary, jaeger_config
from llmops_storage import ArtifactStore
from tests.jaeger_traces import RECORDS_TO_DEPLOYMENT, chain_trace, services_of

pytestmark = pytest.mark.integration

ROOT = repo_paths().root
KEY = "trace-test-key-0123456789"
MODEL = f"traced-{uuid.uuid4().hex[:8]}"
STAGE = Path(__file__).with_name("trace_chain_stage.py")
CHAIN_STAGES = ("ingestion", "fine-tuning", "evaluation", "deployment")
CHAIN_TOPICS = ("records", "datasets", "training", "trained", "evaluations", "deployments", "dlq")
RECORDS = 20


@pytest.fixture(scope="module")
def jaeger(stack_settings: PlatformSettings) -> Iterator[JaegerServer]:
    binary = jaeger_binary(ROOT)
    if not binary.is_file():
        pytest.skip(f"{binary} is missing: `make setup` builds Jaeger when Go is installed")
    settings = stack_settings.model_copy(
        update={
            "jaeger_otlp_grpc_port": free_port(),
            "jaeger_otlp_http_port": free_port(),
            "jaeger_ui_port": free_port(),
            "jaeger_query_grpc_port": free_port(),
        }
    )
    component = JaegerComponent(JaegerServer(settings, binary, jaeger_config(ROOT)))
    with running(component):  # stopping it also stops pointing this process's children at it
        yield component.server


@pytest.fixture(scope="module")
def served(triton_settings: PlatformSettings, kafka_settings: PlatformSettings, tiny_model: Any) -> Iterator[str]:
    """The tiny model loaded on Triton as version 1 of ``MODEL`` and promoted on the deployments topic."""
    store = ArtifactStore(triton_settings.resolved_artifact_store_uri)
    client = grpcclient.InferenceServerClient(triton_settings.triton_grpc_url)
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch) / "model"
        store.download_folder(f"models/{tiny_model.model_name}/{tiny_model.model_version}", folder)
        name = ModelRepository(triton_settings.model_repository).write(
            MODEL, 1, folder, ServingOptions(max_queue_delay_us=500)
        )
    client.load_model(name)

    async def promote() -> None:
        async with EventPublisher(kafka_settings, service="tests") as publisher:
            await publisher.publish(DeploymentPromoted(model_name=MODEL, model_version=1))

    asyncio.run(promote())
    try:
        yield MODEL
    finally:
        client.unload_model(name)


async def test_a_gateway_call_into_triton_is_one_trace_in_jaeger(
    jaeger: JaegerServer, served: str, kafka_settings: PlatformSettings
) -> None:
    port = free_port()
    env = {
        **os.environ,
        **kafka_environment(kafka_settings),
        "LLMOPS_VAR_DIR": str(kafka_settings.var_dir),
        "LLMOPS_TRITON_GRPC_PORT": str(kafka_settings.triton_grpc_port),
        "LLMOPS_TRITON_HTTP_PORT": str(kafka_settings.triton_http_port),
        "LLMOPS_GATEWAY_PORT": str(port),
        "LLMOPS_GATEWAY_HOST": "127.0.0.1",
        "LLMOPS_GATEWAY_METRICS_PORT": "0",
        "LLMOPS_GATEWAY_API_KEYS": KEY,
        "OTEL_EXPORTER_OTLP_ENDPOINT": jaeger.settings.jaeger_otlp_endpoint,
        "OTEL_BSP_SCHEDULE_DELAY": "200",  # export within a fraction of a second, not every 5 s
    }
    process = await asyncio.create_subprocess_exec(sys.executable, "-m", "llmops_gateway", env=env)
    try:
        async with aio_channel(kafka_settings, f"127.0.0.1:{port}") as channel:
            await _wait_serving(channel, process)
            stub = inference_pb2_grpc.InferenceServiceStub(channel)
            deadline = time.monotonic() + 60
            while True:  # the gateway learns the route from the deployments topic as it starts
                try:
                    answer = await stub.Predict(
                        inference_pb2.PredictRequest(text="my card has not arrived", model=served),
                        metadata=(("authorization", f"Bearer {KEY}"),),
                        timeout=30,
                    )
                    break
                except grpc.aio.AioRpcError as error:
                    if error.code() != grpc.StatusCode.NOT_FOUND or time.monotonic() > deadline:
                        raise
                    await asyncio.sleep(0.5)
            assert answer.label
    finally:
        if process.returncode is None:
            process.terminate()  # SIGTERM: the tracer provider flushes its last spans on exit
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(process.wait(), timeout=60)
        if process.returncode is None:
            process.kill()
            await process.wait()

    trace = await _trace_with(jaeger, "llmops-gateway", server="Predict", client="ModelInfer")
    spans = trace["spans"]
    names = sorted(span["operationName"] for span in spans)
    print(f"\ntrace {trace['traceID']}: {len(spans)} spans: {names}")
    server = next(span for span in spans if span["operationName"].endswith("Predict"))
    inference = next(span for span in spans if span["operationName"].endswith("ModelInfer"))
    # The Triton call is a child of the gateway's handling of Predict (same trace, nested).
    parents = {span["spanID"]: [ref["spanID"] for ref in span.get("references", [])] for span in spans}
    ancestors, current = set(), inference["spanID"]
    while parents.get(current):
        current = parents[current][0]
        ancestors.add(current)
    assert server["spanID"] in ancestors, f"the Triton call is not under the Predict span: {spans}"
    assert inference["startTime"] >= server["startTime"]


async def _wait_serving(channel: grpc.aio.Channel, process: asyncio.subprocess.Process) -> None:
    health = health_pb2_grpc.HealthStub(channel)
    deadline = time.monotonic() + 120
    while True:
        assert process.returncode is None, "the gateway exited early"
        with contextlib.suppress(grpc.aio.AioRpcError):
            answer = await health.Check(health_pb2.HealthCheckRequest(), timeout=2)
            if answer.status == health_pb2.HealthCheckResponse.SERVING:
                return
        assert time.monotonic() < deadline, "the gateway did not become healthy"
        await asyncio.sleep(0.5)


async def _trace_with(jaeger: JaegerServer, service: str, *, server: str, client: str) -> dict[str, Any]:
    """The first trace of ``service`` with a span ending in ``server`` and one ending in ``client``."""
    deadline = time.monotonic() + 30
    seen: list[list[str]] = []
    while time.monotonic() < deadline:
        traces = await asyncio.to_thread(jaeger.traces, service)
        seen = [[span["operationName"] for span in trace["spans"]] for trace in traces]
        for trace in traces:
            names = [span["operationName"] for span in trace["spans"]]
            if any(name.endswith(server) for name in names) and any(name.endswith(client) for name in names):
                return trace
        await asyncio.sleep(0.5)
    raise AssertionError(f"no trace of {service} with {server} and {client} in Jaeger; traces seen: {seen}")


async def test_a_records_way_to_deployment_is_one_trace_in_jaeger(
    jaeger: JaegerServer, kafka_settings: PlatformSettings, tmp_path: Path
) -> None:
    prefix = f"trace-{uuid.uuid4().hex[:8]}"
    options = kafka_client_options(kafka_settings, service="test")
    await ensure_topics(options, [TopicSpec(f"{prefix}.{suffix}", "none", 1) for suffix in CHAIN_TOPICS])
    env = {
        **os.environ,
        **kafka_environment(kafka_settings),
        "LLMOPS_VAR_DIR": str(kafka_settings.var_dir),
        "OTEL_EXPORTER_OTLP_ENDPOINT": jaeger.settings.jaeger_otlp_endpoint,
        "OTEL_BSP_SCHEDULE_DELAY": "200",
    }
    stages = [
        await asyncio.create_subprocess_exec(
            sys.executable, str(STAGE), stage, prefix, str(tmp_path), str(RECORDS), env=env
        )
        for stage in CHAIN_STAGES
    ]
    try:
        async with EventPublisher(kafka_settings, service="tests") as publisher:
            for index in range(RECORDS):  # as most producers send them: no trace context
                record = RecordSubmitted(tenant="acme", source="tests", text=f"record {index}", label="a")
                envelope = Envelope.wrap(record, source=publisher.source)
                await publisher.publish_record(f"{prefix}.records", encode(envelope, ContentMode.BINARY))
            snapshotted = await _first_event(kafka_settings, f"{prefix}.datasets", timeout=240)
            assert isinstance(snapshotted.data, DatasetSnapshotted) and snapshotted.traceparent
            # As the demo (the operator) does: the training on this snapshot continues its trace.
            request = Envelope.wrap(
                TrainingRequested(model_name=MODEL, dataset_id=snapshotted.data.dataset_id),
                source=publisher.source,
                traceparent=snapshotted.traceparent,
            )
            await publisher.publish_record(f"{prefix}.training", encode(request, ContentMode.BINARY))
        for stage, process in zip(CHAIN_STAGES, stages, strict=True):
            assert await asyncio.wait_for(process.wait(), timeout=240) == 0, f"stage {stage} failed"
    finally:
        for process in stages:
            if process.returncode is None:
                process.kill()
                await process.wait()

    found, seen = await chain_trace(
        jaeger.settings.jaeger_ui_url,
        RECORDS_TO_DEPLOYMENT,
        first_tags={"llmops.snapshot.trigger": "policy"},
        first_parent_service="llmops-ingestion",  # the batch of records that crossed the threshold
        timeout_s=60,
    )
    assert found is not None, f"no trace runs through {RECORDS_TO_DEPLOYMENT} from the records; seen: {seen}"
    print(f"\ntrace {found['traceID']}: {len(found['spans'])} spans across {services_of(found)}")


async def _first_event(settings: PlatformSettings, topic: str, *, timeout: float) -> Envelope[Any]:
    consumer = AIOKafkaConsumer(
        topic,
        **kafka_client_options(settings, service="test").aiokafka(),
        auto_offset_reset="earliest",
        group_id=f"reader-{uuid.uuid4().hex}",
    )
    await consumer.start()
    try:
        async with asyncio.timeout(timeout):
            message = await consumer.getone()
    finally:
        await consumer.stop()
    return decode(KafkaRecord(message.key, message.value or b"", tuple(message.headers or ())))

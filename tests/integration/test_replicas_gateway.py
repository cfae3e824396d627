"""Two gateway processes behind one client target (#18): a gRPC ``ipv4:`` target naming both, with
round_robin, spreads the calls over them, and both serve with the same champion and canary share.

Each replica folds the deployments topic on its own (no consumer group) and routes a request id to
the champion or the canary by a hash of the id, so the same id gets the same version from either
replica. The versions are read back from the responses; the routes from each process's metrics."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
import tritonclient.grpc as grpcclient
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families

from llmops.inference.v1 import inference_pb2, inference_pb2_grpc
from llmops_config import PlatformSettings
from llmops_config.tls import aio_channel
from llmops_events.v1 import DeploymentCanaryStarted
from llmops_messaging import EventPublisher
from llmops_models.kinds import ServingOptions
from llmops_models.triton_repository import ModelRepository
from llmops_serving import ModelDeployment, choose_route
from llmops_stack import free_port
from llmops_storage import ArtifactStore

pytestmark = pytest.mark.integration

KEY = "replica-key-0123456789"
AUTH = (("authorization", f"Bearer {KEY}"),)
MODEL = f"gw-replicas-{uuid.uuid4().hex[:8]}"
SHARE = 0.3
EXPECTED = ModelDeployment(MODEL, champion_version=1, canary_version=2, canary_share=SHARE)


@pytest.fixture(scope="module")
def deployed(triton_settings: PlatformSettings, kafka_settings: PlatformSettings, tiny_model: Any) -> Iterator[None]:
    """The tiny model as versions 1 (champion) and 2 (canary, 30 %) of ``MODEL``, loaded on Triton
    and announced on the deployments topic."""
    store = ArtifactStore(triton_settings.resolved_artifact_store_uri)
    repository = ModelRepository(triton_settings.model_repository)
    client = grpcclient.InferenceServerClient(triton_settings.triton_grpc_url)
    names = []
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch) / "model"
        store.download_folder(f"models/{tiny_model.model_name}/{tiny_model.model_version}", folder)
        for version in (1, 2):
            names.append(repository.write(MODEL, version, folder, ServingOptions(max_queue_delay_us=500)))
    for name in names:
        client.load_model(name)

    async def announce() -> None:
        async with EventPublisher(kafka_settings, service="gateway-test") as publisher:
            await publisher.publish(
                DeploymentCanaryStarted(model_name=MODEL, model_version=2, champion_version=1, traffic_share=SHARE)
            )

    asyncio.run(announce())
    try:
        yield
    finally:
        for name in names:
            client.unload_model(name)


async def _healthy(platform: PlatformSettings, port: int, process: asyncio.subprocess.Process) -> None:
    async with aio_channel(platform, f"127.0.0.1:{port}") as channel:
        health = health_pb2_grpc.HealthStub(channel)
        deadline = time.monotonic() + 240
        while True:
            assert process.returncode is None, "a gateway exited early"
            with contextlib.suppress(grpc.aio.AioRpcError):
                answer = await health.Check(health_pb2.HealthCheckRequest(), timeout=2)
                if answer.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            assert time.monotonic() < deadline, "a gateway did not become healthy"
            await asyncio.sleep(0.5)


@pytest.fixture(scope="module")
async def gateways(
    deployed: None, triton_settings: PlatformSettings, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[list[tuple[int, int]]]:
    """Two ``python -m llmops_gateway`` processes on their own ports: (gRPC port, metrics port) each."""
    replicas = [(free_port(), free_port()) for _ in range(2)]
    processes = []
    for index, (port, metrics_port) in enumerate(replicas):
        env = {
            **os.environ,
            "LLMOPS_KAFKA_BOOTSTRAP_SERVERS": triton_settings.kafka_bootstrap_servers,
            "LLMOPS_VAR_DIR": str(tmp_path_factory.mktemp(f"gateway-replica-{index}")),
            "LLMOPS_ARTIFACT_STORE_URI": triton_settings.resolved_artifact_store_uri,
            "LLMOPS_TRITON_HOST": triton_settings.triton_host,
            "LLMOPS_TRITON_GRPC_PORT": str(triton_settings.triton_grpc_port),
            "LLMOPS_TRITON_HTTP_PORT": str(triton_settings.triton_http_port),
            "LLMOPS_TRITON_METRICS_PORT": str(triton_settings.triton_metrics_port),
            "LLMOPS_GATEWAY_PORT": str(port),
            "LLMOPS_GATEWAY_HOST": "127.0.0.1",
            "LLMOPS_GATEWAY_METRICS_PORT": str(metrics_port),
            "LLMOPS_GATEWAY_API_KEYS": KEY,
            "LLMOPS_GATEWAY_DEFAULT_MODEL": MODEL,
        }
        processes.append(await asyncio.create_subprocess_exec(sys.executable, "-m", "llmops_gateway", env=env))
    try:
        await asyncio.gather(
            *(_healthy(triton_settings, port, process) for (port, _), process in zip(replicas, processes, strict=True))
        )
        yield replicas
    finally:
        for process in processes:
            if process.returncode is None:
                process.terminate()
        for process in processes:
            try:
                await asyncio.wait_for(process.wait(), timeout=60)
            except TimeoutError:
                process.kill()
                await process.wait()


async def _versions(channel: grpc.aio.Channel, ids: list[str]) -> list[int]:
    """The version that answered each request id, one call at a time (round_robin alternates)."""
    stub = inference_pb2_grpc.InferenceServiceStub(channel)
    versions = []
    for request_id in ids:
        answer = await stub.Predict(
            inference_pb2.PredictRequest(text="i lost my card", model=MODEL, request_id=request_id),
            metadata=AUTH,
            timeout=60,
        )
        assert answer.model_name == MODEL and answer.request_id == request_id
        versions.append(int(answer.model_version))
    return versions


async def _routes(metrics_port: int) -> dict[str, float]:
    """Predictions of ``MODEL`` by route, from one process's ``/metrics``."""
    async with httpx.AsyncClient() as client:
        text = (await client.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10)).text
    routes: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "llmops_gateway_predictions_total" and sample.labels.get("model") == MODEL:
                routes[sample.labels["route"]] = routes.get(sample.labels["route"], 0.0) + sample.value
    return routes


async def test_two_gateways_behind_one_target_serve_the_same_champion_and_canary_share(
    gateways: list[tuple[int, int]], triton_settings: PlatformSettings
) -> None:
    ids = [f"replicas-{i}" for i in range(40)]
    expected = [choose_route(EXPECTED, i).version for i in ids]  # type: ignore[union-attr]
    assert set(expected) == {1, 2}  # the ids cover both routes

    # Each replica on its own: the same version for every id, the one the deployment names.
    for port, _ in gateways:
        async with aio_channel(triton_settings, f"127.0.0.1:{port}") as channel:
            assert await _versions(channel, ids) == expected

    # One client target naming both, round_robin: spread over both replicas, same answers.
    before = [sum((await _routes(metrics_port)).values()) for _, metrics_port in gateways]
    # (A list of addresses has no host name to verify the certificate against: name one it carries,
    # as a client of a headless Kubernetes Service names the service.)
    target = "ipv4:" + ",".join(f"127.0.0.1:{port}" for port, _ in gateways)
    options = (("grpc.lb_policy_name", "round_robin"), ("grpc.ssl_target_name_override", "localhost"))
    async with aio_channel(triton_settings, target, options=options) as channel:
        assert await _versions(channel, ids) == expected
    routes = [await _routes(metrics_port) for _, metrics_port in gateways]
    served = [sum(r.values()) - b for r, b in zip(routes, before, strict=True)]
    assert all(count > 0 for count in served) and sum(served) == len(ids), served
    # Every process routed to both the champion and the canary of the same deployment.
    assert all(set(r) == {"champion", "canary"} for r in routes), routes

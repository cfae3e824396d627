"""A pool of two Tritons serving one model repository (#18): the deployment service drives both,
the gateway balances over both, and a member that restarts empty gets the live versions back.

Two real ``tritonserver`` processes on 127.0.0.1 and 127.0.0.2 (same ports, one repository), the
deployment runtime and the gateway in-process against the session's broker, both given the pool as
``LLMOPS_TRITON_POOL_HOSTS`` would give it. Each Triton is asked directly what it has loaded and
how many requests it served, so the spreading is read from the servers, not from our clients."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import tritonclient.grpc.aio as grpcclient

from llmops.inference.v1 import inference_pb2, inference_pb2_grpc
from llmops_config import PlatformSettings
from llmops_config.kafka import kafka_client_options
from llmops_config.tls import aio_channel
from llmops_deployment.main import DeploymentRuntime
from llmops_deployment.settings import DeploymentSettings
from llmops_events.topics import DEPLOYMENTS
from llmops_events.v1 import Decision, DeploymentPromoted, EvaluationCompleted
from llmops_gateway.main import GatewayRuntime
from llmops_messaging import EventPublisher
from llmops_serving import triton_name
from llmops_stack import NullProgress, TritonComponent, TritonServer, free_port, repo_paths
from llmops_storage import ArtifactStore
from tests.bus_readback import read_topic
from tests.serving_inprocess import deployment_running, gateway_running

pytestmark = pytest.mark.integration

KEY = "pool-key-0123456789"
MODEL = f"pool-{uuid.uuid4().hex[:6]}"
HOSTS = ("127.0.0.1", "127.0.0.2")


@dataclass
class Pool:
    platform: PlatformSettings
    members: list[TritonComponent]
    runtime: DeploymentRuntime
    gateway: GatewayRuntime

    def client(self, index: int) -> grpcclient.InferenceServerClient:
        # A subchannel of its own: gRPC shares one per address in a process, and the one to a member
        # that was down stays in its reconnect backoff for a while after the member is back.
        return grpcclient.InferenceServerClient(
            f"{HOSTS[index]}:{self.platform.triton_grpc_port}", channel_args=[("grpc.use_local_subchannel_pool", 1)]
        )

    async def on_member(self, index: int, name: str) -> tuple[bool, int]:
        """(ready, requests served) of ``name`` on one member, asked of that Triton."""
        client = self.client(index)
        try:
            if not await client.is_model_ready(name):
                return False, 0
            stats = await client.get_inference_statistics(name, as_json=True)
            served = sum(int(m["inference_stats"]["success"].get("count", 0)) for m in stats["model_stats"])
            return True, served
        finally:
            await client.close()

    async def predict(self, count: int, gateway: GatewayRuntime | None = None) -> list[int]:
        """``count`` predictions through the gateway, one at a time; the versions that answered."""
        port = (gateway or self.gateway).port
        async with aio_channel(self.platform, f"127.0.0.1:{port}") as channel:
            stub = inference_pb2_grpc.InferenceServiceStub(channel)
            versions = []
            for i in range(count):
                answer = await stub.Predict(
                    inference_pb2.PredictRequest(text="i lost my card", model=MODEL, request_id=f"pool-{i}"),
                    metadata=(("authorization", f"Bearer {KEY}"),),
                    timeout=60,
                )
                versions.append(int(answer.model_version))
            return versions


async def _promoted(platform: PlatformSettings, version: int) -> bool:
    events = await read_topic(kafka_client_options(platform, service="test"), DEPLOYMENTS)
    return any(
        isinstance(e.data, DeploymentPromoted) and (e.data.model_name, e.data.model_version) == (MODEL, version)
        for e in events
    )


@pytest.fixture(scope="module")
async def pool(
    kafka_settings: PlatformSettings, tiny_model: Any, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Pool]:
    platform = kafka_settings.model_copy(
        update={
            "var_dir": tmp_path_factory.mktemp("triton-pool"),
            "artifact_store_uri": kafka_settings.resolved_artifact_store_uri,
            "triton_http_port": free_port(),
            "triton_grpc_port": free_port(),
            "triton_metrics_port": free_port(),
            "ops_port": free_port(),
            "triton_pool_hosts": ",".join(HOSTS),
            "triton_pool_refresh_s": 0.5,
        }
    )
    store = ArtifactStore(platform.resolved_artifact_store_uri)
    staging = Path(tempfile.mkdtemp())
    folder = store.download_folder(f"models/{tiny_model.model_name}/{tiny_model.model_version}", staging / "v")
    (folder / "_COMPLETE").unlink(missing_ok=True)
    store.publish_folder(folder, f"models/{MODEL}/1")
    shutil.rmtree(staging)

    paths = repo_paths()
    members = [
        TritonComponent(
            TritonServer(
                platform.model_copy(update={"triton_host": host}),
                paths.triton_venv,
                paths.triton_backend_dir,
                name=f"triton-pool-{index}",
            )
        )
        for index, host in enumerate(HOSTS)
    ]
    await asyncio.gather(*(asyncio.to_thread(m.ensure_up, NullProgress()) for m in members))
    settings = DeploymentSettings(
        platform=platform,
        group_id=f"deployment-{uuid.uuid4().hex[:8]}",
        model_names=[MODEL],
        metrics_port=0,
        check_interval_s=0.5,
        reconcile_interval_s=1.0,
        warmup_requests=1,
    )
    try:
        async with (
            deployment_running(settings, service="deployment-pool") as runtime,
            gateway_running(platform, api_key=KEY) as gateway,
        ):
            yield Pool(platform, members, runtime, gateway)
    finally:
        await asyncio.gather(*(asyncio.to_thread(m.stop) for m in members))


async def test_a_version_goes_live_on_every_member_and_the_gateway_uses_both(pool: Pool) -> None:
    async with EventPublisher(pool.platform, service="test") as publisher:
        await publisher.publish(
            EvaluationCompleted(
                model_name=MODEL, model_version=1, candidate_artifact_uri="unused", decision=Decision.APPROVED
            )
        )
    async with asyncio.timeout(240):
        while not await _promoted(pool.platform, 1):
            await asyncio.sleep(0.5)
    name = triton_name(MODEL, 1)
    before = [await pool.on_member(i, name) for i in range(len(HOSTS))]
    assert all(ready for ready, _ in before), before  # loaded and smoke-tested on both

    async with asyncio.timeout(30):  # the gateway follows the deployments topic
        while (d := pool.gateway.feed.get(MODEL)) is None or d.champion_version != 1:
            await asyncio.sleep(0.1)
    assert await pool.predict(20) == [1] * 20
    after = [await pool.on_member(i, name) for i in range(len(HOSTS))]
    served = [a[1] - b[1] for a, b in zip(after, before, strict=True)]
    # Round robin over both members (the gateway coalesces concurrent calls; these are sequential).
    assert sum(served) == 20 and all(count >= 5 for count in served), served


async def test_a_member_that_restarts_empty_gets_the_live_version_back(pool: Pool) -> None:
    name = triton_name(MODEL, 1)
    ready, served_before = await pool.on_member(0, name)
    assert ready, "the previous test deploys version 1"

    second = pool.members[1]
    await asyncio.to_thread(second.stop)
    # The gateway keeps answering from the member left (a call on the closing connection may fail).
    await asyncio.sleep(1.0)
    assert await pool.predict(6) == [1] * 6

    await asyncio.to_thread(second.ensure_up, NullProgress())  # explicit model control: nothing loaded
    assert (await pool.on_member(1, name))[0] is False
    async with asyncio.timeout(120):  # the reconciler sees the member without the version
        while not (await pool.on_member(1, name))[0]:
            await asyncio.sleep(0.5)
    # Loaded where it was missing only: the other member kept its model (a reload resets its counts).
    ready, served_after = await pool.on_member(0, name)
    assert ready and served_after >= served_before + 6, (served_before, served_after)


async def test_a_gateway_moves_to_the_members_it_finds(pool: Pool) -> None:
    """A gateway that knew one member is moved to both, as its DNS pool follower does when a replica
    joins: calls reach the new member without a restart."""
    name = triton_name(MODEL, 1)
    assert all([(await pool.on_member(i, name))[0] for i in range(len(HOSTS))]), "the previous tests deploy it"
    platform = pool.platform.model_copy(update={"triton_pool_hosts": HOSTS[0]})
    async with gateway_running(platform, api_key=KEY) as gateway:
        async with asyncio.timeout(30):
            while (d := gateway.feed.get(MODEL)) is None or d.champion_version != 1:
                await asyncio.sleep(0.1)
        before = [(await pool.on_member(i, name))[1] for i in range(len(HOSTS))]
        assert await pool.predict(6, gateway) == [1] * 6
        middle = [(await pool.on_member(i, name))[1] for i in range(len(HOSTS))]
        assert (middle[0] - before[0], middle[1] - before[1]) == (6, 0)  # one member known

        port = pool.platform.triton_grpc_port
        await gateway.retarget_triton("ipv4:" + ",".join(f"{host}:{port}" for host in HOSTS))
        assert await pool.predict(20, gateway) == [1] * 20
        after = [(await pool.on_member(i, name))[1] for i in range(len(HOSTS))]
        served = [a - m for a, m in zip(after, middle, strict=True)]
        assert sum(served) == 20 and all(count >= 5 for count in served), served

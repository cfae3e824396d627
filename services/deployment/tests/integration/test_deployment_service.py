"""The deployment service on the real broker and the real tritonserver: an approved first version
goes live; the next one canaries and is promoted on healthy traffic; a canary that errors is rolled
back automatically; operators roll back and promote through the ops gRPC API; a restarted service
reconciles Triton with the deployments topic; a Triton that restarts or is down during a deploy
costs no version its deployment. Every promotion, rollback and canary verdict is on the audit topic
with its principal, and after the deployments topic is compacted a rollback without a version still
restores the previous champion, read from the audit topic (never compacted)."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
import tritonclient.grpc.aio as grpcclient
from aiokafka import AIOKafkaConsumer
from deployment_bus import audit_records, compact_by_hand, topic_config
from tritonclient.utils import InferenceServerException

from llmops.ops.v1 import ops_pb2, ops_pb2_grpc
from llmops_config import PlatformSettings
from llmops_config.kafka import kafka_client_options, kafka_environment
from llmops_config.tls import aio_channel
from llmops_deployment.main import DeploymentRuntime
from llmops_deployment.settings import DeploymentSettings
from llmops_events import Envelope, KafkaRecord, decode
from llmops_events.topics import AUDIT, DEPLOYMENTS
from llmops_events.v1 import (
    AuditAction,
    Decision,
    DeploymentCanaryStarted,
    DeploymentPromoted,
    DeploymentRequested,
    DeploymentRolledBack,
    EvaluationCompleted,
)
from llmops_messaging import EventPublisher, create_broker
from llmops_models import MANIFEST_FILE, hash_folder
from llmops_models.kinds.classifier.network import TRAINING_CONFIG_FILE
from llmops_models.kinds.classifier.serving import TEXT_INPUT
from llmops_serving import triton_name
from llmops_storage import ArtifactStore

pytestmark = pytest.mark.integration

LONG_TEXT = " ".join(["my card has not arrived and I am still waiting for it"] * 60)  # > 512 tokens


def _copy_version(
    store: ArtifactStore, source: str, model: str, version: int, *, max_length: int | None = None
) -> None:
    """Publish the tiny model's artifact as ``model``/``version``; ``max_length`` misconfigures it
    (beyond the encoder's 512 positions: short texts work, long ones fail), rehashed as valid."""
    staging = Path(tempfile.mkdtemp())
    folder = store.download_folder(source, staging / "v")
    (folder / "_COMPLETE").unlink(missing_ok=True)
    if max_length is not None:
        config = json.loads((folder / TRAINING_CONFIG_FILE).read_text())
        config["max_length"] = max_length
        (folder / TRAINING_CONFIG_FILE).write_text(json.dumps(config))
        manifest = json.loads((folder / MANIFEST_FILE).read_text())
        manifest["files"] = hash_folder(folder)
        (folder / MANIFEST_FILE).write_text(json.dumps(manifest))
    store.publish_folder(folder, f"models/{model}/{version}")
    shutil.rmtree(staging)


class Harness:
    def __init__(self, platform: PlatformSettings, model: str, **overrides: Any) -> None:
        self.platform = platform
        self.model = model
        options: dict[str, Any] = {
            "group_id": f"deployment-{uuid.uuid4().hex[:8]}",
            "model_names": [model],
            "metrics_port": 0,
            "canary_min_requests": 12,
            "canary_max_seconds": 120,
            "check_interval_s": 0.5,
            "reconcile_interval_s": 1.0,
            "retire_grace_s": 0.5,
            "warmup_requests": 1,
        }
        self.settings = DeploymentSettings(platform=platform, **(options | overrides))
        self.events: list[Envelope[Any]] = []
        self.runtime: DeploymentRuntime | None = None
        self.broker: Any = None

    async def start(self) -> None:
        self.runtime = DeploymentRuntime(self.settings)
        self.broker = create_broker(self.platform, service="deployment-test")
        await self.runtime.open()
        self.runtime.attach(self.broker)
        await self.broker.start()
        await self.runtime.begin()

    async def stop(self) -> None:
        assert self.runtime is not None
        await self.broker.stop()
        await self.runtime.close()

    async def read(self) -> None:
        consumer = AIOKafkaConsumer(
            DEPLOYMENTS,
            **kafka_client_options(self.platform, service="test").aiokafka(),
            auto_offset_reset="earliest",
            group_id=f"reader-{uuid.uuid4().hex}",
        )
        await consumer.start()
        try:
            while True:
                for records in (await consumer.getmany(timeout_ms=200)).values():
                    for m in records:
                        envelope = decode(KafkaRecord(m.key, m.value or b"", tuple(m.headers or ())))
                        if getattr(envelope.data, "model_name", None) == self.model:
                            self.events.append(envelope)
        finally:
            await consumer.stop()

    def found(self, kind: type, version: int) -> list[Envelope[Any]]:
        return [
            e for e in self.events if isinstance(e.data, kind) and getattr(e.data, "model_version", None) == version
        ]

    async def wait_for(self, kind: type, version: int, timeout: float = 240) -> Envelope[Any]:
        async with asyncio.timeout(timeout):
            while not (found := self.found(kind, version)):
                await asyncio.sleep(0.2)
        return found[0]

    async def approve(self, version: int) -> str:
        correlation = f"corr-{uuid.uuid4().hex[:8]}"
        async with EventPublisher(self.platform, service="test") as publisher:
            await publisher.publish(
                EvaluationCompleted(
                    model_name=self.model,
                    model_version=version,
                    candidate_artifact_uri="unused",
                    decision=Decision.APPROVED,
                ),
                correlationid=correlation,
            )
        return correlation


async def _send(platform: PlatformSettings, name: str, texts: list[str]) -> tuple[int, int]:
    """Call Triton directly (the canary watch counts Triton's own statistics); (ok, failed)."""
    client = grpcclient.InferenceServerClient(platform.triton_grpc_url)
    ok = failed = 0
    try:
        for text in texts:
            value = grpcclient.InferInput(TEXT_INPUT, [1, 1], "BYTES")
            value.set_data_from_numpy(np.array([[text.encode()]], dtype=np.object_))
            try:
                await client.infer(name, [value])
                ok += 1
            except Exception:
                failed += 1
    finally:
        await client.close()
    return ok, failed


@pytest.fixture(scope="module")
async def harness(
    triton_settings: PlatformSettings, kafka_settings: PlatformSettings, tiny_model: Any
) -> AsyncIterator[Harness]:
    model = f"deploy-{uuid.uuid4().hex[:6]}"
    store = ArtifactStore(kafka_settings.resolved_artifact_store_uri)
    source = f"models/{tiny_model.model_name}/{tiny_model.model_version}"
    _copy_version(store, source, model, 1)
    _copy_version(store, source, model, 2)
    _copy_version(store, source, model, 3, max_length=100_000)
    h = Harness(kafka_settings, model)
    reader = asyncio.get_running_loop().create_task(h.read())
    await h.start()
    try:
        yield h
    finally:
        if h.runtime is not None:
            await h.stop()
        reader.cancel()
        await asyncio.gather(reader, return_exceptions=True)


async def test_first_version_goes_live_then_a_healthy_canary_is_promoted(harness: Harness) -> None:
    triton = grpcclient.InferenceServerClient(harness.platform.triton_grpc_url)
    try:
        correlation = await harness.approve(1)
        promoted = await harness.wait_for(DeploymentPromoted, 1)
        assert promoted.correlationid == correlation and promoted.data.previous_version is None
        assert await triton.is_model_ready(triton_name(harness.model, 1))

        await harness.approve(2)
        canary = await harness.wait_for(DeploymentCanaryStarted, 2)
        assert canary.data.champion_version == 1 and canary.data.traffic_share == pytest.approx(0.1)
        await _send(harness.platform, triton_name(harness.model, 2), ["where is my new card"] * 14)
        promoted = (await harness.wait_for(DeploymentPromoted, 2)).data
        assert promoted.previous_version == 1 and "healthy over" in promoted.reason

        async with asyncio.timeout(30):  # the old champion is retired after the grace period
            while await triton.is_model_ready(triton_name(harness.model, 1)):
                await asyncio.sleep(0.2)
        assert not (harness.platform.model_repository / triton_name(harness.model, 1)).exists()
    finally:
        await triton.close()


async def test_a_canary_that_errors_is_rolled_back_automatically(harness: Harness) -> None:
    await harness.wait_for(DeploymentPromoted, 2)
    await harness.approve(3)
    await harness.wait_for(DeploymentCanaryStarted, 3)  # short smoke-test texts pass
    ok, failed = await _send(harness.platform, triton_name(harness.model, 3), [LONG_TEXT] * 5)
    assert failed == 5 and ok == 0
    rolled_back = (await harness.wait_for(DeploymentRolledBack, 3)).data
    assert rolled_back.restored_version == 2 and "error rate" in rolled_back.reason
    assert rolled_back.rolled_back_by == "deployment"


async def test_operators_roll_back_and_promote_through_the_ops_api(harness: Harness) -> None:
    await harness.wait_for(DeploymentRolledBack, 3)
    async with aio_channel(harness.platform, f"127.0.0.1:{harness.platform.ops_port}", client_cert=True) as channel:
        ops = ops_pb2_grpc.OpsServiceStub(channel)
        status = (await ops.GetStatus(ops_pb2.GetStatusRequest(model=harness.model))).models[0]
        assert (status.champion_version, status.canary_version, status.state) == (2, 0, "serving")
        assert list(status.available_versions) == [1, 2, 3]

        rolled = await ops.Rollback(ops_pb2.RollbackRequest(model=harness.model, reason="drill"), timeout=300)
        assert rolled.status.champion_version == 1  # the previous champion, loaded again from its artifacts

        promoted = await ops.Promote(ops_pb2.PromoteRequest(model=harness.model, version=2), timeout=300)
        assert promoted.status.champion_version == 2

        with pytest.raises(grpc.aio.AioRpcError) as missing:
            await ops.Rollback(ops_pb2.RollbackRequest(model=harness.model, version=9))
        assert missing.value.code() == grpc.StatusCode.NOT_FOUND
        with pytest.raises(grpc.aio.AioRpcError) as unknown:
            await ops.GetStatus(ops_pb2.GetStatusRequest(model="no-such-model"))
        assert unknown.value.code() == grpc.StatusCode.NOT_FOUND
        with pytest.raises(grpc.aio.AioRpcError) as no_canary:
            await ops.Promote(ops_pb2.PromoteRequest(model=harness.model))
        assert no_canary.value.code() == grpc.StatusCode.FAILED_PRECONDITION


async def test_a_restarted_service_reconciles_triton_with_the_topic(harness: Harness) -> None:
    champion = triton_name(harness.model, 2)
    await harness.stop()
    harness.runtime = None
    triton = grpcclient.InferenceServerClient(harness.platform.triton_grpc_url)
    try:
        await triton.unload_model(champion)  # as after a Triton restart: the live version is gone
        stray = triton_name(harness.model, 3)
        assert not (harness.platform.model_repository / stray).exists()
        await harness.start()  # replays the topic, then loads what must be live
        assert await triton.is_model_ready(champion)
        assert harness.runtime is not None and harness.runtime.service is not None
        assert harness.runtime.service.state(harness.model).champion_version == 2

        await triton.unload_model(champion)  # while it runs: the reconciler restores it
        async with asyncio.timeout(120):
            while not await triton.is_model_ready(champion):
                await asyncio.sleep(0.5)
    finally:
        await triton.close()


DECISIONS = (AuditAction.PROMOTION, AuditAction.ROLLBACK, AuditAction.CANARY_VERDICT)


async def test_every_decision_is_audited_and_the_default_rollback_reads_the_audit_after_compaction(
    harness: Harness,
) -> None:
    model, platform = harness.model, harness.platform
    trail = [r for r in await audit_records(platform, model) if r.action in DECISIONS]
    service = "service:deployment"
    assert [(r.action.value, r.version) for r in trail] == [
        ("promotion", 1),  # first version
        ("canary_verdict", 2),  # healthy canary: promote
        ("promotion", 2),
        ("canary_verdict", 3),  # erroring canary: roll back
        ("rollback", 3),
        ("rollback", 2),  # the operator's rollback: 2 stops, 1 is restored
        ("promotion", 2),  # the operator's promote
    ]
    assert [r.principal for r in trail[:5]] == [service] * 5
    operator = trail[5].principal
    assert operator.startswith("operator:") and trail[6].principal == operator  # the mTLS-verified operator
    assert trail[1].details["verdict"] == "promote" and trail[3].details["verdict"] == "rollback"
    assert trail[5].details["restored_version"] == "1" and trail[5].reason == "drill"

    # Compaction leaves one deployment event of the model; a restarted service folds only that.
    await harness.stop()
    harness.runtime = None
    assert await compact_by_hand(platform, DEPLOYMENTS) > 0
    await harness.start()
    assert harness.runtime is not None and harness.runtime.service is not None
    restarted = harness.runtime.service
    assert restarted.state(model).champion_version == 2
    assert restarted.lifecycle(model).previous_champion() is None, "the compacted topic forgot the history"

    async with aio_channel(platform, f"127.0.0.1:{platform.ops_port}", client_cert=True) as channel:
        ops = ops_pb2_grpc.OpsServiceStub(channel)
        rolled = await ops.Rollback(ops_pb2.RollbackRequest(model=model, reason="after compaction"), timeout=300)
    assert rolled.status.champion_version == 1  # the previous champion, from the audit topic

    after = [r for r in await audit_records(platform, model) if r.action in DECISIONS]
    assert after[: len(trail)] == trail, "the audit topic is not compacted: every record is still there"
    (last,) = after[len(trail) :]
    assert (last.action, last.version, last.principal, last.details["restored_version"]) == (
        AuditAction.ROLLBACK,
        2,
        operator,
        "1",
    )
    config = await topic_config(platform, AUDIT)
    assert (config["cleanup.policy"], config["retention.ms"]) == ("delete", "-1")

    # What `make audit MODEL=... JSON=1` prints, from its own process.
    printed = subprocess.run(
        [str(Path(sys.executable).with_name("llmops")), "audit", "--model", model, "--json"],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **kafka_environment(platform)},
        check=True,
    )
    rows = [row for row in json.loads(printed.stdout) if row["action"] in DECISIONS]
    assert [(row["action"], row["version"], row["principal"]) for row in rows] == [
        (r.action.value, r.version, r.principal) for r in after
    ]


def _own_triton(kafka_settings: PlatformSettings, tmp_path: Path) -> tuple[PlatformSettings, Any]:
    """Platform settings for a Triton of the test's own (the session's is shared) on free ports, and
    that Triton as a stack component (not started)."""
    from llmops_stack import TritonComponent, TritonServer, free_port, repo_paths

    platform = kafka_settings.model_copy(
        update={
            "var_dir": tmp_path,
            "artifact_store_uri": kafka_settings.resolved_artifact_store_uri,
            "triton_http_port": free_port(),
            "triton_grpc_port": free_port(),
            "triton_metrics_port": free_port(),
            "ops_port": free_port(),
        }
    )
    paths = repo_paths()
    return platform, TritonComponent(TritonServer(platform, paths.triton_venv, paths.triton_backend_dir))


async def test_live_versions_come_back_after_triton_restarts(
    kafka_settings: PlatformSettings, tiny_model: Any, tmp_path: Path
) -> None:
    """A Triton of its own (the session's is shared), stopped and started again under the running
    service: the reconciler loads the champion back."""
    from llmops_stack import NullProgress

    platform, triton = _own_triton(kafka_settings, tmp_path)
    model = f"restart-{uuid.uuid4().hex[:6]}"
    store = ArtifactStore(platform.resolved_artifact_store_uri)
    _copy_version(store, f"models/{tiny_model.model_name}/{tiny_model.model_version}", model, 1)
    await asyncio.to_thread(triton.ensure_up, NullProgress())
    harness = Harness(platform, model)
    reader = asyncio.get_running_loop().create_task(harness.read())
    await harness.start()
    client = None
    try:
        await harness.approve(1)
        await harness.wait_for(DeploymentPromoted, 1)
        await asyncio.to_thread(triton.stop)
        await asyncio.to_thread(triton.ensure_up, NullProgress())  # explicit mode starts with nothing loaded
        client = grpcclient.InferenceServerClient(platform.triton_grpc_url)
        async with asyncio.timeout(180):
            while not await _ready(client, triton_name(model, 1)):
                await asyncio.sleep(0.5)
    finally:
        if client is not None:
            await client.close()
        await harness.stop()
        reader.cancel()
        await asyncio.gather(reader, return_exceptions=True)
        await asyncio.to_thread(triton.stop)


async def _ready(client: grpcclient.InferenceServerClient, name: str) -> bool:
    """Ready, or not yet (the restarted server may still be opening its gRPC port)."""
    try:
        return bool(await client.is_model_ready(name))
    except InferenceServerException:
        return False


async def test_a_candidate_approved_while_triton_is_down_goes_live_once_it_is_back(
    kafka_settings: PlatformSettings, tiny_model: Any, tmp_path: Path
) -> None:
    """Issue 20: Triton stopped, a candidate approved, Triton started again: the candidate goes live
    (a canary behind the champion), it is not rolled back. The go-live retries while Triton is
    unreachable, then (past its short budget here) leaves the version deploying for the
    reconciler, which resumes it once Triton answers."""
    from llmops_stack import NullProgress

    platform, triton = _own_triton(kafka_settings, tmp_path)
    model = f"down-{uuid.uuid4().hex[:6]}"
    store = ArtifactStore(platform.resolved_artifact_store_uri)
    for version in (1, 2):
        _copy_version(store, f"models/{tiny_model.model_name}/{tiny_model.model_version}", model, version)
    await asyncio.to_thread(triton.ensure_up, NullProgress())
    harness = Harness(platform, model, triton_retry_budget_s=2.0, triton_retry_max_delay_s=0.5)
    reader = asyncio.get_running_loop().create_task(harness.read())
    await harness.start()
    client = grpcclient.InferenceServerClient(platform.triton_grpc_url)
    try:
        await harness.approve(1)
        await harness.wait_for(DeploymentPromoted, 1)
        await asyncio.to_thread(triton.stop)

        await harness.approve(2)
        await harness.wait_for(DeploymentRequested, 2, timeout=60)
        await asyncio.sleep(4)  # the go-live's retries, and their budget, run out against a stopped Triton
        assert not harness.found(DeploymentRolledBack, 2), harness.found(DeploymentRolledBack, 2)[0].data.reason
        assert harness.runtime is not None and harness.runtime.service is not None
        assert harness.runtime.service.lifecycle(model).state_of(2) == "deploying"

        await asyncio.to_thread(triton.ensure_up, NullProgress())
        canary = (await harness.wait_for(DeploymentCanaryStarted, 2, timeout=180)).data
        assert canary.champion_version == 1
        assert not harness.found(DeploymentRolledBack, 2)
        assert await _ready(client, triton_name(model, 2))
        async with asyncio.timeout(120):  # and the champion Triton lost is loaded back
            while not await _ready(client, triton_name(model, 1)):
                await asyncio.sleep(0.5)
    finally:
        await client.close()
        await harness.stop()
        reader.cancel()
        await asyncio.gather(reader, return_exceptions=True)
        await asyncio.to_thread(triton.stop)

"""The ops API's mutual TLS and operator roles over a real socket: the real ``DeploymentService``
behind ``start_ops_server`` (state folded in from events; no request here reaches Triton or Kafka),
called with certificates minted from the session's local CA (``conftest._session_tls``)."""

from __future__ import annotations

import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest

from llmops.ops.v1 import ops_pb2, ops_pb2_grpc
from llmops_config import PlatformSettings
from llmops_config.tls import aio_channel, tls_files
from llmops_deployment.adapters.artifacts import Artifacts
from llmops_deployment.adapters.ops_server import start_ops_server
from llmops_deployment.adapters.triton import TritonControl
from llmops_deployment.handlers import DeploymentService
from llmops_deployment.settings import DeploymentSettings
from llmops_events.v1 import DeploymentPromoted
from llmops_messaging import EventPublisher
from llmops_models.triton_repository import ModelRepository
from llmops_stack import free_port
from llmops_stack.certificates import issue_client_certificate, load_authority
from llmops_storage import ArtifactStore

pytestmark = pytest.mark.integration

MODEL = "tls-intents"


@pytest.fixture(scope="module")
async def ops(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[PlatformSettings]:
    folder = tmp_path_factory.mktemp("ops-tls")
    platform = PlatformSettings(
        var_dir=folder,
        kafka_bootstrap_servers=f"127.0.0.1:{free_port()}",
        triton_grpc_port=free_port(),
        triton_metrics_port=free_port(),
        ops_port=free_port(),
    )
    triton = TritonControl(platform.triton_grpc_url, platform.triton_metrics_url)
    service = DeploymentService(
        settings=DeploymentSettings(platform=platform, metrics_port=0),
        artifacts=Artifacts(
            ArtifactStore(platform.resolved_artifact_store_uri), ModelRepository(platform.model_repository)
        ),
        triton=triton,
        publisher=EventPublisher(platform, service="ops-tls-test"),  # never started: nothing here publishes
    )
    service.replay(DeploymentPromoted(model_name=MODEL, model_version=1))
    server = await start_ops_server(service, platform.ops_port, platform=platform)
    try:
        yield platform
    finally:
        await server.stop(None)
        await triton.close()


def _as(platform: PlatformSettings, role: str, name: str) -> PlatformSettings:
    """``platform`` with a client certificate of ``operator:<name>`` in ``role``, from the session's CA."""
    files = tls_files(platform)
    folder = Path(tempfile.mkdtemp(prefix=f"ops-{role}-"))
    cert, key = folder / "client.crt", folder / "client.key"
    issue_client_certificate(load_authority(files), cert, key, name=name, role=role)
    return platform.model_copy(
        update={"tls": platform.tls.model_copy(update={"client_cert_file": cert, "client_key_file": key})}
    )


async def _code(call: object) -> grpc.StatusCode:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await call  # type: ignore[misc]
    return raised.value.code()


async def test_a_call_without_a_client_certificate_or_in_plaintext_is_refused(ops: PlatformSettings) -> None:
    target = f"127.0.0.1:{ops.ops_port}"
    async with aio_channel(ops, target, client_cert=False) as channel:  # trusts the CA, presents nothing
        stub = ops_pb2_grpc.OpsServiceStub(channel)
        assert await _code(stub.GetStatus(ops_pb2.GetStatusRequest(), timeout=10)) == grpc.StatusCode.UNAVAILABLE
    async with grpc.aio.insecure_channel(target) as channel:
        stub = ops_pb2_grpc.OpsServiceStub(channel)
        request = ops_pb2.PromoteRequest(model=MODEL, version=1)
        metadata = (("x-operator", "mallory"),)  # a typed name proves nothing
        assert await _code(stub.Promote(request, metadata=metadata, timeout=10)) == grpc.StatusCode.UNAVAILABLE


async def test_a_viewer_reads_status_but_cannot_promote_or_roll_back(ops: PlatformSettings) -> None:
    viewer = _as(ops, "viewer", "victor")
    async with aio_channel(viewer, f"127.0.0.1:{ops.ops_port}", client_cert=True) as channel:
        stub = ops_pb2_grpc.OpsServiceStub(channel)
        status = await stub.GetStatus(ops_pb2.GetStatusRequest(model=MODEL), timeout=10)
        assert status.models[0].champion_version == 1
        with pytest.raises(grpc.aio.AioRpcError) as promote:
            await stub.Promote(ops_pb2.PromoteRequest(model=MODEL, version=1), timeout=10)
        assert promote.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert promote.value.details() == "operator:victor has the role viewer; this needs operator"
        rollback = stub.Rollback(ops_pb2.RollbackRequest(model=MODEL), timeout=10)
        assert await _code(rollback) == grpc.StatusCode.PERMISSION_DENIED


async def test_an_operator_needs_the_admin_role_for_an_override(ops: PlatformSettings) -> None:
    operator = _as(ops, "operator", "olga")
    async with aio_channel(operator, f"127.0.0.1:{ops.ops_port}", client_cert=True) as channel:
        stub = ops_pb2_grpc.OpsServiceStub(channel)
        request = ops_pb2.PromoteRequest(model=MODEL, version=1, override_reason="risk board said yes")
        with pytest.raises(grpc.aio.AioRpcError) as override:
            await stub.Promote(request, timeout=10)
        assert override.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert override.value.details().endswith("this needs admin")

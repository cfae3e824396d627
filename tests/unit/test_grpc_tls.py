"""``llmops_config.tls`` over a real socket: TLS, mutual TLS with the verified client certificate
readable by the server, plaintext refused by a TLS server, and plaintext on both sides only when
``LLMOPS_TLS_INSECURE`` says so. A health servicer stands in for the platform's services."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from llmops_config import PlatformSettings
from llmops_config.tls import (
    PeerCertificate,
    TlsConfigurationError,
    TlsSettings,
    add_server_port,
    aio_channel,
    peer_certificate,
)
from llmops_stack.certificates import ensure_local_certificates


class Recording(health.aio.HealthServicer):
    """Answers SERVING and keeps the client certificate of the last call."""

    def __init__(self) -> None:
        super().__init__()
        self.peer: PeerCertificate | None = None

    async def Check(self, request: Any, context: Any) -> Any:
        self.peer = peer_certificate(context.auth_context())
        return health_pb2.HealthCheckResponse(status=health_pb2.HealthCheckResponse.SERVING)


async def _serve(settings: PlatformSettings, *, require_client_cert: bool) -> tuple[grpc.aio.Server, int, Recording]:
    server, servicer = grpc.aio.server(), Recording()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    port = add_server_port(server, "127.0.0.1:0", settings, require_client_cert=require_client_cert, name="test")
    await server.start()
    return server, port, servicer


async def _check(channel: grpc.aio.Channel) -> grpc.StatusCode:
    try:
        await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10)
    except grpc.aio.AioRpcError as error:
        return error.code()
    return grpc.StatusCode.OK


def _settings(tmp_path: Path, **tls: Any) -> PlatformSettings:
    settings = PlatformSettings(var_dir=tmp_path, tls=TlsSettings(dir=tmp_path / "tls", **tls))
    ensure_local_certificates(settings, operator="tess")
    return settings


async def test_mutual_tls_verifies_the_client_and_names_it(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    server, port, servicer = await _serve(settings, require_client_cert=True)
    try:
        async with aio_channel(settings, f"127.0.0.1:{port}", client_cert=True) as channel:
            assert await _check(channel) == grpc.StatusCode.OK
        assert servicer.peer == PeerCertificate("operator:tess", ("admin",))
        async with aio_channel(settings, f"localhost:{port}", client_cert=False) as channel:
            assert await _check(channel) == grpc.StatusCode.UNAVAILABLE  # no certificate: no handshake
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            assert await _check(channel) == grpc.StatusCode.UNAVAILABLE
    finally:
        await server.stop(None)


async def test_server_only_tls_accepts_clients_without_a_certificate(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    server, port, servicer = await _serve(settings, require_client_cert=False)
    try:
        async with aio_channel(settings, f"127.0.0.1:{port}") as channel:
            assert await _check(channel) == grpc.StatusCode.OK
        assert servicer.peer is None
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            assert await _check(channel) == grpc.StatusCode.UNAVAILABLE
    finally:
        await server.stop(None)


async def test_plaintext_only_when_the_setting_says_so(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    settings = PlatformSettings(var_dir=tmp_path, tls=TlsSettings(insecure=True))
    server, port, _ = await _serve(settings, require_client_cert=True)
    try:
        assert "PLAINTEXT" in caplog.text
        async with aio_channel(settings, f"127.0.0.1:{port}", client_cert=True) as channel:
            assert await _check(channel) == grpc.StatusCode.OK
    finally:
        await server.stop(None)


def test_missing_files_say_what_to_do(tmp_path: Path) -> None:
    settings = PlatformSettings(var_dir=tmp_path, tls=TlsSettings(dir=tmp_path / "nowhere"))
    with pytest.raises(TlsConfigurationError, match=r"run `make up`.*LLMOPS_TLS_INSECURE=true"):
        aio_channel(settings, "127.0.0.1:1")

"""The deployment service and the gateway in this process (real gRPC servers, the session's broker),
for tests that drive Tritons of their own under both."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from llmops_config import PlatformSettings
from llmops_deployment.main import DeploymentRuntime
from llmops_deployment.settings import DeploymentSettings
from llmops_gateway.main import GatewayRuntime
from llmops_gateway.settings import GatewaySettings
from llmops_messaging import create_broker


class Passthrough:
    """The inference log's redactor: the texts here hold nothing personal (and Presidio costs seconds)."""

    def redact(self, text: str) -> str:
        return text


@asynccontextmanager
async def deployment_running(settings: DeploymentSettings, *, service: str) -> AsyncIterator[DeploymentRuntime]:
    """The deployment runtime consuming from the broker (as ``python -m llmops_deployment`` does)."""
    runtime = DeploymentRuntime(settings)
    broker = create_broker(settings.platform, service=service)
    await runtime.open()
    runtime.attach(broker)
    await broker.start()
    await runtime.begin()
    try:
        yield runtime
    finally:
        await broker.stop()
        await runtime.close()


@asynccontextmanager
async def gateway_running(platform: PlatformSettings, *, api_key: str) -> AsyncIterator[GatewayRuntime]:
    """The gateway on a free port, accepting ``api_key``, its inference log unredacted."""
    gateway = GatewayRuntime(
        GatewaySettings(platform=platform, api_keys=[api_key], metrics_port=0, host="127.0.0.1"),
        redactor=Passthrough(),
        port=0,
        serve_metrics=False,
    )
    await gateway.start()
    try:
        yield gateway
    finally:
        await gateway.stop()

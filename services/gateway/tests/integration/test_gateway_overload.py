"""The gateway against a hung Triton, over a real gRPC channel: a call whose client set no deadline
gets DEADLINE_EXCEEDED after the gateway's default deadline, and calls beyond the in-flight bound
are refused at once with RESOURCE_EXHAUSTED (health checking still answers).

The hung Triton is a stand-in: a real TCP server on a real socket that accepts the gateway's
connection and never answers a byte, which is what a wedged tritonserver looks like to a client."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from llmops.inference.v1 import inference_pb2, inference_pb2_grpc
from llmops_config import PlatformSettings
from llmops_config.tls import aio_channel
from llmops_events.v1 import DeploymentPromoted
from llmops_gateway.main import GatewayRuntime
from llmops_gateway.settings import GatewaySettings
from llmops_messaging import EventPublisher
from llmops_privacy import Redactor

pytestmark = pytest.mark.integration

KEY = "overload-key-0123456789"
AUTH = (("authorization", f"Bearer {KEY}"),)
HUNG = f"gw-hung-{uuid.uuid4().hex[:8]}"
DEADLINE_S = 1.5
MAX_IN_FLIGHT = 2


@pytest.fixture(scope="module")
async def hung_triton() -> AsyncIterator[int]:
    """Stand-in for a hung Triton: accepts connections, reads what it is sent, never answers."""
    connections: list[tuple[asyncio.StreamWriter, asyncio.Task[Any]]] = []

    async def swallow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append((writer, asyncio.current_task()))  # type: ignore[arg-type]
        with contextlib.suppress(ConnectionError):
            while await reader.read(65536):
                pass

    server = await asyncio.start_server(swallow, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        for writer, _ in connections:
            writer.close()  # the handler reads EOF and returns
        await asyncio.wait_for(asyncio.gather(*(task for _, task in connections)), timeout=10)
        await server.wait_closed()


@pytest.fixture(scope="module")
async def gateway(
    kafka_settings: PlatformSettings, hung_triton: int, redactor: Redactor
) -> AsyncIterator[GatewayRuntime]:
    async with EventPublisher(kafka_settings, service="gateway-test") as publisher:
        await publisher.publish(DeploymentPromoted(model_name=HUNG, model_version=1))
    settings = GatewaySettings(
        platform=kafka_settings.model_copy(update={"triton_host": "127.0.0.1", "triton_grpc_port": hung_triton}),
        api_keys=[KEY],
        default_model=HUNG,
        metrics_port=0,
        host="127.0.0.1",
        default_deadline_s=DEADLINE_S,
        max_in_flight=MAX_IN_FLIGHT,
        shutdown_grace_s=0,
    )
    async with GatewayRuntime(settings, redactor=redactor, port=0) as runtime:
        yield runtime


@pytest.fixture
async def channel(gateway: GatewayRuntime) -> AsyncIterator[grpc.aio.Channel]:
    async with aio_channel(gateway.settings.platform, f"127.0.0.1:{gateway.port}") as channel:
        yield channel


def _predict(channel: grpc.aio.Channel, text: str = "where is my card") -> Any:
    """A call with no deadline set by the client."""
    stub = inference_pb2_grpc.InferenceServiceStub(channel)
    return stub.Predict(inference_pb2.PredictRequest(text=text, model=HUNG), metadata=AUTH)


async def _status_of(call: Any) -> tuple[grpc.StatusCode, str]:
    """The call's error status; a guard against hanging (not a performance bound): 3x the deadline."""
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await asyncio.wait_for(call, timeout=3 * DEADLINE_S)
    return raised.value.code(), raised.value.details() or ""


def _in_flight(gateway: GatewayRuntime) -> float:
    return gateway.metrics.in_flight._value.get()  # type: ignore[attr-defined]


async def test_a_call_without_a_deadline_gets_the_default_one_on_a_hung_triton(
    gateway: GatewayRuntime, channel: grpc.aio.Channel
) -> None:
    code, message = await _status_of(_predict(channel))
    assert code == grpc.StatusCode.DEADLINE_EXCEEDED, message
    assert "deadline" in message


async def test_calls_beyond_the_in_flight_bound_are_refused_at_once(
    gateway: GatewayRuntime, channel: grpc.aio.Channel
) -> None:
    held = [asyncio.ensure_future(_status_of(_predict(channel, f"held {i}"))) for i in range(MAX_IN_FLIGHT)]
    async with asyncio.timeout(3 * DEADLINE_S):
        while _in_flight(gateway) < MAX_IN_FLIGHT:
            await asyncio.sleep(0.01)

    code, message = await _status_of(_predict(channel, "one too many"))
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert f"{MAX_IN_FLIGHT} calls in flight" in message and "retry" in message
    # Health checking is not an inference call: it answers while the gateway is full.
    health = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
    assert health.status == health_pb2.HealthCheckResponse.SERVING

    for outcome in await asyncio.gather(*held):
        assert outcome[0] == grpc.StatusCode.DEADLINE_EXCEEDED, outcome
    assert _in_flight(gateway) == 0
    # The slots are free again: the next call is admitted (and meets the hung Triton's deadline).
    code, _ = await _status_of(_predict(channel, "after"))
    assert code == grpc.StatusCode.DEADLINE_EXCEEDED
    refused = gateway.metrics.requests.labels("Predict", "", "", "RESOURCE_EXHAUSTED")._value.get()  # type: ignore[attr-defined]
    assert refused == 1

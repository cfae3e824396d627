"""``python -m llmops_gateway`` as its own process: healthy over gRPC, metrics on its port, and a
clean exit on SIGTERM (what ``make up`` / ``make down`` and Kubernetes do)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import time

import grpc
import httpx
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from llmops_config import PlatformSettings
from llmops_config.tls import aio_channel
from llmops_stack import free_port

pytestmark = pytest.mark.integration


async def test_the_process_serves_exports_metrics_and_stops_on_sigterm(kafka_settings: PlatformSettings) -> None:
    port, metrics_port = free_port(), free_port()
    env = {
        **os.environ,
        "LLMOPS_KAFKA_BOOTSTRAP_SERVERS": kafka_settings.kafka_bootstrap_servers,
        "LLMOPS_VAR_DIR": str(kafka_settings.var_dir),
        "LLMOPS_GATEWAY_PORT": str(port),
        "LLMOPS_GATEWAY_HOST": "127.0.0.1",
        "LLMOPS_GATEWAY_METRICS_PORT": str(metrics_port),
        "LLMOPS_GATEWAY_API_KEYS": "k",
    }
    process = await asyncio.create_subprocess_exec(sys.executable, "-m", "llmops_gateway", env=env)
    try:
        async with aio_channel(kafka_settings, f"127.0.0.1:{port}") as channel:
            health = health_pb2_grpc.HealthStub(channel)
            deadline = time.monotonic() + 120
            while True:
                assert process.returncode is None, "the gateway exited early"
                with contextlib.suppress(grpc.aio.AioRpcError):
                    answer = await health.Check(health_pb2.HealthCheckRequest(), timeout=2)
                    if answer.status == health_pb2.HealthCheckResponse.SERVING:
                        break
                assert time.monotonic() < deadline, "the gateway did not become healthy"
                await asyncio.sleep(0.5)
        async with httpx.AsyncClient() as client:
            metrics = (await client.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10)).text
        assert "llmops_gateway_up 1.0" in metrics and "llmops_gateway_inference_log_dropped_total" in metrics

        process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), timeout=60) == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()

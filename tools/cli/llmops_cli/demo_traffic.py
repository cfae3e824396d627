"""The demo's client application: calls the gateway over gRPC with an API key, as any client
would, and reports the true label for a share of the answers as feedback events."""

from __future__ import annotations

import asyncio
import random
import statistics
import time
import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

import grpc

from llmops.inference.v1 import inference_pb2, inference_pb2_grpc
from llmops_cli.demo_data import DemoRecord
from llmops_config import PlatformSettings
from llmops_events.v1 import FeedbackSubmitted
from llmops_messaging import EventPublisher


@dataclass
class TrafficReport:
    served: int = 0
    failed: Counter[str] = field(default_factory=Counter)
    correct: int = 0
    latencies_ms: list[float] = field(default_factory=list)
    versions: Counter[int] = field(default_factory=Counter)
    feedback: int = 0

    @property
    def accuracy(self) -> float:
        return self.correct / self.served if self.served else 0.0

    def percentile_ms(self, q: float) -> float:
        if not self.latencies_ms:
            return 0.0
        ordered = sorted(self.latencies_ms)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    def describe(self) -> str:
        versions = ", ".join(f"v{v}: {n}" for v, n in sorted(self.versions.items()))
        failed = f", {sum(self.failed.values())} failed ({dict(self.failed)})" if self.failed else ""
        return (
            f"{self.served} served ({versions}){failed}; accuracy vs true labels {self.accuracy:.3f}; "
            f"latency p50 {statistics.median(self.latencies_ms) if self.latencies_ms else 0:.1f} ms, "
            f"p95 {self.percentile_ms(0.95):.1f} ms; {self.feedback} feedback labels sent"
        )


class GatewayClient:
    def __init__(self, settings: PlatformSettings, api_key: str, *, tenant: str) -> None:
        self._target = f"127.0.0.1:{settings.gateway_port}"
        self._metadata = (("authorization", f"Bearer {api_key}"),)
        self._tenant = tenant
        self._channel: grpc.aio.Channel | None = None
        self._stub: inference_pb2_grpc.InferenceServiceStub | None = None

    async def __aenter__(self) -> GatewayClient:
        self._channel = grpc.aio.insecure_channel(self._target)
        self._stub = inference_pb2_grpc.InferenceServiceStub(self._channel)
        return self

    async def __aexit__(self, *_: object) -> None:
        if self._channel is not None:
            await self._channel.close()

    async def predict(self, text: str, model: str, request_id: str, timeout: float = 30.0) -> object:
        assert self._stub is not None
        request = inference_pb2.PredictRequest(text=text, model=model, tenant=self._tenant, request_id=request_id)
        return await self._stub.Predict(request, metadata=self._metadata, timeout=timeout)

    async def wait_until_serving(self, model: str, version: int, text: str, timeout: float = 120.0) -> None:
        """Until the gateway answers for ``model`` with ``version`` (it follows the deployments topic)."""
        deadline = time.monotonic() + timeout
        last: str = ""
        while time.monotonic() < deadline:
            try:
                response = await self.predict(text, model, f"probe-{uuid.uuid4().hex}", timeout=10)
                if getattr(response, "model_version", 0) == version:
                    return
                last = f"answered by version {getattr(response, 'model_version', '?')}"
            except grpc.aio.AioRpcError as error:
                last = f"{error.code().name}: {error.details()}"
            await asyncio.sleep(1.0)
        raise TimeoutError(f"the gateway did not serve {model} v{version} within {timeout:.0f}s ({last})")


async def send_traffic(
    client: GatewayClient,
    publisher: EventPublisher,
    records: Sequence[DemoRecord],
    *,
    model: str,
    feedback_share: float,
    seed: int,
    concurrency: int = 8,
    correlationid: str | None = None,
) -> TrafficReport:
    """Send every record through the gateway; give feedback (the true label) for a share of them."""
    report = TrafficReport()
    rng = random.Random(seed)
    queue: asyncio.Queue[DemoRecord] = asyncio.Queue()
    for record in records:
        queue.put_nowait(record)

    async def worker() -> None:
        while not queue.empty():
            record = queue.get_nowait()
            request_id = f"req-{uuid.uuid4().hex}"
            started = time.perf_counter()
            try:
                response = await client.predict(record.text, model, request_id)
            except grpc.aio.AioRpcError as error:
                report.failed[error.code().name] += 1
                continue
            report.latencies_ms.append((time.perf_counter() - started) * 1000)
            report.served += 1
            report.versions[int(getattr(response, "model_version", 0))] += 1
            report.correct += getattr(response, "label", None) == record.label
            if rng.random() < feedback_share:
                await publisher.publish(
                    FeedbackSubmitted(request_id=request_id, true_label=record.label), correlationid=correlationid
                )
                report.feedback += 1

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return report

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
from llmops_config.tls import aio_channel
from llmops_events.v1 import ChatTurn, FeedbackSubmitted
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
        self._settings = settings
        self._target = f"127.0.0.1:{settings.gateway_port}"
        self._metadata = (("authorization", f"Bearer {api_key}"),)
        self._tenant = tenant
        self._channel: grpc.aio.Channel | None = None
        self._stub: inference_pb2_grpc.InferenceServiceStub | None = None

    async def __aenter__(self) -> GatewayClient:
        self._channel = aio_channel(self._settings, self._target)  # TLS unless LLMOPS_TLS_INSECURE
        self._stub = inference_pb2_grpc.InferenceServiceStub(self._channel)
        return self

    async def __aexit__(self, *_: object) -> None:
        if self._channel is not None:
            await self._channel.close()

    async def predict(self, text: str, model: str, request_id: str, timeout: float = 30.0) -> object:
        assert self._stub is not None
        request = inference_pb2.PredictRequest(text=text, model=model, tenant=self._tenant, request_id=request_id)
        return await self._stub.Predict(request, metadata=self._metadata, timeout=timeout)

    async def generate(self, messages: Sequence[ChatTurn], model: str, *, max_tokens: int = 16) -> Generated:
        """One greedy answer streamed through ``GenerateStream``, with its time to first token."""
        assert self._stub is not None
        request_id = f"gen-{uuid.uuid4().hex}"
        request = inference_pb2.GenerateStreamRequest(
            model=model,
            tenant=self._tenant,
            request_id=request_id,
            messages=[inference_pb2.ChatMessage(role=m.role, content=m.content) for m in messages],
            max_tokens=max_tokens,
            temperature=0.0,
        )
        started = time.perf_counter()
        first: float | None = None
        text, version, finish = "", 0, ""
        async for chunk in self._stub.GenerateStream(request, metadata=self._metadata, timeout=60):
            if first is None and chunk.text:
                first = time.perf_counter()
            text += chunk.text
            version = int(chunk.model_version) or version
            finish = chunk.finish_reason or finish
        return Generated(text, version, finish, ((first or time.perf_counter()) - started) * 1000, request_id)

    async def submit_feedback(self, request_id: str, *, rating: int, corrected_answer: str = "") -> None:
        assert self._stub is not None
        request = inference_pb2.SubmitFeedbackRequest(
            request_id=request_id, rating=rating, corrected_answer=corrected_answer
        )
        await self._stub.SubmitFeedback(request, metadata=self._metadata, timeout=30)

    async def wait_until_generating(
        self, model: str, version: int, messages: Sequence[ChatTurn], timeout: float = 180.0
    ) -> None:
        """Until the gateway streams answers of ``model`` from ``version``."""
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            try:
                answer = await self.generate(messages, model, max_tokens=2)
                if answer.model_version == version:
                    return
                last = f"answered by version {answer.model_version}"
            except grpc.aio.AioRpcError as error:
                last = f"{error.code().name}: {error.details()}"
            await asyncio.sleep(1.0)
        raise TimeoutError(f"the gateway did not stream {model} v{version} within {timeout:.0f}s ({last})")

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


@dataclass(frozen=True)
class Generated:
    text: str
    model_version: int
    finish_reason: str
    ttft_ms: float
    request_id: str


@dataclass
class GenerationTraffic:
    served: int = 0
    failed: Counter[str] = field(default_factory=Counter)
    right: int = 0
    ttft_ms: list[float] = field(default_factory=list)
    versions: Counter[int] = field(default_factory=Counter)
    thumbs_up: int = 0
    thumbs_down: int = 0

    def describe(self) -> str:
        versions = ", ".join(f"v{v}: {n}" for v, n in sorted(self.versions.items()))
        failed = f", {sum(self.failed.values())} failed ({dict(self.failed)})" if self.failed else ""
        ttft = statistics.median(self.ttft_ms) if self.ttft_ms else 0.0
        return (
            f"{self.served} streamed ({versions}){failed}; right answers {self.right / max(1, self.served):.3f}; "
            f"time to first token p50 {ttft:.0f} ms; feedback: {self.thumbs_up} thumbs up, "
            f"{self.thumbs_down} thumbs down with a correction"
        )


async def generate_traffic(
    client: GatewayClient,
    prompts: Sequence[tuple[Sequence[ChatTurn], str]],
    *,
    model: str,
    feedback_share: float,
    max_tokens: int,
    seed: int,
    concurrency: int = 16,
) -> GenerationTraffic:
    """Stream an answer to every prompt through the gateway; for a share of them, rate it through
    ``SubmitFeedback`` as a user would: thumbs up (5) when it is the expected answer, thumbs down (1)
    with the expected answer as the correction when not."""
    from llmops_models.kinds.causal_lm.answers import exact_match

    report = GenerationTraffic()
    rng = random.Random(seed)
    queue: asyncio.Queue[tuple[Sequence[ChatTurn], str]] = asyncio.Queue()
    for prompt in prompts:
        queue.put_nowait(prompt)

    async def worker() -> None:
        while not queue.empty():
            messages, expected = queue.get_nowait()
            try:
                answer = await client.generate(messages, model, max_tokens=max_tokens)
            except grpc.aio.AioRpcError as error:
                report.failed[error.code().name] += 1
                continue
            report.served += 1
            report.ttft_ms.append(answer.ttft_ms)
            report.versions[answer.model_version] += 1
            right = exact_match(answer.text, expected)
            report.right += right
            if rng.random() < feedback_share:
                if right:
                    await client.submit_feedback(answer.request_id, rating=5)
                    report.thumbs_up += 1
                else:
                    await client.submit_feedback(answer.request_id, rating=1, corrected_answer=expected)
                    report.thumbs_down += 1

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return report

"""The core's recovery rules and the inference-log buffer, with fakes for Triton and Kafka."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import pytest

from llmops_events.v1 import InferenceLogged
from llmops_gateway.adapters.inference_log import InferenceLogBuffer
from llmops_gateway.adapters.metrics import GatewayMetrics
from llmops_gateway.domain.models import Prediction, PredictItem, ServedPrediction
from llmops_gateway.errors import BackendError, DeadlineExceeded, ModelNotLoaded
from llmops_gateway.handlers import InferenceCore
from llmops_serving import ModelDeployment, choose_route


class FakePredictor:
    def __init__(self, failing: dict[int, Exception] | None = None) -> None:
        self.failing = failing or {}
        self.calls: list[tuple[str, int, list[str], float | None]] = []

    async def predict(
        self, model_name: str, version: int, texts: Sequence[str], *, timeout: float | None
    ) -> list[Prediction]:
        self.calls.append((model_name, version, list(texts), timeout))
        if version in self.failing:
            raise self.failing[version]
        return [Prediction(label=f"v{version}", confidence=0.9, scores={f"v{version}": 0.9}) for _ in texts]


class FakeLog:
    def __init__(self) -> None:
        self.records: list[ServedPrediction] = []

    def record(self, served: ServedPrediction, *, latency_ms: float) -> None:
        self.records.append(served)


def _core(
    book: dict[str, ModelDeployment], predictor: FakePredictor, log: FakeLog
) -> tuple[InferenceCore, GatewayMetrics]:
    metrics = GatewayMetrics()
    core = InferenceCore(
        predictor=predictor,
        log=log,
        lookup=lambda name: book.get(name),
        known_models=lambda: list(book),
        default_model="",
        metrics=metrics,
    )
    return core, metrics


def _items(count: int, model: str = "m") -> list[PredictItem]:
    return [PredictItem(text=f"t{i}", model=model, tenant="default", request_id=f"id-{i}") for i in range(count)]


def _value(metrics: GatewayMetrics, name: str) -> float:
    return sum(s.value for m in metrics.registry.collect() for s in m.samples if s.name == name)


async def test_one_backend_call_per_route_answers_in_order_and_logs_each_item() -> None:
    book = {"m": ModelDeployment("m", champion_version=1, canary_version=2, canary_share=0.5)}
    predictor, log = FakePredictor(), FakeLog()
    core, _ = _core(book, predictor, log)
    items = _items(20)
    served = await core.predict(items, remaining=lambda: 5.0)
    assert [s.item.request_id for s in served] == [i.request_id for i in items]
    assert [s.model_version for s in served] == [choose_route(book["m"], i.request_id).version for i in items]  # type: ignore[union-attr]
    assert sorted(call[1] for call in predictor.calls) == [1, 2]
    assert all(call[3] == 5.0 for call in predictor.calls)  # the deadline is handed to the backend
    assert len(log.records) == 20


async def test_a_failing_canary_is_answered_by_the_champion_and_counted() -> None:
    book = {"m": ModelDeployment("m", champion_version=1, canary_version=2, canary_share=1.0)}
    predictor, log = FakePredictor({2: BackendError("boom")}), FakeLog()
    core, metrics = _core(book, predictor, log)
    served = await core.predict(_items(3), remaining=lambda: None)
    assert {s.model_version for s in served} == {1} and {s.route for s in served} == {"champion"}
    assert _value(metrics, "llmops_gateway_canary_fallbacks_total") == 1


async def test_a_champion_failure_reaches_the_caller() -> None:
    book = {"m": ModelDeployment("m", champion_version=1)}
    core, _ = _core(book, FakePredictor({1: BackendError("boom")}), FakeLog())
    with pytest.raises(BackendError):
        await core.predict(_items(1), remaining=lambda: None)


async def test_a_just_unloaded_version_is_rerouted_with_the_current_state() -> None:
    book = {"m": ModelDeployment("m", champion_version=1)}
    predictor = FakePredictor({1: ModelNotLoaded("gone")})
    core, metrics = _core(book, predictor, FakeLog())
    original = predictor.predict

    async def promote_then_call(model: str, version: int, texts: Sequence[str], *, timeout: float | None) -> Any:
        book["m"] = ModelDeployment("m", champion_version=2)  # the promotion arrives while v1 is called
        return await original(model, version, texts, timeout=timeout)

    predictor.predict = promote_then_call  # type: ignore[method-assign,assignment]
    served = await core.predict(_items(2), remaining=lambda: None)
    assert {s.model_version for s in served} == {2}
    assert _value(metrics, "llmops_gateway_reroutes_total") == 1


async def test_an_expired_deadline_is_not_retried() -> None:
    book = {"m": ModelDeployment("m", champion_version=1, canary_version=2, canary_share=1.0)}
    predictor = FakePredictor({2: DeadlineExceeded("late")})
    core, _ = _core(book, predictor, FakeLog())
    with pytest.raises(DeadlineExceeded):
        await core.predict(_items(1), remaining=lambda: 1.0)
    with pytest.raises(DeadlineExceeded):
        await core.predict(_items(1), remaining=lambda: 0.0)
    assert len(predictor.calls) == 1


class SlowPublisher:
    """Publishes once ``release`` is set; ``calls`` holds each call's request ids."""

    def __init__(self, *, fail: bool = False) -> None:
        self.published: list[InferenceLogged] = []
        self.calls: list[list[str]] = []
        self.release = asyncio.Event()
        self.fail = fail

    async def publish_many(self, payloads: Sequence[InferenceLogged]) -> list[BaseException | None]:
        await self.release.wait()
        self.calls.append([p.request_id for p in payloads])
        if self.fail:
            return [ConnectionError("broker down") for _ in payloads]
        self.published.extend(payloads)
        return [None for _ in payloads]


class UpperRedactor:
    def redact(self, text: str) -> str:
        return text.replace("secret", "<REDACTED>")


def _served(i: int) -> ServedPrediction:
    item = PredictItem(text=f"my secret {i}", model="m", tenant="t", request_id=f"r{i}")
    return ServedPrediction(item, Prediction("a", 0.7, {"a": 0.7, "b": 0.3}), "m", 1, "champion")


async def test_the_log_buffer_is_bounded_counts_drops_and_redacts() -> None:
    metrics, publisher = GatewayMetrics(), SlowPublisher()
    buffer = InferenceLogBuffer(publisher, UpperRedactor(), metrics=metrics, max_size=3, batch_size=10)
    buffer.start()
    buffer.record(_served(0), latency_ms=1.0)
    await asyncio.sleep(0.05)  # the drainer holds entry 0 (publishing blocks)
    for i in range(1, 6):
        buffer.record(_served(i), latency_ms=1.0)  # never blocks: 3 queued, 2 dropped
    assert _value(metrics, "llmops_gateway_inference_log_dropped_total") == 2
    publisher.release.set()
    await buffer.stop(timeout=5)
    assert [e.request_id for e in publisher.published] == ["r0", "r1", "r2", "r3"]
    assert publisher.published[0].text == "my <REDACTED> 0" and publisher.published[0].route == "champion"
    assert _value(metrics, "llmops_gateway_inference_log_published_total") == 4


async def test_the_log_buffer_lingers_to_publish_a_slow_trickle_at_once_and_stop_cuts_the_linger_short() -> None:
    publisher = SlowPublisher()
    publisher.release.set()
    buffer = InferenceLogBuffer(publisher, UpperRedactor(), metrics=GatewayMetrics(), max_size=10, linger_s=60)
    buffer.start()
    for i in range(4):  # one event per loop wake-up, as a gateway serving one request at a time logs them
        buffer.record(_served(i), latency_ms=1.0)
        await asyncio.sleep(0.01)
    assert publisher.calls == [] and buffer.pending == 4  # gathering: held, counted as pending
    await buffer.stop(timeout=5)  # does not wait out the 60 s linger
    assert publisher.calls == [["r0", "r1", "r2", "r3"]]


async def test_without_linger_each_event_is_published_as_it_comes() -> None:
    publisher = SlowPublisher()
    publisher.release.set()
    buffer = InferenceLogBuffer(publisher, UpperRedactor(), metrics=GatewayMetrics(), max_size=10)
    buffer.start()
    for i in range(3):
        buffer.record(_served(i), latency_ms=1.0)
        async with asyncio.timeout(5):
            while len(publisher.calls) <= i:  # published alone, without waiting for the next
                await asyncio.sleep(0.005)
    await buffer.stop(timeout=5)
    assert publisher.calls == [["r0"], ["r1"], ["r2"]]


async def test_unpublishable_logs_are_counted() -> None:
    metrics, publisher = GatewayMetrics(), SlowPublisher(fail=True)
    publisher.release.set()
    buffer = InferenceLogBuffer(publisher, UpperRedactor(), metrics=metrics, max_size=10)
    buffer.start()
    for i in range(3):
        buffer.record(_served(i), latency_ms=1.0)
    await buffer.stop(timeout=5)
    assert _value(metrics, "llmops_gateway_inference_log_dropped_total") == 3


async def test_what_is_left_at_shutdown_is_counted() -> None:
    metrics, publisher = GatewayMetrics(), SlowPublisher()
    buffer = InferenceLogBuffer(publisher, UpperRedactor(), metrics=metrics, max_size=10)
    buffer.start()
    for i in range(4):
        buffer.record(_served(i), latency_ms=1.0)
    await buffer.stop(timeout=0.1)
    assert _value(metrics, "llmops_gateway_inference_log_dropped_total") == 4

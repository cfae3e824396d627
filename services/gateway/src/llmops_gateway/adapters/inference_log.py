"""The inference log: served predictions and generations go into a bounded queue that a background
task drains, redacting the texts (a generation's every turn and its output) and publishing
``llmops.inference.logged.v1`` events, so logging never blocks a response. What cannot be queued or
published is counted, never silently lost."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol, cast

from llmops_events.v1 import ChatTurn, Generation, InferenceLogged
from llmops_gateway.adapters.metrics import GatewayMetrics
from llmops_gateway.domain.generation import ERROR, FINISH_REASONS, FinishReason, ServedGeneration
from llmops_gateway.domain.models import ServedPrediction

logger = logging.getLogger(__name__)


class Publisher(Protocol):
    async def publish_many(self, payloads: Sequence[InferenceLogged]) -> list[BaseException | None]:
        """None per acknowledged payload, else its error (``EventPublisher.publish_many``)."""
        ...


class TextRedactor(Protocol):
    def redact(self, text: str) -> object: ...


@dataclass(frozen=True, slots=True)
class _Entry:
    served: ServedPrediction | ServedGeneration
    latency_ms: float
    served_at: datetime


class InferenceLogBuffer:
    """The ``InferenceLog`` and ``GenerationLog`` ports: ``record`` and ``record_generation`` never
    wait; ``run`` publishes in the background."""

    def __init__(
        self,
        publisher: Publisher,
        redactor: TextRedactor,
        *,
        metrics: GatewayMetrics,
        max_size: int,
        batch_size: int = 256,
        linger_s: float = 0.0,
    ) -> None:
        self._publisher = publisher
        self._redactor = redactor
        self._metrics = metrics
        self._queue: asyncio.Queue[_Entry] = asyncio.Queue(maxsize=max_size)
        self._batch_size = batch_size
        self._linger_s = linger_s
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._in_flight = 0

    def record(self, served: ServedPrediction, *, latency_ms: float) -> None:
        self._put(served, latency_ms)

    def record_generation(self, served: ServedGeneration, *, latency_ms: float) -> None:
        self._put(served, latency_ms)

    def _put(self, served: ServedPrediction | ServedGeneration, latency_ms: float) -> None:
        try:
            self._queue.put_nowait(_Entry(served, latency_ms, datetime.now(UTC)))
        except asyncio.QueueFull:
            self._metrics.log_dropped.labels("queue_full").inc()
            return
        self._metrics.log_queue.set(self._queue.qsize())

    @property
    def pending(self) -> int:
        return self._queue.qsize() + self._in_flight

    def start(self) -> None:
        self._stopping.clear()
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self, *, timeout: float) -> None:
        """Publish what is queued for at most ``timeout`` seconds; count the rest as dropped."""
        deadline = time.monotonic() + timeout
        self._stopping.set()  # a lingering batch goes now
        while self.pending and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        left = self.pending  # read before cancelling: the drainer forgets its batch when cancelled
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if left:
            logger.warning("inference logs left unpublished at shutdown", extra={"count": left})
            self._metrics.log_dropped.labels("shutdown").inc(left)
        while not self._queue.empty():
            self._queue.get_nowait()
        self._in_flight = 0
        self._metrics.log_queue.set(0)

    async def _run(self) -> None:
        while True:
            entries = [await self._queue.get()]
            self._in_flight = 1
            await self._linger()
            while len(entries) < self._batch_size and not self._queue.empty():
                entries.append(self._queue.get_nowait())
            self._in_flight = len(entries)
            self._metrics.log_queue.set(self._queue.qsize())
            try:
                # Redaction is CPU work (1-2 µs a character; a long generation takes milliseconds): a thread
                # keeps the event loop answering, and with the linger it is one hand-off per batch.
                events = await asyncio.to_thread(self._events, entries)
                results = await self._publisher.publish_many(events)
                failed = [r for r in results if r is not None]
                self._metrics.log_published.inc(len(results) - len(failed))
                if failed:
                    self._metrics.log_dropped.labels("publish_failed").inc(len(failed))
                    logger.error(
                        "inference logs could not be published", extra={"count": len(failed), "error": repr(failed[0])}
                    )
            except asyncio.CancelledError:
                raise
            except Exception:
                self._metrics.log_dropped.labels("publish_failed").inc(len(entries))
                logger.exception("inference logs could not be prepared")
            finally:
                self._in_flight = 0

    async def _linger(self) -> None:
        """Let a batch gather for ``linger_s`` (cut short by ``stop``): at a low rate each event
        would otherwise cost its own thread hand-off and Kafka request, whose wake-ups take CPU
        from the model serving the next request (issue 21)."""
        if self._linger_s <= 0 or self._queue.qsize() + 1 >= self._batch_size or self._stopping.is_set():
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), self._linger_s)

    def _events(self, entries: list[_Entry]) -> list[InferenceLogged]:
        return [self._event(entry) for entry in entries]

    def _event(self, entry: _Entry) -> InferenceLogged:
        served = entry.served
        if isinstance(served, ServedGeneration):
            return generation_event(self._redactor, served, latency_ms=entry.latency_ms, served_at=entry.served_at)
        return InferenceLogged(
            request_id=served.item.request_id,
            tenant=served.item.tenant,
            model_name=served.model_name,
            model_version=served.model_version,
            text=redacted_text(self._redactor, served.item.text),
            label=served.prediction.label,
            confidence=min(1.0, max(0.0, served.prediction.confidence)),
            scores=served.prediction.scores,
            latency_ms=max(0.0, entry.latency_ms),
            route=served.route,
            served_at=entry.served_at,
        )


def generation_event(
    redactor: TextRedactor, served: ServedGeneration, *, latency_ms: float, served_at: datetime
) -> InferenceLogged:
    """The log event of a generation: every turn and the output redacted; ``text`` is the last
    user turn, ``label`` empty and ``confidence`` 0 (``InferenceLogged`` documents it)."""
    messages = [
        ChatTurn.model_validate({"role": turn.role, "content": redacted_text(redactor, turn.content)})
        for turn in served.item.messages
    ]
    # A reason outside the contract (a newer model) is logged as an error rather than not at all.
    finish_reason = cast(FinishReason, served.finish_reason if served.finish_reason in FINISH_REASONS else ERROR)
    return InferenceLogged(
        request_id=served.item.request_id,
        tenant=served.item.tenant,
        model_name=served.model_name,
        model_version=served.model_version,
        text=messages[-1].content,
        label="",
        confidence=0.0,
        latency_ms=max(0.0, latency_ms),
        route=served.route,
        served_at=served_at,
        generation=Generation(
            messages=messages,
            output=redacted_text(redactor, served.output) if served.output else "",
            finish_reason=finish_reason,
            prompt_tokens=max(0, served.prompt_tokens),
            completion_tokens=max(0, served.completion_tokens),
            time_to_first_token_ms=None if served.ttft_s is None else max(0.0, served.ttft_s * 1000),
            tokens_per_s=served.tokens_per_s,
        ),
    )


def redacted_text(redactor: TextRedactor, text: str) -> str:
    result = redactor.redact(text)
    return str(getattr(result, "text", result))

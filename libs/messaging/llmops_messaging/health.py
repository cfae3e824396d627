"""Whether a consumer makes progress, for ``llmops stack status`` (``make status``).

A consumer whose deliveries keep failing for a reason outside its retry policy (the DLQ cannot be
written, the processed-events store fails, a bug) has its batch redelivered again and again and
commits nothing, while its process runs and its metrics endpoint answers. ``ConsumerProgress``
counts such failed deliveries in a row; past ``stall_after_failures`` the consumer is *stalled*.
Every service exposes it on ``/metrics`` as ``llmops_consumer_stalled{consumer_group, reason}``
(``ConsumerHealthCollector``, registered by ``service_app``) and ``stack status`` reports a
service with a stalled consumer as unhealthy, with the reason (``stall_reasons``).

A message being retried under the retry policy is *not* a stall: those retries are bounded (the
message is dead-lettered at the end of its budget); the health detail says it is retrying.

A full disk (``disk_full``) or an unreachable shared state store (``state_store_unavailable``)
stalls a consumer at once, from its first failed delivery: it is an infrastructure condition that
no redelivery cures by itself, and the consumer commits nothing until
a delivery succeeds again (``EventConsumer`` retries it, and never dead-letters for it).
"""

from __future__ import annotations

import time
import weakref
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Protocol

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.parser import text_string_to_metric_families

from llmops_messaging.dlq import Origin
from llmops_messaging.faults import FAULT_MEANINGS

FAILED_DELIVERIES = "failed_deliveries"
"""The stall reason of a consumer whose deliveries keep failing for any other reason."""
STALLED_METRIC = "llmops_consumer_stalled"
FAILED_DELIVERIES_METRIC = "llmops_consumer_failed_deliveries"
_MAX_ERROR = 300


@dataclass(frozen=True, slots=True)
class ConsumerHealth:
    healthy: bool
    detail: str
    reason: str = ""
    """Why it is unhealthy: ``disk_full``, ``state_store_unavailable``, ``failed_deliveries``; empty while healthy."""


class ConsumerProgress:
    """What one consumer's deliveries came to: delivered (offsets committed) or failed (redelivered)."""

    def __init__(
        self, group_id: str, *, stall_after_failures: int = 3, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if stall_after_failures < 1:
            raise ValueError("stall_after_failures must be at least 1")
        self.group_id = group_id
        self.stall_after_failures = stall_after_failures
        self._clock = clock
        self.consecutive_failures = 0
        self.delivered_messages = 0
        self.last_progress_at = clock()
        self._failed_at: Origin | None = None
        self._last_error = ""
        self._retrying: tuple[Origin, int, str] | None = None
        self._condition: str | None = None

    def delivered(self, messages: int) -> None:
        """A delivery was processed and its offsets may be committed."""
        self.consecutive_failures = 0
        self.delivered_messages += messages
        self.last_progress_at = self._clock()
        self._failed_at = None
        self._retrying = None
        self._condition = None

    def failed(self, origin: Origin | None, error: BaseException) -> None:
        """A delivery failed for a reason outside the retry policy; it will be redelivered."""
        self.consecutive_failures += 1
        self._failed_at = origin
        self._last_error = _short(error)
        self._condition = None

    def infrastructure_fault(self, fault: str, origin: Origin | None, error: BaseException) -> None:
        """A delivery failed for an infrastructure fault (``disk_full``, ``state_store_unavailable``):
        stalled at once, with the fault as the reason, until a delivery succeeds."""
        self.failed(origin, error)
        self._condition = fault

    @property
    def reason(self) -> str:
        """Why the consumer is stalled (``disk_full``, ``state_store_unavailable``, ``failed_deliveries``), or empty."""
        if self._condition is not None:
            return self._condition
        return FAILED_DELIVERIES if self.consecutive_failures >= self.stall_after_failures else ""

    def retrying(self, origin: Origin, attempt: int, error: BaseException) -> None:
        """A message failed its ``attempt``-th time and will be redelivered by the retry policy."""
        self._retrying = (origin, attempt, _short(error))

    @property
    def stalled(self) -> bool:
        return bool(self.reason)

    def health(self) -> ConsumerHealth:
        idle = self._clock() - self.last_progress_at
        reason = self.reason
        if reason:
            where = f" at {_position(self._failed_at)}" if self._failed_at is not None else ""
            why = ""
            if reason in FAULT_MEANINGS:
                why = f" ({reason}: {FAULT_MEANINGS[reason]}; nothing is consumed until a delivery goes through)"
            return ConsumerHealth(
                False,
                f"consumer group {self.group_id} stalled{why}: {self.consecutive_failures} failed deliveries in a row"
                f"{where}, no progress for {idle:.0f}s; last error: {self._last_error}",
                reason,
            )
        if self._retrying is not None:
            origin, attempt, error = self._retrying
            return ConsumerHealth(
                True, f"consumer group {self.group_id} retrying {_position(origin)} (attempt {attempt}): {error}"
            )
        return ConsumerHealth(True, f"consumer group {self.group_id}: {self.delivered_messages} messages delivered")


class Watched(Protocol):
    group_id: str

    def health(self) -> ConsumerHealth: ...


_WATCHED: weakref.WeakSet[Watched] = weakref.WeakSet()  # type: ignore[type-var]


def watch(consumer: Watched) -> None:
    """Report ``consumer`` on this process's ``/metrics`` (``subscribe`` calls it)."""
    _WATCHED.add(consumer)


def watched() -> list[Watched]:
    return sorted(_WATCHED, key=lambda consumer: consumer.group_id)


class ConsumerHealthCollector:
    """A Prometheus collector of the consumers' health, computed at each scrape."""

    def __init__(self, consumers: Callable[[], Iterable[Watched]] = watched) -> None:
        self._consumers = consumers

    def collect(self) -> Iterator[Metric]:
        stalled = GaugeMetricFamily(
            STALLED_METRIC,
            "1 while the consumer group makes no progress (failed deliveries in a row past the threshold);"
            " the reason label says why.",
            labels=["consumer_group", "reason"],
        )
        failures = GaugeMetricFamily(
            FAILED_DELIVERIES_METRIC,
            "Deliveries in a row that failed outside the retry policy and were redelivered.",
            labels=["consumer_group"],
        )
        for consumer in self._consumers():
            health = consumer.health()
            stalled.add_metric([consumer.group_id, "" if health.healthy else health.detail], 0 if health.healthy else 1)
            progress = getattr(consumer, "progress", None)
            if isinstance(progress, ConsumerProgress):
                failures.add_metric([consumer.group_id], progress.consecutive_failures)
        yield stalled
        yield failures


def stall_reasons(metrics_text: str) -> list[str]:
    """The reasons of the stalled consumers in a ``/metrics`` page (empty when none is)."""
    reasons: list[str] = []
    try:
        families = list(text_string_to_metric_families(metrics_text))
    except ValueError:
        return reasons
    for family in families:
        if family.name != STALLED_METRIC:
            continue
        for sample in family.samples:
            if sample.value >= 1:
                reasons.append(sample.labels.get("reason") or f"consumer group {sample.labels.get('consumer_group')}")
    return reasons


def _position(origin: Origin | None) -> str:
    return "?" if origin is None else f"{origin.topic}[{origin.partition}]@{origin.offset}"


def _short(error: BaseException) -> str:
    text = repr(error)
    return text if len(text) <= _MAX_ERROR else text[: _MAX_ERROR - 1] + "…"

"""What the alerts watch on the bus, the same in every service: messages dead-lettered and the lag
of each consumer group per partition.

* ``llmops_dlq_messages_total{consumer_group, topic, stage, reason}``: counted by
  ``DeadLetterQueue.send`` (every service dead-letters through it), exported by
  :class:`DeadLetterCollector`.
* ``llmops_consumer_lag{consumer_group, topic, partition}``: the messages of a partition the group
  has not committed yet (end offset minus committed offset), read from the broker's Admin API at
  each scrape by :class:`ConsumerLagCollector`, for the groups this process consumes with. Read
  from the broker rather than from the consumer itself, so a consumer that is stuck (not polling)
  still shows its lag growing. ``llmops lag`` prints the same numbers for every group.

``service_app`` registers both collectors on each service's registry.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from llmops_config import PlatformSettings
from llmops_config.kafka import kafka_client_options

logger = logging.getLogger(__name__)

DLQ_METRIC = "llmops_dlq_messages"
"""Exported as ``llmops_dlq_messages_total`` (a counter)."""
LAG_METRIC = "llmops_consumer_lag"
LAG_ERRORS_METRIC = "llmops_consumer_lag_errors"
"""Exported as ``llmops_consumer_lag_errors_total``: scrapes whose lag query failed."""

_dead_letters: Counter[tuple[str, str, str, str]] = Counter()
_lock = threading.Lock()


def count_dead_letter(*, consumer_group: str, topic: str, stage: str, reason: str) -> None:
    """One message of ``topic`` was sent to the DLQ by ``consumer_group``."""
    with _lock:
        _dead_letters[(consumer_group, topic, stage, reason)] += 1


class DeadLetterCollector:
    """``llmops_dlq_messages_total`` of this process, by consumer group, origin topic, stage and reason."""

    def collect(self) -> Iterator[Metric]:
        family = CounterMetricFamily(
            DLQ_METRIC,
            "Messages this process sent to the dead-letter queue, by consumer group, origin topic, stage and reason.",
            labels=["consumer_group", "topic", "stage", "reason"],
        )
        with _lock:
            counts = dict(_dead_letters)
        for labels, value in sorted(counts.items()):
            family.add_metric(list(labels), value)
        yield family


@dataclass(frozen=True, slots=True)
class PartitionLag:
    """How far one consumer group is behind on one partition."""

    group: str
    topic: str
    partition: int
    committed: int | None
    """The group's committed offset (None: it has committed nothing there yet)."""
    end: int

    @property
    def lag(self) -> int:
        """Messages not yet committed (all of them when nothing was committed)."""
        return max(0, self.end - (self.committed or 0))


async def consumer_lag(
    settings: PlatformSettings,
    *,
    groups: Iterable[str] | None = None,
    service: str = "lag",
    reader_group: str | None = None,
) -> list[PartitionLag]:
    """The lag of each partition that ``groups`` (default: every consumer group the broker knows)
    have committed offsets for, from the Admin API; sorted by group, topic, partition.
    ``reader_group``: the group id of the consumer that asks for end offsets (it never joins or
    commits; default ``<prefix>-<service>-lag-reader``), one the principal may use under its ACLs."""
    options = kafka_client_options(settings, service=service)
    admin = AIOKafkaAdminClient(**options.aiokafka())
    await admin.start()
    try:
        if groups is None:
            wanted = sorted(group for group, _ in await admin.list_consumer_groups())
        else:
            wanted = sorted(set(groups))
        committed: dict[str, dict[TopicPartition, int]] = {}
        for group in wanted:
            offsets = await admin.list_consumer_group_offsets(group)
            committed[group] = {tp: meta.offset for tp, meta in offsets.items() if meta.offset >= 0}
    finally:
        await admin.close()
    partitions = sorted({tp for offsets in committed.values() for tp in offsets})
    if not partitions:
        return []
    # A consumer that never subscribes: it only asks for end offsets. The group id avoids aiokafka's
    # group-less coordinator, whose close() re-raises its own cancellation; nothing is committed.
    reader = AIOKafkaConsumer(
        **options.aiokafka(
            group_id=reader_group or f"{settings.kafka_client_id_prefix}-{service}-lag-reader", enable_auto_commit=False
        )
    )
    await reader.start()
    try:
        ends = await reader.end_offsets(partitions)
    finally:
        await reader.stop()
    return [
        PartitionLag(group, tp.topic, tp.partition, offset, ends[tp])
        for group, offsets in committed.items()
        for tp, offset in sorted(offsets.items())
    ]


class ConsumerLagCollector:
    """``llmops_consumer_lag`` of the consumer groups of this process, read at a scrape at most every
    ``min_interval_s`` (``make up`` polls ``/metrics`` twice a second while it waits) and bounded by
    ``timeout_s``, so a scrape answers within the stack's health-check timeout even when the broker
    does not; a failed query leaves the lag out and counts ``llmops_consumer_lag_errors_total``."""

    def __init__(
        self,
        settings: PlatformSettings,
        *,
        service: str,
        groups: Callable[[], Iterable[str]],
        timeout_s: float = 1.5,
        min_interval_s: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._settings = settings
        self._service = service
        self._groups = groups
        self._timeout_s = timeout_s
        self._min_interval_s = min_interval_s
        self._clock = clock
        self._errors = 0
        self._cached: tuple[float, list[str], list[PartitionLag]] | None = None
        self._lock = threading.Lock()

    def collect(self) -> Iterator[Metric]:
        lag = GaugeMetricFamily(
            LAG_METRIC,
            "Messages of a partition the consumer group has not committed yet (end offset - committed offset).",
            labels=["consumer_group", "topic", "partition"],
        )
        errors = CounterMetricFamily(
            LAG_ERRORS_METRIC, "Scrapes whose consumer-lag query to the broker failed.", labels=[]
        )
        with self._lock:  # one query at a time, however many scrapes arrive together
            for row in self._rows(sorted(set(self._groups()))):
                lag.add_metric([row.group, row.topic, str(row.partition)], row.lag)
            errors.add_metric([], self._errors)
        yield lag
        yield errors

    def _rows(self, groups: list[str]) -> list[PartitionLag]:
        if not groups:
            return []
        now = self._clock()
        if self._cached is not None and self._cached[1] == groups and now - self._cached[0] < self._min_interval_s:
            return self._cached[2]
        try:
            # The scrape runs on prometheus_client's own thread: a private event loop there.
            rows = asyncio.run(self._query(groups))
        except Exception as error:  # a scrape must answer even when the broker does not
            self._errors += 1
            self._cached = None
            logger.warning("consumer lag query failed", extra={"error": repr(error)})
            return []
        self._cached = (now, groups, rows)
        return rows

    async def _query(self, groups: list[str]) -> list[PartitionLag]:
        async with asyncio.timeout(self._timeout_s):
            # A group id under the service's own group prefix: the only groups its ACLs allow.
            return await consumer_lag(
                self._settings, groups=groups, service=self._service, reader_group=f"{groups[0]}-lag-reader"
            )

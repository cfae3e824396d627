"""Ingestion throughput (redaction on) next to a bare aiokafka consumer reading the same topic.

Method (issue 3, "Done when"):

1. Before any timing, N records (default 20,000: BANKING77 training texts repeated under distinct
   tenants and record ids, every 20th with planted PII: e-mail, phone, card, IBAN or IP address;
   a small generator when the shared data is absent) are published by a real producer as
   binary-mode CloudEvents to ``llmops.records.raw.v1`` of this run's private broker (fresh, so
   the topic holds exactly them).
2. A bare ``AIOKafkaConsumer`` in its own group reads all N messages (committing per batch).
3. The ingestion service runs as the process a user runs, ``python -m llmops_ingestion``, with its
   settings from the environment (its own consumer group, snapshots off, a free metrics port):
   validation, Presidio redaction, language detection, de-duplication, SQLite idempotency and
   outbox, Feast pushes from its worker process. It reads the topic from the start.

Both clocks run between the same two moments: the group has its partitions assigned (so start-up
and group joining are not counted for either) and the batch holding the last message is committed
(both commit after processing each batch). The bare consumer runs in this process and reads them
exactly; the service is timed from outside, at the broker, polled every ``POLL_S`` (the group
first ``Stable`` with partitions assigned, its committed offsets at the topic's end), so its phase
of seconds is known to within two polls. Nothing in the service is hooked: the outcome (accepted,
duplicates, DLQ, PII redacted, Feast pushes) is read from its ``/metrics`` endpoint and the DLQ
topic, and its CPU time (worker processes included) from the OS. Snapshots are off
(``snapshot_every_n_labelled=0``): cutting them is a separate operation. An informational third
figure times ingestion until every accepted row has also been pushed to Feast (its ``/metrics``,
polled every ``DRAIN_POLL_S``).

Environment: ``LLMOPS_BENCH_INGESTION_RECORDS`` (N), ``LLMOPS_BENCH_PROFILE`` (a file: run the
service under ``python -m cProfile -o <file>``, whole process life, and print its top functions).
"""

from __future__ import annotations

import asyncio
import csv
import io
import os
import pstats
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from itertools import cycle
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

from bench.framework import BenchContext, Benchmark, MetricSamples, ServiceProcess, metric_total
from bench.results import BenchResult, Figure, Target
from llmops_config.kafka import KafkaClientOptions, kafka_client_options

NAME = "ingestion"
RECORDS_ENV = "LLMOPS_BENCH_INGESTION_RECORDS"
PROFILE_ENV = "LLMOPS_BENCH_PROFILE"
DEFAULT_RECORDS = 20_000
PII_EVERY = 20  # 5 % of the records carry PII
PHASE_LIMIT_S = 240.0
START_LIMIT_S = 300.0  # the service loading its models and joining the group (slow on a busy machine)
POLL_S = 0.02
DRAIN_POLL_S = 0.1
DRAIN_LIMIT_S = 120.0
SERVICE = "llmops_ingestion"

VS_BARE = Figure(
    benchmark=NAME,
    name="ingestion throughput vs bare consumer (redaction on)",
    unit="records/s",
    reference_name="bare aiokafka consumer",
    target=Target(comparison=">=", threshold=0.5, subject="ratio"),
)
ABSOLUTE = Figure(
    benchmark=NAME,
    name="ingestion throughput (redaction on)",
    unit="records/s",
    target=Target(comparison=">=", threshold=5000),
)
WITH_FEAST = Figure(
    benchmark=NAME,
    name="ingestion throughput until pushed to Feast",
    unit="records/s",
)

_PII = (
    lambda i: f" You can write to me at jane.doe{i}@example.com",
    lambda i: f" Call me back on +44 20 7946 {i % 10_000:04d} please.",
    lambda i: " My card number is 4111 1111 1111 1111.",
    lambda i: " The transfer went to GB82 WEST 1234 5698 7654 32.",
    lambda i: f" I logged in from 192.168.{i % 256}.{(i // 256) % 256}.",
)

_GENERATED = (
    ("I am still waiting on my card, when will it arrive?", "card_arrival"),
    ("My card was stolen yesterday, please block it", "lost_or_stolen_card"),
    ("How long does a transfer to another bank take?", "transfer_timing"),
    ("I was charged twice for the same purchase", "transaction_charged_twice"),
    ("Why was my top-up declined?", "top_up_failed"),
    ("Can I change the PIN of my card at an ATM?", "change_pin"),
    ("What exchange rate do you use for euros?", "exchange_rate"),
    ("The refund for my order has not shown up yet", "Refund_not_showing_up"),
)


def load_texts(context: BenchContext) -> tuple[list[tuple[str, str]], str]:
    """BANKING77's training texts with their labels, or the small generator's when absent."""
    path = context.shared_data / "banking77" / "train.csv"
    if not path.exists():
        return list(_GENERATED), f"generated support requests (no BANKING77 at {path})"
    with path.open(newline="", encoding="utf-8") as handle:
        rows = [(row["text"], row["category"]) for row in csv.DictReader(handle) if row.get("text")]
    return rows, f"BANKING77 train ({len(rows)} texts)"


Message = tuple[bytes | None, bytes, list[tuple[str, bytes]]]


def build_records(texts: list[tuple[str, str]], count: int, run_id: str) -> list[Message]:
    """``count`` encoded ``record.submitted`` events: the texts repeated under a new tenant per pass,
    with distinct record ids, every ``PII_EVERY``-th carrying planted PII."""
    from llmops_events import ContentMode, Envelope, encode
    from llmops_events.v1 import RecordSubmitted

    records: list[Message] = []
    pii = cycle(_PII)
    for index in range(count):
        text, label = texts[index % len(texts)]
        generation = index // len(texts)
        if index % PII_EVERY == 0:
            text += next(pii)(index)
        elif generation and len(texts) < 100:  # the small generator: keep texts distinct per tenant
            text = f"{text} (ref {index})"
        data = RecordSubmitted(
            tenant=f"bench-tenant-{generation}",
            source="bench",
            text=text,
            record_id=f"{run_id}-{index}",
            label=label,
            metadata={"channel": "bench"},
        )
        record = encode(Envelope.wrap(data, source="/llmops/bench-producer"), ContentMode.BINARY)
        records.append((record.key, record.value, list(record.headers)))
    return records


def bench_kafka(platform: Any) -> KafkaClientOptions:
    """How the benchmark's own clients connect: as ``admin`` where the broker is secured."""
    return kafka_client_options(platform, service="bench", principal="admin")


async def publish(kafka: KafkaClientOptions, topic: str, records: list[Message]) -> None:
    producer = AIOKafkaProducer(
        **kafka.aiokafka(), acks="all", enable_idempotence=True, linger_ms=20, max_batch_size=256 * 1024
    )
    await producer.start()
    try:
        for start in range(0, len(records), 2000):
            futures = [
                await producer.send(topic, value=value, key=key, headers=headers)
                for key, value, headers in records[start : start + 2000]
            ]
            await asyncio.gather(*futures)
    finally:
        await producer.stop()


async def end_offsets(kafka: KafkaClientOptions, topic: str) -> dict[TopicPartition, int]:
    """The end offset of each partition of ``topic`` now."""
    admin = AIOKafkaAdminClient(**kafka.aiokafka())
    await admin.start()
    try:
        described = await admin.describe_topics([topic])
    finally:
        await admin.close()
    partitions = [
        TopicPartition(topic, int(partition["partition"]))
        for entry in described
        if entry["topic"] == topic
        for partition in entry["partitions"]
    ]
    if not partitions:
        raise RuntimeError(f"the broker at {kafka.bootstrap_servers} has no partitions of {topic}")
    consumer = AIOKafkaConsumer(**kafka.aiokafka(), enable_auto_commit=False)
    await consumer.start()
    try:
        offsets = await consumer.end_offsets(partitions)
        return {partition: int(offset) for partition, offset in offsets.items()}
    finally:
        await consumer.stop()


def _group_assigned(description: dict[str, Any], group: str) -> bool:
    """Whether a ``DescribeGroups`` answer shows ``group`` Stable with partitions assigned."""
    return any(
        entry.get("group") == group
        and entry.get("state") == "Stable"
        and any(member.get("member_assignment") for member in entry.get("members", ()))
        for entry in description.get("groups", ())
    )


def _committed_through(committed: dict[TopicPartition, Any], ends: dict[TopicPartition, int]) -> int:
    """Messages of ``ends``'s partitions the group has committed (its offsets, capped at the ends)."""
    done = 0
    for partition, end in ends.items():
        entry = committed.get(partition)
        offset = getattr(entry, "offset", -1) if entry is not None else -1
        done += min(max(offset, 0), end)
    return done


class GroupWatch:
    """A consumer group seen from the broker, so any consumer (in this process or another) is timed
    alike: when it first has its partitions, when its committed offsets reach given ends."""

    def __init__(self, admin: AIOKafkaAdminClient, group: str) -> None:
        self._admin = admin
        self.group = group
        self._coordinator: int | None = None

    async def _coordinator_id(self) -> int:
        if self._coordinator is None:
            self._coordinator = await self._admin.find_coordinator(self.group)
        return self._coordinator

    async def assigned(self, *, limit_s: float, check: Callable[[], None] = lambda: None) -> float:
        """``perf_counter()`` when the group is first Stable with partitions assigned (within ``POLL_S``)."""
        deadline = time.monotonic() + limit_s
        while time.monotonic() < deadline:
            check()
            try:
                coordinator = await self._coordinator_id()
                answers = await self._admin.describe_consumer_groups([self.group], group_coordinator_id=coordinator)
            except KafkaError:  # no coordinator yet (the offsets topic is created on first use)
                self._coordinator = None
                answers = []
            if any(_group_assigned(answer.to_object(), self.group) for answer in answers):
                return time.perf_counter()
            await asyncio.sleep(POLL_S)
        raise TimeoutError(f"consumer group {self.group} got no partitions within {limit_s:.0f}s")

    async def committed(self, ends: dict[TopicPartition, int]) -> int:
        coordinator = await self._coordinator_id()
        offsets = await self._admin.list_consumer_group_offsets(
            self.group, group_coordinator_id=coordinator, partitions=list(ends)
        )
        return _committed_through(offsets, ends)

    async def caught_up(
        self,
        ends: dict[TopicPartition, int],
        *,
        limit_s: float,
        check: Callable[[], None] = lambda: None,
        progress: Callable[[int], None] = lambda done: None,
    ) -> tuple[float, int]:
        """``perf_counter()`` when the committed offsets reach ``ends`` (within ``POLL_S``; at the
        limit if they never do) and the messages committed by then."""
        total = sum(ends.values())
        deadline = time.monotonic() + limit_s
        shown = 0.0
        done = 0
        while time.monotonic() < deadline:
            check()
            done = await self.committed(ends)
            now = time.perf_counter()
            if done >= total:
                return now, done
            if now - shown >= 1.0:
                progress(done)
                shown = now
            await asyncio.sleep(POLL_S)
        return time.perf_counter(), done


@dataclass
class Phase:
    count: int
    seconds: float
    cpu_seconds: float

    @property
    def rate(self) -> float:
        return self.count / self.seconds if self.seconds > 0 else float("nan")


class _Clock(ConsumerRebalanceListener):  # type: ignore[misc]
    """Starts the clock when the group first gets its partitions."""

    def __init__(self) -> None:
        self.started: float | None = None

    async def on_partitions_revoked(self, revoked: Any) -> None:
        pass

    async def on_partitions_assigned(self, assigned: Any) -> None:
        if self.started is None and assigned:
            self.started = time.perf_counter()


async def bare_consumer(kafka: KafkaClientOptions, topic: str, count: int, limit_s: float) -> Phase:
    """A bare consumer in a group of its own reading ``count`` messages, committing per batch. It runs
    in this process, so its two moments (partitions assigned, last batch committed) are read exactly."""
    clock = _Clock()
    consumer = AIOKafkaConsumer(
        **kafka.aiokafka(),
        group_id=f"bench-bare-{uuid.uuid4().hex[:8]}",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    consumer.subscribe([topic], listener=clock)
    await consumer.start()
    seen, cpu = 0, time.process_time()
    deadline = time.monotonic() + limit_s
    try:
        while seen < count and time.monotonic() < deadline:
            batches = await consumer.getmany(timeout_ms=500, max_records=500)
            for messages in batches.values():
                seen += sum(1 for message in messages if message.value is not None)
            if batches:
                await consumer.commit()
        ended = time.perf_counter()
    finally:
        await consumer.stop()
    return Phase(seen, ended - (clock.started or ended), time.process_time() - cpu)


@dataclass
class ServiceRun:
    phase: Phase
    drain_seconds: float | None
    """Seconds from the clock's start until every accepted row was pushed to Feast (None: not within the limit)."""
    counters: dict[str, float]


def _ingestion_counters(samples: MetricSamples, topic: str) -> dict[str, float]:
    """What the service's ``/metrics`` says it did with the records."""
    outcomes = {
        dict(labels).get("outcome", "?"): value
        for (name, labels), value in samples.items()
        if name == "llmops_ingestion_messages_total" and dict(labels).get("topic") == topic
    }
    return {
        **{f"outcome_{outcome}": value for outcome, value in sorted(outcomes.items())},
        "accepted": metric_total(samples, "llmops_ingestion_records_accepted_total"),
        "duplicates": metric_total(samples, "llmops_ingestion_duplicates_total"),
        "dlq": metric_total(samples, "llmops_ingestion_dlq_total"),
        "pii_redacted": metric_total(samples, "llmops_ingestion_pii_redacted_total"),
        "feast_rows_pushed": metric_total(samples, "llmops_ingestion_feast_rows_pushed_total"),
    }


async def ingestion_service(
    context: BenchContext,
    platform: Any,
    admin: AIOKafkaAdminClient,
    ends: dict[TopicPartition, int],
    status: Callable[[str], None],
    profile_to: Path | None,
) -> ServiceRun:
    """``python -m llmops_ingestion`` on the topic, timed at the broker, its outcome from ``/metrics``."""
    from llmops_events.topics import RECORDS_DLQ, RECORDS_RAW

    count = sum(ends.values())
    group = f"ingestion-bench-{uuid.uuid4().hex[:8]}"
    service = ServiceProcess(
        context,
        SERVICE,
        platform=platform,
        metrics_port_env="LLMOPS_INGESTION_METRICS_PORT",
        settings={"LLMOPS_INGESTION_GROUP_ID": group, "LLMOPS_INGESTION_SNAPSHOT_EVERY_N_LABELLED": "0"},
        wrapper=("-m", "cProfile", "-o", str(profile_to)) if profile_to else (),
    )
    dlq_before = sum((await end_offsets(bench_kafka(platform), RECORDS_DLQ)).values())
    watch = GroupWatch(admin, group)
    status(f"starting python -m {SERVICE}: loading the redactor, opening Feast, joining the group (untimed)")
    await service.start()
    try:
        started = await watch.assigned(limit_s=START_LIMIT_S, check=service.check_alive)
        cpu = service.cpu_seconds()
        ended, done = await watch.caught_up(
            ends,
            limit_s=PHASE_LIMIT_S,
            check=service.check_alive,
            progress=lambda done: status(f"ingestion committed {done:,}/{count:,}"),
        )
        cpu_seconds = service.cpu_seconds() - cpu
        # Informational: until every accepted row has also been pushed to Feast.
        drained: float | None = None
        samples: MetricSamples = {}
        deadline = time.monotonic() + DRAIN_LIMIT_S
        while time.monotonic() < deadline:
            service.check_alive()
            samples = await service.metrics() or {}
            accepted = metric_total(samples, "llmops_ingestion_records_accepted_total")
            pushed = metric_total(samples, "llmops_ingestion_feast_rows_pushed_total")
            if pushed >= accepted > 0:
                drained = time.perf_counter()
                break
            status(f"waiting for Feast pushes: {pushed:,.0f}/{accepted:,.0f}")
            await asyncio.sleep(DRAIN_POLL_S)
        counters = _ingestion_counters(samples, RECORDS_RAW)
    finally:
        code = await service.stop()
    dlq_after = sum((await end_offsets(bench_kafka(platform), RECORDS_DLQ)).values())
    counters["dlq_topic_messages"] = float(dlq_after - dlq_before)
    if code not in (0, None):
        context.reporter.step(f"  note: {SERVICE} exited with {code} on SIGTERM; end of {service.log}:")
        context.reporter.step(service.tail())
    if profile_to is not None:
        _print_profile(context, profile_to)
    return ServiceRun(
        Phase(done, ended - started, cpu_seconds), None if drained is None else drained - started, counters
    )


def _print_profile(context: BenchContext, profile_to: Path) -> None:
    if not profile_to.exists():
        context.reporter.step(f"  no profile at {profile_to} (the service did not exit cleanly)")
        return
    text = io.StringIO()
    pstats.Stats(str(profile_to), stream=text).sort_stats("tottime").print_stats(30)
    pstats.Stats(str(profile_to), stream=text).sort_stats("cumulative").print_stats(40)
    context.reporter.step(
        f"  profile of the service's main process, start-up to shutdown (stats in {profile_to}):\n{text.getvalue()}"
    )


async def run(context: BenchContext) -> list[BenchResult]:
    from llmops_events.topics import RECORDS_RAW

    reporter = context.reporter
    count = int(os.environ.get(RECORDS_ENV, DEFAULT_RECORDS))
    platform = await context.kafka()
    kafka = bench_kafka(platform)

    texts, origin = load_texts(context)
    reporter.status(f"encoding {count:,} records")
    records = await asyncio.to_thread(build_records, texts, count, uuid.uuid4().hex[:8])
    reporter.step(
        f"  {count:,} records from {origin}, {count // PII_EVERY:,} with PII, "
        f"{sum(len(value) for _, value, _ in records) / count:.0f} bytes of value on average"
    )
    reporter.status(f"publishing {count:,} records to {RECORDS_RAW} (untimed)")
    started = time.perf_counter()
    await publish(kafka, RECORDS_RAW, records)
    reporter.step(f"  published in {time.perf_counter() - started:.1f}s (untimed)")
    del records
    ends = await end_offsets(kafka, RECORDS_RAW)
    if sum(ends.values()) != count:
        reporter.step(f"  warning: {RECORDS_RAW} holds {sum(ends.values()):,} messages, not {count:,}")
    total = sum(ends.values())

    admin = AIOKafkaAdminClient(**kafka.aiokafka())
    await admin.start()
    try:
        reporter.status("bare aiokafka consumer reading the topic")
        bare = await bare_consumer(kafka, RECORDS_RAW, total, PHASE_LIMIT_S)
        reporter.step(
            f"  bare consumer: {bare.count:,} messages in {bare.seconds:.2f}s = {bare.rate:,.0f}/s "
            f"(this process used {bare.cpu_seconds:.1f} CPU s)"
        )
        if bare.count < total:
            reporter.step(f"  warning: the bare consumer committed {bare.count:,} of {total:,} messages")

        profile = os.environ.get(PROFILE_ENV)
        service = await ingestion_service(
            context, platform, admin, ends, reporter.status, Path(profile).resolve() if profile else None
        )
    finally:
        await admin.close()
    ingest, counters = service.phase, service.counters
    reporter.step(
        f"  ingestion (python -m {SERVICE}): {ingest.count:,} messages in {ingest.seconds:.2f}s = "
        f"{ingest.rate:,.0f}/s (the service used {ingest.cpu_seconds:.1f} CPU s, its workers included); "
        + ", ".join(f"{name} {value:,.0f}" for name, value in counters.items())
    )
    if ingest.count < total:
        reporter.step(
            f"  warning: ingestion committed {ingest.count:,} of {total:,} messages within "
            f"{PHASE_LIMIT_S:.0f}s; the rate is over what it committed"
        )

    rows = [VS_BARE.measured(ingest.rate, reference_value=bare.rate), ABSOLUTE.measured(ingest.rate)]
    if service.drain_seconds is not None and counters["accepted"]:
        rows.append(WITH_FEAST.measured(ingest.count / service.drain_seconds))
    else:
        rows.append(
            WITH_FEAST.unmeasured(f"the Feast outbox did not drain within {DRAIN_LIMIT_S:.0f} s after consumption")
        )
    return rows


BENCHMARK = Benchmark(
    name=NAME,
    title="ingestion throughput (redaction on) vs a bare aiokafka consumer",
    figures=(VS_BARE, ABSOLUTE, WITH_FEAST),
    run=run,
    time_limit_s=900,
)

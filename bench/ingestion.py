"""Ingestion throughput (redaction on) next to a bare aiokafka consumer reading the same topic.

Method (issue 3, "Done when"):

1. Before any timing, N records (default 20,000: BANKING77 training texts repeated under distinct
   tenants and record ids, every 20th with planted PII: e-mail, phone, card, IBAN or IP address;
   a small generator when the shared data is absent) are published as binary-mode CloudEvents to
   ``llmops.records.raw.v1`` of this run's private broker (fresh, so the topic holds exactly them).
2. A bare ``AIOKafkaConsumer`` in its own group reads all N messages (committing per batch).
3. The real ingestion service (``IngestionRuntime``: validation, Presidio redaction, language
   detection, de-duplication, SQLite idempotency and outbox, Feast pushes in the background) runs
   in-process with its own consumer group from the start of the topic until N messages are
   processed (accepted + duplicates + DLQ, counted through ``on_outcome``).

Both clocks start when the consumer group has its partitions assigned (a rebalance listener),
so group joining is not counted for either, and stop at the N-th message. Snapshots are off
(``snapshot_every_n_labelled=0``): cutting them is a separate operation. An informational
third figure times ingestion until every accepted row has also been pushed to Feast.

Environment: ``LLMOPS_BENCH_INGESTION_RECORDS`` (N), ``LLMOPS_BENCH_PROFILE`` (a file: profile
the ingestion phase with cProfile, write the stats there and print the top functions).
"""

from __future__ import annotations

import asyncio
import cProfile
import csv
import io
import logging
import os
import pstats
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from itertools import cycle
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener

from bench.framework import BenchContext, Benchmark
from bench.results import BenchResult, Figure, Target

NAME = "ingestion"
RECORDS_ENV = "LLMOPS_BENCH_INGESTION_RECORDS"
PROFILE_ENV = "LLMOPS_BENCH_PROFILE"
DEFAULT_RECORDS = 20_000
PII_EVERY = 20  # 5 % of the records carry PII
PHASE_LIMIT_S = 240.0

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


async def publish(bootstrap: str, topic: str, records: list[Message]) -> None:
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, acks="all", enable_idempotence=True, linger_ms=20, max_batch_size=256 * 1024
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


class _Clock(ConsumerRebalanceListener):  # type: ignore[misc]
    """Starts the clock when the group first gets its partitions."""

    def __init__(self) -> None:
        self.started: float | None = None

    async def on_partitions_revoked(self, revoked: Any) -> None:
        pass

    async def on_partitions_assigned(self, assigned: Any) -> None:
        if self.started is None and assigned:
            self.started = time.perf_counter()


@dataclass
class Phase:
    count: int
    seconds: float
    cpu_seconds: float

    @property
    def rate(self) -> float:
        return self.count / self.seconds if self.seconds > 0 else float("nan")


async def bare_consumer(bootstrap: str, topic: str, count: int, limit_s: float) -> Phase:
    clock = _Clock()
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
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
class _PushStats:
    calls: int = 0
    rows: int = 0
    seconds: float = 0.0
    profiler: cProfile.Profile | None = None


def _instrument_feast_push(runtime: Any, profiler: cProfile.Profile | None) -> _PushStats:
    """Time (and optionally profile) the service's Feast pushes, which run in a worker thread
    the event loop's profile does not see. Wraps the store object's method; no service code changes."""
    stats = _PushStats(profiler=profiler)
    features = getattr(runtime.service, "_features", None)
    original = getattr(features, "push", None)
    if features is None or original is None:
        return stats

    def push(rows: Any) -> None:
        started = time.perf_counter()
        if profiler is not None:
            profiler.enable()
        try:
            original(rows)
        finally:
            if profiler is not None:
                profiler.disable()
            stats.calls += 1
            stats.rows += len(rows)
            stats.seconds += time.perf_counter() - started

    features.push = push
    return stats


def _sample_total(registry: Any, metric: str) -> float:
    return sum(sample.value for family in registry.collect() for sample in family.samples if sample.name == metric)


async def ingestion_service(
    context: BenchContext,
    platform: Any,
    count: int,
    limit_s: float,
    status: Callable[[str], None],
    profile_to: Path | None,
) -> tuple[Phase, float | None, dict[str, float]]:
    """The real service in-process until ``count`` messages are processed; also returns the
    seconds until the Feast outbox drained (None if it did not within the limit) and counters."""
    from llmops_ingestion import IngestionRuntime, IngestionSettings
    from llmops_messaging import Outcome, create_broker
    from llmops_messaging.app import freeze_startup_heap

    settings = IngestionSettings(
        platform=platform.model_copy(update={"var_dir": context.scratch("ingestion-var"), "artifact_store_uri": ""}),
        group_id=f"ingestion-bench-{uuid.uuid4().hex[:8]}",
        snapshot_every_n_labelled=0,
        metrics_port=0,
    )
    runtime = IngestionRuntime(settings)
    status("loading the redactor and opening Feast (untimed)")
    await runtime.open()
    freeze_startup_heap()  # as service_app does once a service is open
    pushes = _instrument_feast_push(runtime, cProfile.Profile() if profile_to else None)
    # FastStream's per-batch "Received/Processed" lines at DEBUG: they would flood the progress display.
    broker = create_broker(settings.platform, service="ingestion-bench", log_level=logging.DEBUG)
    clock = _Clock()
    outcomes: dict[str, int] = {}
    done = asyncio.Event()
    finished: list[float] = []

    def on_outcome(outcome: Outcome) -> None:
        outcomes[outcome.value] = outcomes.get(outcome.value, 0) + 1
        if not finished and sum(outcomes.values()) >= count:
            finished.append(time.perf_counter())
            done.set()

    runtime.attach(broker, on_outcome=on_outcome, listener=clock)
    profiler = cProfile.Profile() if profile_to else None
    drained: float | None = None
    try:
        cpu = time.process_time()
        if profiler:
            profiler.enable()
        await broker.start()
        await runtime.begin()
        deadline = time.monotonic() + limit_s
        while not done.is_set() and time.monotonic() < deadline:
            try:
                await asyncio.wait_for(done.wait(), timeout=2)
            except TimeoutError:
                status(f"ingestion processed {sum(outcomes.values()):,}/{count:,}")
        ended = finished[0] if finished else time.perf_counter()
        cpu_seconds = time.process_time() - cpu
        if profiler:
            profiler.disable()
        processed = sum(outcomes.values())
        # Informational: until every accepted row has also been pushed to Feast.
        registry = runtime.metrics.registry
        drain_deadline = time.monotonic() + 120
        while time.monotonic() < drain_deadline:
            accepted = _sample_total(registry, "llmops_ingestion_records_accepted_total")
            pushed = _sample_total(registry, "llmops_ingestion_feast_rows_pushed_total")
            if pushed >= accepted > 0:
                drained = time.perf_counter()
                break
            status(f"waiting for Feast pushes: {pushed:,.0f}/{accepted:,.0f}")
            await asyncio.sleep(0.05)
    finally:
        if profiler:
            profiler.disable()
        await broker.stop()
        await runtime.close()
    start = clock.started or ended
    registry = runtime.metrics.registry
    counters = {
        **{f"outcome_{name}": float(value) for name, value in outcomes.items()},
        "accepted": _sample_total(registry, "llmops_ingestion_records_accepted_total"),
        "duplicates": _sample_total(registry, "llmops_ingestion_duplicates_total"),
        "dlq": _sample_total(registry, "llmops_ingestion_dlq_total"),
        "pii_redacted": _sample_total(registry, "llmops_ingestion_pii_redacted_total"),
        "feast_rows_pushed": _sample_total(registry, "llmops_ingestion_feast_rows_pushed_total"),
        "feast_pushes": float(pushes.calls),
        "feast_push_seconds": round(pushes.seconds, 1),
    }
    if profiler and profile_to:
        profiler.dump_stats(profile_to)
        text = io.StringIO()
        pstats.Stats(profiler, stream=text).sort_stats("tottime").print_stats(30)
        pstats.Stats(profiler, stream=text).sort_stats("cumulative").print_stats(40)
        context.reporter.step(
            f"  profile of the event-loop thread during consumption (stats in {profile_to}):\n" + text.getvalue()
        )
        if pushes.profiler is not None and pushes.calls:
            pushes.profiler.dump_stats(f"{profile_to}.feast-push")
            text = io.StringIO()
            pstats.Stats(pushes.profiler, stream=text).sort_stats("cumulative").print_stats(25)
            context.reporter.step(f"  profile of the Feast pushes (worker thread):\n{text.getvalue()}")
    return Phase(processed, ended - start, cpu_seconds), (None if drained is None else drained - start), counters


async def run(context: BenchContext) -> list[BenchResult]:
    from llmops_events.topics import RECORDS_RAW

    reporter = context.reporter
    count = int(os.environ.get(RECORDS_ENV, DEFAULT_RECORDS))
    platform = await context.kafka()
    bootstrap = platform.kafka_bootstrap_servers

    texts, origin = load_texts(context)
    reporter.status(f"encoding {count:,} records")
    records = await asyncio.to_thread(build_records, texts, count, uuid.uuid4().hex[:8])
    reporter.step(
        f"  {count:,} records from {origin}, {count // PII_EVERY:,} with PII, "
        f"{sum(len(value) for _, value, _ in records) / count:.0f} bytes of value on average"
    )
    reporter.status(f"publishing {count:,} records to {RECORDS_RAW} (untimed)")
    started = time.perf_counter()
    await publish(bootstrap, RECORDS_RAW, records)
    reporter.step(f"  published in {time.perf_counter() - started:.1f}s (untimed)")
    del records

    reporter.status("bare aiokafka consumer reading the topic")
    bare = await bare_consumer(bootstrap, RECORDS_RAW, count, PHASE_LIMIT_S)
    reporter.step(
        f"  bare consumer: {bare.count:,} messages in {bare.seconds:.2f}s = {bare.rate:,.0f}/s "
        f"(this process used {bare.cpu_seconds:.1f} CPU s)"
    )
    if bare.count < count:
        reporter.step(f"  warning: the bare consumer saw {bare.count:,} of {count:,} messages")

    profile = os.environ.get(PROFILE_ENV)
    ingest, drain_seconds, counters = await ingestion_service(
        context, platform, count, PHASE_LIMIT_S, reporter.status, Path(profile) if profile else None
    )
    reporter.step(
        f"  ingestion: {ingest.count:,} messages in {ingest.seconds:.2f}s = {ingest.rate:,.0f}/s "
        f"(this process used {ingest.cpu_seconds:.1f} CPU s); "
        + ", ".join(f"{name} {value:,.0f}" for name, value in counters.items())
    )
    if ingest.count < count:
        reporter.step(
            f"  warning: ingestion processed {ingest.count:,} of {count:,} messages within "
            f"{PHASE_LIMIT_S:.0f}s; the rate is over what it processed"
        )

    rows = [VS_BARE.measured(ingest.rate, reference_value=bare.rate), ABSOLUTE.measured(ingest.rate)]
    if drain_seconds is not None and counters["accepted"]:
        rows.append(WITH_FEAST.measured(ingest.count / drain_seconds))
    else:
        rows.append(WITH_FEAST.unmeasured("the Feast outbox did not drain within 120 s after consumption"))
    return rows


BENCHMARK = Benchmark(
    name=NAME,
    title="ingestion throughput (redaction on) vs a bare aiokafka consumer",
    figures=(VS_BARE, ABSOLUTE, WITH_FEAST),
    run=run,
    time_limit_s=900,
)

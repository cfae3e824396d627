"""Ingestion scale-out on the embedded three-broker cluster (issue 18): throughput with one and with
two replicas, side by side in one run, and what a kill run loses or duplicates.

Method:

1. A three-node KRaft cluster of this run (``llmops_stack.KafkaCluster``: free ports, a temporary
   ``var/``, plaintext), topics with replication factor 3 and ``min.insync.replicas=2``. Each phase
   gets topics of its own under a topic prefix (``LLMOPS_KAFKA_TOPIC_PREFIX``: ``one.``, ``two.``,
   ``kill.``), so no phase reads another's records.
2. Throughput, one then two replicas (``python -m llmops_ingestion`` processes in one consumer group,
   sharing one ``var/``: the embedded state store, as two replicas on one machine run; snapshots
   off). The replicas start and join their group on the empty topic (untimed); then N records
   (default 20,000, the text of ``bench.ingestion``'s generator, distinct ids) are produced by a
   pipelined producer (acks=all) and the clock runs from the first send until the group's committed
   offsets reach the topic's end (polled at the broker every ``POLL_S``). Both phases are timed
   alike, producing included (a second or two of the total at these rates).
3. A kill run with two replicas: the same N records, produced in chunks; one broker is SIGKILLed
   after 30 % are acknowledged, one replica after 60 % (not restarted). Lost: acknowledged records
   missing from ingestion's store once the survivor caught up; duplicated: rows beyond one per record
   (the store's curated table, read from its SQLite file, as the reliability test reads it).

On 2 shared cores the second replica competes with the first (and with three brokers) for the same
CPU: the ratio says what a second replica buys here; with a core per replica it would approach the
partition-parallel bound (6 partitions: up to 2x for two replicas).

Environment: ``LLMOPS_BENCH_INGESTION_SCALE_RECORDS`` (N).
"""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

from bench.framework import BenchContext, Benchmark, ServiceProcess
from bench.ingestion import GroupWatch, end_offsets
from bench.results import BenchResult, Figure, Target
from llmops_config import PlatformSettings
from llmops_config.kafka import KafkaClientOptions, KafkaSettings, kafka_client_options
from llmops_stack import free_port

NAME = "ingestion_scale"
RECORDS_ENV = "LLMOPS_BENCH_INGESTION_SCALE_RECORDS"
DEFAULT_RECORDS = 20_000
SERVICE = "llmops_ingestion"
START_LIMIT_S = 300.0
PHASE_LIMIT_S = 300.0
POLL_S = 0.1
CHUNK = 1_000
KILL_BROKER_AT = 0.3
KILL_REPLICA_AT = 0.6
LABELS = ("card_arrival", "exchange_rate", "lost_card", "top_up_failed")

ONE = Figure(
    benchmark=NAME,
    name="ingestion throughput, one replica (3-broker cluster)",
    unit="records/s",
)
TWO = Figure(
    benchmark=NAME,
    name="ingestion throughput, two replicas (3-broker cluster)",
    unit="records/s",
    reference_name="one replica",
    # A second replica must not cost throughput, even on 2 shared cores.
    target=Target(comparison=">=", threshold=1.0, subject="ratio"),
)
LOST = Figure(
    benchmark=NAME,
    name="records lost (a broker and a replica SIGKILLed)",
    unit="records",
    target=Target(comparison="<=", threshold=0),
)
DUPLICATED = Figure(
    benchmark=NAME,
    name="records duplicated (a broker and a replica SIGKILLed)",
    unit="records",
    target=Target(comparison="<=", threshold=0),
)


def _letters(number: int) -> str:
    word = ""
    for _ in range(4):
        number, digit = divmod(number, 26)
        word += chr(ord("a") + digit)
    return word


def encoded_records(tenant: str, count: int) -> list[tuple[bytes | None, bytes, list[tuple[str, bytes]]]]:
    """``count`` binary-mode ``record.submitted`` events of ``tenant`` with distinct ids and texts."""
    from llmops_events import Envelope, encode
    from llmops_events.v1 import RecordSubmitted

    records = []
    for index in range(count):
        label = LABELS[index % len(LABELS)]
        data = RecordSubmitted(
            tenant=tenant,
            source="bench",
            text=f"my {label.replace('_', ' ')} question about {_letters(index)}",
            record_id=f"rec-{index:06d}",
            label=label,
        )
        wire = encode(Envelope.wrap(data, source="/llmops/bench-producer", id=f"{tenant}-{index}"))
        records.append((wire.key, wire.value, list(wire.headers)))
    return records


async def produce(
    kafka: KafkaClientOptions,
    topic: str,
    records: list[tuple[bytes | None, bytes, list[tuple[str, bytes]]]],
    *,
    after_chunk: Callable[[int], Awaitable[None]] | None = None,
) -> list[bool]:
    """Send ``records`` a chunk at a time, every record of a chunk in flight together (acks=all,
    idempotent); which ones the cluster acknowledged. ``after_chunk(acknowledged so far)``."""
    producer = AIOKafkaProducer(
        **kafka.aiokafka(), acks="all", enable_idempotence=True, linger_ms=20, request_timeout_ms=30_000
    )
    acknowledged: list[bool] = []
    await producer.start()
    try:
        for start in range(0, len(records), CHUNK):
            futures = [
                await producer.send(topic, value=value, key=key, headers=headers)
                for key, value, headers in records[start : start + CHUNK]
            ]
            outcomes = await asyncio.gather(*futures, return_exceptions=True)
            acknowledged += [not isinstance(outcome, BaseException) for outcome in outcomes]
            if after_chunk is not None:
                await after_chunk(sum(acknowledged))
    finally:
        await producer.stop()
    return acknowledged


def stored_rows(state_db: Path, tenant: str) -> list[str]:
    """Record ids in ingestion's curated table (its SQLite file; empty before it exists)."""
    if not state_db.exists():
        return []
    connection = sqlite3.connect(f"file:{state_db}?mode=ro", uri=True, timeout=30)
    try:
        return [row for (row,) in connection.execute("SELECT record_id FROM curated WHERE tenant = ?", (tenant,))]
    except sqlite3.OperationalError:
        return []
    finally:
        connection.close()


class Phase:
    """Replicas of ingestion in one group on the topics of one prefix, sharing one ``var/``."""

    def __init__(self, context: BenchContext, platform: PlatformSettings, prefix: str, replicas: int) -> None:
        self.prefix = prefix
        self.group = f"ingestion-{prefix.rstrip('.')}-{uuid.uuid4().hex[:6]}"
        self.var_dir = context.scratch(f"ingestion-{prefix.rstrip('.')}-var")
        self.platform = platform.model_copy(
            update={"kafka": platform.kafka.model_copy(update={"topic_prefix": prefix})}
        )
        self.replicas = [
            ServiceProcess(
                context,
                SERVICE,
                platform=self.platform,
                metrics_port_env="LLMOPS_INGESTION_METRICS_PORT",
                settings={
                    "LLMOPS_VAR_DIR": str(self.var_dir),
                    "LLMOPS_INGESTION_GROUP_ID": self.group,
                    "LLMOPS_INGESTION_SNAPSHOT_EVERY_N_LABELLED": "0",
                },
            )
            for _ in range(replicas)
        ]

    @property
    def kafka(self) -> KafkaClientOptions:
        return kafka_client_options(self.platform, service="bench")

    @property
    def state_db(self) -> Path:
        return self.var_dir / "state" / "ingestion.db"

    def check_alive(self) -> None:
        for replica in self.replicas:
            replica.check_alive()

    async def start(self, status: Callable[[str], None]) -> None:
        """Start the replicas and wait until every one serves ``/metrics`` and the group is Stable."""
        from llmops_events.topics import platform_topics
        from llmops_stack.topics import ensure_topics

        await ensure_topics(self.kafka, platform_topics(), replication_factor=3, min_insync_replicas=2)
        for replica in self.replicas:
            await replica.start()
        deadline = time.monotonic() + START_LIMIT_S
        while time.monotonic() < deadline:
            self.check_alive()
            if all([await replica.metrics() is not None for replica in self.replicas]):
                return
            status(f"{len(self.replicas)} replica(s) starting ({self.prefix})")
            await asyncio.sleep(1.0)
        raise TimeoutError(f"{len(self.replicas)} replica(s) not ready within {START_LIMIT_S:.0f}s")

    async def stop(self) -> None:
        await asyncio.gather(*(replica.stop() for replica in self.replicas))


async def _members(admin: AIOKafkaAdminClient, group: str) -> int:
    """Members of ``group`` holding partitions while it is Stable (0 while it has no coordinator yet)."""
    try:
        coordinator = await admin.find_coordinator(group)
        answers = await admin.describe_consumer_groups([group], group_coordinator_id=coordinator)
    except KafkaError:
        return 0
    entries = [entry for answer in answers for entry in answer.to_object().get("groups", ())]
    return sum(
        len([m for m in entry.get("members", ()) if m.get("member_assignment")])
        for entry in entries
        if entry.get("state") == "Stable"
    )


async def throughput(context: BenchContext, platform: PlatformSettings, replicas: int, count: int) -> float:
    """Records/s of ``replicas`` replicas from the first send until the group committed all ``count``."""
    from llmops_events.topics import RECORDS_RAW

    reporter = context.reporter
    prefix = "one." if replicas == 1 else "two."
    phase = Phase(context, platform, prefix, replicas)
    records = await asyncio.to_thread(encoded_records, f"scale-{prefix.rstrip('.')}", count)
    await phase.start(reporter.status)
    admin = AIOKafkaAdminClient(**phase.kafka.aiokafka())
    await admin.start()
    try:
        deadline = time.monotonic() + START_LIMIT_S
        while await _members(admin, phase.group) < replicas:
            phase.check_alive()
            if time.monotonic() > deadline:
                raise TimeoutError(f"the group never had {replicas} members with partitions")
            await asyncio.sleep(0.5)
        topic = phase.kafka.topic(RECORDS_RAW)
        started = time.perf_counter()
        await produce(phase.kafka, topic, records)
        ends = await end_offsets(phase.kafka, topic)
        ended, done = await GroupWatch(admin, phase.group).caught_up(
            ends,
            limit_s=PHASE_LIMIT_S,
            check=phase.check_alive,
            progress=lambda done: reporter.status(f"{replicas} replica(s) committed {done:,}/{count:,}"),
        )
    finally:
        await admin.close()
        await phase.stop()
    rate = done / (ended - started)
    reporter.step(f"  {replicas} replica(s): {done:,} records in {ended - started:.1f}s = {rate:,.0f}/s")
    return rate


async def kill_run(context: BenchContext, platform: PlatformSettings, cluster: Any, count: int) -> tuple[int, int]:
    """(lost, duplicated) with a broker and then a replica SIGKILLed mid-stream."""
    from llmops_events.topics import RECORDS_RAW

    reporter = context.reporter
    phase = Phase(context, platform, "kill.", 2)
    tenant = "scale-kill"
    records = await asyncio.to_thread(encoded_records, tenant, count)
    await phase.start(reporter.status)
    killed: list[str] = []

    async def kills(acknowledged: int) -> None:
        if not killed and acknowledged >= KILL_BROKER_AT * count:
            pid = cluster.node(2).process.pid()
            if pid is not None:
                os.kill(pid, signal.SIGKILL)
            killed.append(f"broker 2 at {acknowledged:,}")
        if len(killed) == 1 and acknowledged >= KILL_REPLICA_AT * count:
            victim = phase.replicas[1].process
            if victim is not None:
                os.killpg(victim.pid, signal.SIGKILL)
                await victim.wait()
            killed.append(f"a replica at {acknowledged:,}")

    try:
        acknowledged = await produce(phase.kafka, phase.kafka.topic(RECORDS_RAW), records, after_chunk=kills)
        accepted = {f"{tenant}/rec-{index:06d}" for index, ok in enumerate(acknowledged) if ok}
        deadline = time.monotonic() + PHASE_LIMIT_S
        rows = stored_rows(phase.state_db, tenant)
        while not accepted <= set(rows) and time.monotonic() < deadline:
            phase.replicas[0].check_alive()
            reporter.status(f"kill run: {len(set(rows)):,}/{len(accepted):,} stored")
            await asyncio.sleep(1.0)
            rows = stored_rows(phase.state_db, tenant)
    finally:
        await phase.stop()
    lost = len(accepted - set(rows))  # acknowledged, never stored (a refused send is the producer's to retry)
    duplicated = len(rows) - len(set(rows))
    reporter.step(
        f"  kill run ({', '.join(killed)} SIGKILLed): {len(accepted):,}/{count:,} acknowledged, "
        f"{count - len(accepted):,} refused, "
        f"{len(set(rows)):,} stored, {lost:,} lost, {duplicated:,} duplicated"
    )
    return lost, duplicated


async def run(context: BenchContext) -> list[BenchResult]:
    from llmops_stack import KafkaCluster, KafkaComponent, repo_paths

    count = int(os.environ.get(RECORDS_ENV, DEFAULT_RECORDS))
    platform = PlatformSettings(
        kafka_bootstrap_servers=",".join(f"127.0.0.1:{free_port()}" for _ in range(3)),
        var_dir=context.scratch("cluster"),
        artifact_store_uri=str(context.scratch("artifacts")),
        log_format="text",
        log_level="WARNING",
        kafka=KafkaSettings(security_protocol="PLAINTEXT"),
    )
    paths = repo_paths(context.repo_root)
    cluster = KafkaCluster(
        platform, paths.kafka_libs_dir, paths.kafka_log4j_config, controller_ports=[free_port() for _ in range(3)]
    )
    component = KafkaComponent(cluster, ready_timeout=240, topics=())
    component.preflight()
    context.reporter.step(f"  starting a three-broker cluster at {cluster.bootstrap}")
    try:
        await asyncio.to_thread(component.ensure_up, _Quiet())
        one = await throughput(context, platform, 1, count)
        two = await throughput(context, platform, 2, count)
        lost, duplicated = await kill_run(context, platform, cluster, count)
    finally:
        await asyncio.to_thread(component.stop)
    return [
        ONE.measured(one),
        TWO.measured(two, reference_value=one),
        LOST.measured(lost),
        DUPLICATED.measured(duplicated),
    ]


class _Quiet:
    def step(self, message: str) -> None:
        pass

    def waiting(self, message: str) -> None:
        pass


BENCHMARK = Benchmark(
    name=NAME,
    title="ingestion with one and two replicas on a 3-broker cluster, and a kill run",
    figures=(ONE, TWO, LOST, DUPLICATED),
    run=run,
    time_limit_s=1500,
)

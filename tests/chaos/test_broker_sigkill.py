"""The broker SIGKILLed mid-stream (issue 20, chaos suite): 10,000 record events go through kcat (an
outside producer, librdkafka, idempotent, ``acks=all``) to the ingestion service, running in-process;
while they flow, the broker's JVM is killed with SIGKILL (no shutdown, no flush: what a crash or the
out-of-memory killer leaves) and started again on the same data directory and ports. The kill lands
at the worst moment for both sides: kcat still has thousands of records to send (some in flight),
and ingestion has just stored a batch whose offsets are not committed yet. kcat retries what was in
flight; the ingestion consumer reconnects and is given the uncommitted batch again.

Afterwards every record id must be stored exactly once in ingestion's store: none lost, none twice,
none dead-lettered, and (the idempotent producer's promise) none written twice to the topic. The
counts (produced, on the topic, stored, duplicated, lost, redelivered) are printed and written to
``var/chaos/broker-sigkill.json``.

The test starts a broker of its own (own ports, own ``var/``): the session's broker is never killed.
The records go through a named pipe that kcat reads as its message file (``-l``), fed from the
prepared file at a steady pace, so that the stream is still going when the broker dies."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shutil
import signal
import sqlite3
import subprocess
import threading
import time
import uuid
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from llmops_config import PlatformSettings
from llmops_config.kafka import KafkaClientOptions, KafkaSettings, kafka_client_options
from llmops_events.topics import RECORDS_DLQ, RECORDS_RAW
from llmops_ingestion.main import IngestionRuntime
from llmops_ingestion.settings import IngestionSettings
from llmops_messaging import Outcome, create_broker
from llmops_messaging.admin import topic_partitions
from llmops_stack import KafkaBroker, KafkaComponent, NullProgress, free_port, repo_paths

pytestmark = [
    pytest.mark.integration,
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("kcat") is None, reason="kcat is not installed (apt-get install kcat)"),
]

logger = logging.getLogger(__name__)

RECORDS = 10_000
KILL_AFTER_STORED = 3_000
"""The broker is killed as soon as ingestion has stored this many records: right after it stored a
batch and before that batch's offsets are committed, while kcat still has thousands to send."""
FEED_SECONDS = 20.0
"""The file is fed to kcat over about this long: the kill lands mid-stream, not after it."""
DOWN_SECONDS = 2.0
"""How long the broker stays dead before it is started again."""
LABELS = ("card_arrival", "lost_card", "refund")
RESULTS_FILE = Path(__file__).resolve().parents[2] / "var" / "chaos" / "broker-sigkill.json"

KCAT_OPTIONS = (
    "-X",
    "enable.idempotence=true",
    "-X",
    "acks=all",
    "-X",
    "message.timeout.ms=300000",  # rides out the restart: kcat retries for 5 minutes before giving up
    "-X",
    "reconnect.backoff.max.ms=1000",
    "-X",
    "linger.ms=5",
)


@dataclass
class Report:
    produced: int = 0
    """Records fed to kcat through its message file (each a distinct record id)."""
    on_topic: int = 0
    on_topic_distinct: int = 0
    stored: int = 0
    """Rows of this run's tenant in ingestion's ``curated`` table."""
    stored_distinct: int = 0
    duplicated_on_topic: int = 0
    duplicated_in_store: int = 0
    lost: int = 0
    """Record ids produced but not stored."""
    unexpected: int = 0
    """Record ids stored but never produced."""
    killed_at: dict[str, float] = field(default_factory=dict)
    killed_pid: int | None = None
    broker_down_s: float = 0.0
    kcat_exit_code: int | None = None
    kcat_delivery_errors: int = 0
    kcat_outage_errors: int = 0
    """Lines of kcat's log saying it lost or could not reach the broker: the outage it rode out."""
    consumer_outcomes: dict[str, int] = field(default_factory=dict)
    """Per message delivered to ingestion: ``handled`` (stored), ``duplicate`` (redelivered after
    the restart and skipped as already stored)."""
    dead_letters: int = 0
    seconds: float = 0.0


def _letters(number: int) -> str:
    """``number`` in base 26 with letters only: unique texts without digits (which redaction could
    take for phone or card numbers and so merge)."""
    word = ""
    for _ in range(5):
        number, digit = divmod(number, 26)
        word += chr(ord("a") + digit)
    return word


def _write_records(path: Path, tenant: str, run: str) -> list[str]:
    """The message file: one ``<record id>\\t<structured CloudEvent>`` line per record."""
    record_ids = []
    with path.open("w") as handle:
        for index in range(RECORDS):
            record_id = f"chaos-{run}-{index:05d}"
            event = {
                "specversion": "1.0",
                "id": f"event-{record_id}",
                "source": "kcat-chaos",
                "type": "llmops.record.submitted.v1",
                "time": "2026-11-30T12:00:00Z",
                "data": {
                    "tenant": tenant,
                    "source": "kcat",
                    "text": f"my card question {_letters(index)} please help",
                    "record_id": record_id,
                    "label": LABELS[index % len(LABELS)],
                },
            }
            handle.write(f"{record_id}\t{json.dumps(event)}\n")
            record_ids.append(record_id)
    return record_ids


class Feeder(threading.Thread):
    """Writes the message file into the named pipe kcat reads, in 100 steps over ``FEED_SECONDS``."""

    def __init__(self, source: Path, pipe: Path) -> None:
        super().__init__(name="kcat-feeder", daemon=True)
        self.source = source
        self.pipe = pipe
        self.fed = 0
        self.error: BaseException | None = None
        self.stop = threading.Event()

    def run(self) -> None:
        lines = self.source.read_text().splitlines(keepends=True)
        step = max(1, len(lines) // 100)
        try:
            with self.pipe.open("w") as pipe:
                for start in range(0, len(lines), step):
                    if self.stop.is_set():
                        return
                    pipe.write("".join(lines[start : start + step]))
                    pipe.flush()
                    self.fed = min(len(lines), start + step)
                    time.sleep(FEED_SECONDS / 100)
        except BaseException as error:  # kcat died (broken pipe): the test reports it
            self.error = error


async def _topic_records(kafka: KafkaClientOptions, topic: str, *, read: bool) -> tuple[int, Counter[str]]:
    """(messages on ``topic``, keys read when ``read``): end offsets, or the whole topic read back."""
    partitions = [TopicPartition(topic, p) for p in await topic_partitions(kafka, topic)]
    consumer = AIOKafkaConsumer(**kafka.aiokafka(), enable_auto_commit=False, group_id=None, request_timeout_ms=10_000)
    await consumer.start()
    keys: Counter[str] = Counter()
    try:
        ends = await consumer.end_offsets(partitions)
        total = sum(ends.values())
        if not read:
            return total, keys
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        async with asyncio.timeout(120):
            while [tp for tp, end in ends.items() if await consumer.position(tp) < end]:
                for messages in (await consumer.getmany(timeout_ms=500, max_records=5_000)).values():
                    keys.update((m.key or b"").decode() for m in messages)
        return total, keys
    finally:
        await consumer.stop()


def _stored(state_db: Path, tenant: str) -> list[str]:
    """Record ids of ``tenant`` in ingestion's ``curated`` table, one per row (duplicates kept)."""
    if not state_db.exists():
        return []
    connection = sqlite3.connect(f"file:{state_db}?mode=ro", uri=True, timeout=30)
    try:
        rows = connection.execute("SELECT record_id FROM curated WHERE tenant = ?", (tenant,)).fetchall()
    except sqlite3.OperationalError:  # the table is not created yet
        return []
    finally:
        connection.close()
    prefix = f"{tenant}/"
    return [record_id.removeprefix(prefix) for (record_id,) in rows]


def _sigkill(broker: KafkaBroker) -> int:
    """SIGKILL the broker's JVM (no shutdown hook, no flush); returns its pid."""
    pid = broker.process.pid()
    assert pid is not None, "the test's broker is not running"
    os.kill(pid, signal.SIGKILL)
    return pid


def _wait_gone(broker: KafkaBroker, pid: int | None) -> None:
    deadline = time.monotonic() + 30
    while broker.process.pid() is not None:
        assert time.monotonic() < deadline, f"broker pid {pid} still alive 30 s after SIGKILL"
        time.sleep(0.05)


def _say(message: str) -> None:
    print(f"[broker-sigkill] {message}", flush=True)
    logger.info(message)


@pytest.mark.timeout(900)
async def test_a_broker_sigkilled_mid_stream_loses_and_duplicates_no_record(tmp_path: Path) -> None:
    started = time.monotonic()
    report = Report()
    run = uuid.uuid4().hex[:8]
    tenant = f"chaos-{run}"
    settings = PlatformSettings(
        kafka_bootstrap_servers=f"127.0.0.1:{free_port()}",
        kafka_controller_port=free_port(),
        var_dir=tmp_path / "broker",
        log_format="text",
        kafka=KafkaSettings(security_protocol="PLAINTEXT"),  # this test is about a broker crash, not ACLs
    )
    paths = repo_paths()
    broker = KafkaBroker(settings, paths.kafka_libs_dir, paths.kafka_log4j_config)
    component = KafkaComponent(broker)
    outcomes: Counter[str] = Counter()
    ingestion: IngestionRuntime | None = None
    subscriber_broker: Any = None
    kcat: subprocess.Popen[bytes] | None = None
    feeder: Feeder | None = None
    kcat_log = tmp_path / "kcat.log"
    try:
        await asyncio.to_thread(component.preflight)
        await asyncio.to_thread(component.ensure_up, NullProgress())
        _say(f"broker up at {component.bootstrap} (data in {broker.data_dir})")

        # The ingestion service, in-process, on the test's broker.
        platform = settings.model_copy(update={"var_dir": tmp_path / "ingestion", "artifact_store_uri": ""})
        ingestion_settings = IngestionSettings(
            platform=platform,
            group_id=f"ingestion-chaos-{run}",
            allowed_labels=list(LABELS),
            snapshot_every_n_labelled=0,
            metrics_port=0,
            feast_push_interval_s=0.5,
        )
        ingestion = IngestionRuntime(ingestion_settings)
        await ingestion.open()
        subscriber_broker = create_broker(platform, service="ingestion-chaos")

        killed = asyncio.Event()
        feeder_box: list[Feeder] = []

        def count(outcome: Outcome) -> None:
            """Called once per message after its batch is stored in SQLite and before the batch's
            offsets are committed: the moment to kill the broker is right here."""
            outcomes[outcome.value] += 1
            if not killed.is_set() and outcomes[Outcome.HANDLED.value] >= KILL_AFTER_STORED:
                report.killed_at = {
                    "stored": outcomes[Outcome.HANDLED.value],
                    "fed_to_kcat": feeder_box[0].fed if feeder_box else 0,
                }
                report.killed_pid = _sigkill(broker)
                killed.set()

        ingestion.attach(subscriber_broker, on_outcome=count, auto_offset_reset="earliest")
        await subscriber_broker.start()
        await ingestion.begin()
        state_db = ingestion_settings.state_db
        _say("ingestion started")

        # kcat reads the message file through a named pipe fed at a steady pace.
        source = tmp_path / "records.tsv"
        record_ids = await asyncio.to_thread(_write_records, source, tenant, run)
        pipe = tmp_path / "records.pipe"
        os.mkfifo(pipe)
        with kcat_log.open("wb") as log:
            kcat = subprocess.Popen(
                [
                    "kcat",
                    "-P",
                    *kafka_client_options(settings, service="test").kcat(),
                    "-t",
                    RECORDS_RAW,
                    "-E",
                    "-K",
                    "\t",
                    "-l",
                    str(pipe),
                    *KCAT_OPTIONS,
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        feeder = Feeder(source, pipe)
        feeder_box.append(feeder)
        feeder.start()
        _say(f"kcat producing {RECORDS} records (pid {kcat.pid}), fed over ~{FEED_SECONDS:.0f}s")

        # The broker dies while kcat still has thousands of records to send and while ingestion holds
        # a stored batch whose offsets are not committed yet (see ``count``).
        async with asyncio.timeout(120):
            while not killed.is_set():
                assert kcat.poll() is None, f"kcat exited early: {kcat_log.read_text()[-2000:]}"
                await asyncio.sleep(0.05)
        down_since = time.monotonic()
        await asyncio.to_thread(_wait_gone, broker, report.killed_pid)
        _say(f"SIGKILLed broker pid {report.killed_pid} at {report.killed_at}")
        await asyncio.sleep(DOWN_SECONDS)
        await asyncio.to_thread(component.ensure_up, NullProgress())
        report.broker_down_s = round(time.monotonic() - down_since, 1)
        _say(f"broker restarted on the same data dir and ports after {report.broker_down_s}s down")

        # kcat delivers the rest (retrying what was in flight), then exits.
        await asyncio.to_thread(feeder.join, FEED_SECONDS + 120)
        assert not feeder.is_alive(), "the feeder is still writing to kcat"
        assert feeder.error is None, f"feeding kcat failed: {feeder.error!r}; {kcat_log.read_text()[-2000:]}"
        report.produced = feeder.fed
        report.kcat_exit_code = await asyncio.to_thread(kcat.wait, 330)
        kcat_output = kcat_log.read_text(errors="replace")
        report.kcat_delivery_errors = kcat_output.count("Delivery failed") + kcat_output.count("failed to produce")
        report.kcat_outage_errors = sum(
            line.count("Connection refused") + line.count("Disconnected") for line in kcat_output.splitlines()
        )
        _say(f"kcat exited with {report.kcat_exit_code}")

        # Ingestion catches up: every record on the topic is stored (bounded wait).
        report.on_topic, keys = await _topic_records(
            kafka_client_options(settings, service="test"), RECORDS_RAW, read=True
        )
        report.on_topic_distinct = len(keys)
        report.duplicated_on_topic = report.on_topic - report.on_topic_distinct
        deadline = time.monotonic() + 240
        stored: list[str] = []
        while time.monotonic() < deadline:
            stored = await asyncio.to_thread(_stored, state_db, tenant)
            if len(set(stored)) >= report.on_topic_distinct:
                break
            await asyncio.sleep(1)
        await asyncio.sleep(2)  # a redelivered batch arriving late would show up as a second row
        stored = await asyncio.to_thread(_stored, state_db, tenant)
        report.stored = len(stored)
        report.stored_distinct = len(set(stored))
        report.duplicated_in_store = report.stored - report.stored_distinct
        report.lost = len(set(record_ids) - set(stored))
        report.unexpected = len(set(stored) - set(record_ids))
        report.consumer_outcomes = dict(outcomes)
        dead, _ = await _topic_records(kafka_client_options(settings, service="test"), RECORDS_DLQ, read=False)
        report.dead_letters = dead
    finally:
        report.seconds = round(time.monotonic() - started, 1)
        if feeder is not None:
            feeder.stop.set()
        if kcat is not None and kcat.poll() is None:
            kcat.kill()
            kcat.wait(10)
        if feeder is not None:
            feeder.join(10)
        if subscriber_broker is not None:
            with contextlib.suppress(Exception):
                await subscriber_broker.stop()
        if ingestion is not None:
            with contextlib.suppress(Exception):
                await ingestion.close()
        await asyncio.to_thread(component.stop)
        RESULTS_FILE.parent.mkdir(parents=True, exist_ok=True)
        RESULTS_FILE.write_text(json.dumps(asdict(report), indent=2) + "\n")
        _say(
            f"produced {report.produced}, on topic {report.on_topic} ({report.on_topic_distinct} distinct), "
            f"stored {report.stored} ({report.stored_distinct} distinct), duplicated on topic "
            f"{report.duplicated_on_topic}, duplicated in store {report.duplicated_in_store}, lost {report.lost}; "
            f"consumer outcomes {report.consumer_outcomes}; {report.seconds}s; written to {RESULTS_FILE}"
        )

    assert report.kcat_exit_code == 0, f"kcat failed ({report.kcat_exit_code}): {kcat_log.read_text()[-3000:]}"
    assert report.kcat_outage_errors > 0, "kcat never noticed the broker was gone: the kill came too late"
    assert report.lost == 0, f"{report.lost} records produced but never stored"
    assert report.duplicated_in_store == 0 and report.unexpected == 0
    assert report.stored == report.stored_distinct == RECORDS
    assert report.duplicated_on_topic == 0, "the idempotent producer wrote a record twice"
    assert report.dead_letters == 0, "a valid record was dead-lettered"

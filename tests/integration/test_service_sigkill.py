"""Every consuming service SIGKILLed between a handler's effect and the offset commit (issue 20,
chaos suite), each a real process (``python -m llmops_<service>``, as ``make up`` runs it).

Each service is started with ``LLMOPS_FAULT_INJECT=kill_after_effect:<event type>:<n>`` (see
``llmops_messaging.faults``): on the n-th event of that type, once its handler has returned (rows
committed, events published) and before the consumer records the event as applied or commits the
offset, the process sends itself SIGKILL. It is then started again without the variable, is given
the same messages again, and must leave every effect exactly once:

* ingestion: 1,000 records, killed after the run holding the 500th was stored; every record stored
  once in its SQLite store, none lost, none dead-lettered;
* fine-tuning: one real LoRA training request, killed after the version was published and
  ``training.completed`` sent; one model version for the request, one ``training.started``, one
  ``training.completed`` id (the re-run reports the published version under the same derived id);
* evaluation: fed fine-tuning's ``training.completed`` (both copies), killed after the decision was
  published; one ``evaluation.completed`` id for the training run;
* deployment: fed evaluation's approval (both copies), killed after the version went live on the
  session's real Triton; one ``deployment.requested`` and one ``deployment.promoted`` id;
* monitoring: fed a window of drifted inference logs, killed after the window's report, its drift
  and its retraining request were published; one report for the window, one ``drift_detected``,
  one ``training.requested`` id.

The services form the platform's chain: each one consumes what the one before it produced on the
bus (the copies a killed-and-restarted service published again included), so the downstream check
of each service is also the next one's input. They run on a Kafka broker of this test's own (free
ports, own ``var/``): a fresh consumer group reads its topics from the earliest offset, and on the
session's broker it would find the events of every other test (and deploy or evaluate their
models). Deployment uses the session's Triton. Per service the test prints what went in, what
came out (distinct ids and copies on the topic), what was duplicated and what was lost, and writes
it to ``service-sigkill.json`` in the test's temporary folder (the path is printed) and to
``var/chaos/service-sigkill.json``.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from prometheus_client.parser import text_string_to_metric_families

from llmops_config import PlatformSettings
from llmops_config.kafka import KafkaClientOptions, KafkaSettings, kafka_client_options, kafka_environment
from llmops_events import Envelope
from llmops_events.topics import (
    DEPLOYMENTS,
    EVALUATIONS,
    FEEDBACK,
    INFERENCE,
    MONITORING,
    RECORDS_DLQ,
    RECORDS_RAW,
    TRAINING,
)
from llmops_events.v1 import (
    DeploymentPromoted,
    DeploymentRequested,
    EvaluationCompleted,
    InferenceLogged,
    MonitoringDriftDetected,
    MonitoringReportCreated,
    RecordSubmitted,
    TrainingCompleted,
    TrainingFailed,
    TrainingRequested,
    TrainingStarted,
)
from llmops_events.v1.training import Hyperparameters
from llmops_messaging import EventPublisher
from llmops_messaging.faults import FAULT_INJECT_ENV
from llmops_models import ModelRegistry
from llmops_models.snapshots import write_snapshot
from llmops_serving import triton_name
from llmops_stack import KafkaBroker, KafkaComponent, free_port, repo_paths, running
from llmops_storage import ArtifactStore
from tests.bus_readback import caught_up, count_on_topic, read_topic

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(2400)]

REPO = Path(__file__).resolve().parents[2]
RECORDS = 1_000
KILL_AT_RECORD = 500
CHUNK = 100
CHUNK_PAUSE_S = 1.0
"""Records are produced in chunks this far apart, so ingestion reads them in several batches."""
WINDOW = 40
LABELS = ("card_arrival", "exchange_rate", "lost_card")
PHRASES = {
    "card_arrival": ["where is my new card", "my card has not arrived", "when will my card be delivered"],
    "exchange_rate": ["what exchange rate do you use", "is your currency rate fair", "how is the fx rate set"],
    "lost_card": ["i lost my card", "my card was stolen", "someone took my bank card"],
}
FAST = Hyperparameters(
    epochs=2, batch_size=8, max_length=32, lora_rank=4, target_modules=["query", "value"], learning_rate=5e-3
)
EVALUATION_POLICY = "min_examples: 10\nmax_accuracy_drop: 1.0\nmax_latency_p95_ms: 60000\n"
DRIFT_POLICY = """min_window_size: 10
drift_thresholds: {length: 0.25, word_count: 0.25}
decide_on: [length, word_count]
min_breached_signals: 1
consecutive_windows: 1
cooldown_minutes: 360
max_retrains_per_day: 2
"""
LATEST_RESULTS = REPO / "var" / "chaos" / "service-sigkill.json"
SETTLE_S = 5.0
"""After the expected effects are seen, how long the restarted service keeps running before the
counts are taken: a copy it would publish late is counted too."""


def say(message: str) -> None:
    print(f"[service-sigkill] {message}", flush=True)


# --- the counts ------------------------------------------------------------------------------


@dataclass
class ServiceCounts:
    service: str
    fault: str = ""
    produced: int = 0
    """Inputs sent to the service (messages of the injected event type)."""
    killed: bool = False
    """The first run ended by SIGKILL at the injection point."""
    effects: int = 0
    """Distinct effects downstream (records stored, versions published, event ids)."""
    copies: dict[str, int] = field(default_factory=dict)
    """Output messages on the topic per kind, copies with the same id included."""
    distinct: dict[str, int] = field(default_factory=dict)
    """Distinct output event ids per kind."""
    duplicated: int = 0
    """Effects beyond the one expected per input (rows, versions, distinct ids)."""
    lost: int = 0
    """Inputs without their effect."""
    dead_lettered: int = 0
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0


class Results:
    """The counts, in the test's temporary folder and (kept after pytest prunes that) ``var/chaos/``."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.services: dict[str, ServiceCounts] = {}

    def save(self, counts: ServiceCounts) -> None:
        self.services[counts.service] = counts
        text = json.dumps({k: vars(v) for k, v in self.services.items()}, indent=2) + "\n"
        self.path.write_text(text)
        LATEST_RESULTS.parent.mkdir(parents=True, exist_ok=True)
        LATEST_RESULTS.write_text(text)
        say(
            f"{counts.service}: produced {counts.produced}, killed {counts.killed}, effects {counts.effects}, "
            f"duplicated {counts.duplicated}, lost {counts.lost}, dead-lettered {counts.dead_lettered}; "
            f"copies {counts.copies}, distinct ids {counts.distinct}; {' '.join(counts.notes)} "
            f"({counts.seconds:.0f}s) → {self.path}"
        )


# --- the chain's world: a broker of its own, one artifact store, a var/ per service -------------


@dataclass
class World:
    platform: PlatformSettings
    triton: PlatformSettings
    root: Path
    results: Results
    store: ArtifactStore
    model: str
    dataset_id: str
    outputs: dict[str, Any] = field(default_factory=dict)

    @property
    def kafka(self) -> KafkaClientOptions:
        return kafka_client_options(self.platform, service="test")


@pytest.fixture(scope="module")
def world(triton_settings: PlatformSettings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    root = tmp_path_factory.mktemp("service-sigkill")
    platform = PlatformSettings(
        kafka_bootstrap_servers=f"127.0.0.1:{free_port()}",
        kafka_controller_port=free_port(),
        var_dir=root / "broker",
        artifact_store_uri=str(root / "artifacts"),
        log_format="text",
        kafka=KafkaSettings(security_protocol="PLAINTEXT"),  # this test is about crashes, not ACLs
    )
    paths = repo_paths()
    results = Results(root / "service-sigkill.json")
    say(f"counts are written to {results.path}")
    with running(KafkaComponent(KafkaBroker(platform, paths.kafka_libs_dir, paths.kafka_log4j_config))):
        store = ArtifactStore(platform.resolved_artifact_store_uri)
        run = uuid.uuid4().hex[:6]
        dataset_id = f"chaos-{run}"
        write_snapshot(store, snapshot_frame(), dataset_id=dataset_id)
        yield World(platform, triton_settings, root, results, store, f"chaos-{run}", dataset_id)
    say(f"counts written to {results.path}")


def snapshot_frame() -> pd.DataFrame:
    rows = []
    for label, phrases in PHRASES.items():
        for i in range(34):  # 14 train, 4 validation, 16 test per label
            split = "train" if i < 14 else ("validation" if i < 18 else "test")
            rows.append(
                {"text": f"{phrases[i % len(phrases)]} please {i}", "label": label, "split": split, "tenant": "acme"}
            )
    return pd.DataFrame(rows)


# --- a service as a process ------------------------------------------------------------------------


class ServiceProcess:
    """``python -m <module>`` with the world's settings in its environment, its output in a log."""

    def __init__(self, world: World, name: str, module: str, extra: dict[str, str]) -> None:
        self.name = name
        self.module = module
        self.var_dir = world.root / f"var-{name}"
        self.var_dir.mkdir(exist_ok=True)
        self.log = world.root / f"{name}.log"
        self.metrics_port = free_port()
        # The world's settings only, except the session's local CA (LLMOPS_TLS_*, from conftest.py):
        # the deployment service serves the ops API over mutual TLS and refuses to start without it.
        env = {
            key: value
            for key, value in os.environ.items()
            if not key.startswith("LLMOPS_") or key.startswith("LLMOPS_TLS_")
        }
        env.update(
            {
                **kafka_environment(world.platform),
                "LLMOPS_VAR_DIR": str(self.var_dir),
                "LLMOPS_ARTIFACT_STORE_URI": world.platform.resolved_artifact_store_uri,
                "LLMOPS_LOG_FORMAT": "text",
                "LLMOPS_TRITON_HTTP_PORT": str(world.triton.triton_http_port),
                "LLMOPS_TRITON_GRPC_PORT": str(world.triton.triton_grpc_port),
                "LLMOPS_TRITON_METRICS_PORT": str(world.triton.triton_metrics_port),
                "LLMOPS_OPS_PORT": str(free_port()),
                f"LLMOPS_{name.upper()}_METRICS_PORT": str(self.metrics_port),
            }
        )
        env.update(extra)
        self.env = env
        self.process: subprocess.Popen[bytes] | None = None
        self.runs = 0

    def start(self, fault: str | None = None) -> None:
        env = dict(self.env)
        if fault:
            env[FAULT_INJECT_ENV] = fault
        self.runs += 1
        with self.log.open("ab") as log:
            log.write(f"\n===== run {self.runs} {FAULT_INJECT_ENV}={fault or ''}\n".encode())
            log.flush()
            self.process = subprocess.Popen(
                [sys.executable, "-m", self.module],
                cwd=REPO,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        say(f"{self.name}: started pid {self.process.pid}" + (f" with {FAULT_INJECT_ENV}={fault}" if fault else ""))

    def tail(self, chars: int = 4000) -> str:
        return self.log.read_text(errors="replace")[-chars:]

    async def killed(self, timeout: float) -> bool:
        """Wait for the run to end; True when it ended by SIGKILL at the injection point."""
        assert self.process is not None
        deadline = time.monotonic() + timeout
        while self.process.poll() is None:
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.name} never reached the injection point in {timeout:.0f}s:\n{self.tail()}")
            await asyncio.sleep(0.5)
        code = self.process.returncode
        assert code == -signal.SIGKILL, f"{self.name} exited with {code}, not SIGKILL:\n{self.tail()}"
        assert "llmops fault injection" in self.log.read_text(errors="replace"), self.tail()
        say(f"{self.name}: pid {self.process.pid} SIGKILLed at the injection point")
        return True

    def ready(self) -> bool:
        """Whether the service answers on its metrics port (opened once it consumes)."""
        self.alive()
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=2):
                return True
        except OSError:
            return False

    def alive(self) -> None:
        assert self.process is not None
        code = self.process.poll()
        assert code is None, f"{self.name} exited with {code}:\n{self.tail()}"

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(30)

    def metrics(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5) as page:
            text = page.read().decode()
        return {
            (sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
        }


@pytest.fixture
def services() -> Iterator[list[ServiceProcess]]:
    started: list[ServiceProcess] = []
    yield started
    for service in started:
        service.stop()


# --- reading the bus back --------------------------------------------------------------------------


def of(events: list[Envelope[Any]], kind: type, accept: Callable[[Any], bool] = lambda _: True) -> list[Envelope[Any]]:
    return [event for event in events if isinstance(event.data, kind) and accept(event.data)]


def tally(counts: ServiceCounts, name: str, events: list[Envelope[Any]]) -> int:
    """Record copies and distinct ids of one kind of output; returns the distinct ids."""
    counts.copies[name] = len(events)
    counts.distinct[name] = len({event.id for event in events})
    return counts.distinct[name]


async def wait_for(what: str, predicate: Callable[[], Any], *, timeout: float, service: ServiceProcess) -> None:
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        service.alive()
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout:.0f}s\n{service.tail()}")
        await asyncio.sleep(1.0)


async def killed_and_restarted(service: ServiceProcess, fault: str, *, timeout: float) -> bool:
    service.start(fault)
    killed = await service.killed(timeout)
    service.start()
    return killed


# --- the services, in the chain's order -----------------------------------------------------------


def _letters(number: int) -> str:
    """A unique word without digits (redaction could take digits for a phone or card number, and
    texts that redact alike are one record to ingestion's de-duplication)."""
    word = ""
    for _ in range(4):
        number, digit = divmod(number, 26)
        word += chr(ord("a") + digit)
    return word


def stored_records(state_db: Path, tenant: str) -> list[str]:
    if not state_db.exists():
        return []
    connection = sqlite3.connect(f"file:{state_db}?mode=ro", uri=True, timeout=30)
    try:
        rows = connection.execute("SELECT record_id FROM curated WHERE tenant = ?", (tenant,)).fetchall()
    except sqlite3.OperationalError:
        return []
    finally:
        connection.close()
    return [record_id for (record_id,) in rows]


async def test_ingestion_killed_after_storing_a_batch(world: World, services: list[ServiceProcess]) -> None:
    """The records are produced while the service runs, in chunks, so the kill lands mid-stream: some
    stored and not committed, some not yet read, some not yet produced."""
    started = time.monotonic()
    tenant = f"{world.model}-records"
    fault = f"kill_after_effect:{RecordSubmitted.event_type}:{KILL_AT_RECORD}"
    counts = ServiceCounts("ingestion", fault=fault, produced=RECORDS)
    ids = [f"rec-{index:05d}" for index in range(RECORDS)]
    service = ServiceProcess(
        world, "ingestion", "llmops_ingestion", {"LLMOPS_INGESTION_SNAPSHOT_EVERY_N_LABELLED": "0"}
    )
    services.append(service)
    state_db = service.var_dir / "state" / "ingestion.db"
    try:
        service.start(fault)
        await wait_for("the service ready", service.ready, timeout=300, service=service)
        async with EventPublisher(world.platform, service="chaos-producer") as publisher:
            for index, record_id in enumerate(ids):
                record = RecordSubmitted(
                    tenant=tenant,
                    source="crm",
                    text=f"{PHRASES[LABELS[index % 3]][index % 3]} question {_letters(index)}",
                    record_id=record_id,
                    label=LABELS[index % 3],
                )
                await publisher.publish(record, id=f"event-{record_id}")
                if index % CHUNK == CHUNK - 1:
                    await asyncio.sleep(CHUNK_PAUSE_S)
        counts.killed = await service.killed(timeout=300)
        at_kill = stored_records(state_db, tenant)
        counts.notes.append(f"stored at the kill: {len(at_kill)};")
        service.start()
        await wait_for(
            "every record stored",
            lambda: len(set(stored_records(state_db, tenant))) >= RECORDS,
            timeout=300,
            service=service,
        )
        await wait_for(
            "every message committed",
            lambda: caught_up(world.kafka, "ingestion", RECORDS_RAW, INFERENCE, FEEDBACK, TRAINING),
            timeout=300,
            service=service,
        )
        await asyncio.sleep(SETTLE_S)
        rows = stored_records(state_db, tenant)
        counts.effects = len(set(rows))
        counts.duplicated = len(rows) - len(set(rows))
        counts.lost = len({f"{tenant}/{record_id}" for record_id in ids} - set(rows))
        counts.dead_lettered = await count_on_topic(world.kafka, RECORDS_DLQ)
        counts.copies["records on the topic"] = await count_on_topic(world.kafka, RECORDS_RAW)
    finally:
        counts.seconds = time.monotonic() - started
        world.results.save(counts)
    assert KILL_AT_RECORD <= len(at_kill) < RECORDS, "the kill did not land mid-stream"
    assert counts.effects == RECORDS and counts.duplicated == 0 and counts.lost == 0
    assert counts.dead_lettered == 0


async def test_fine_tuning_killed_after_publishing_a_version(world: World, services: list[ServiceProcess]) -> None:
    started = time.monotonic()
    fault = f"kill_after_effect:{TrainingRequested.event_type}:1"
    counts = ServiceCounts("fine_tuning", fault=fault, produced=1)
    async with EventPublisher(world.platform, service="chaos-cli") as publisher:
        request = await publisher.publish(
            TrainingRequested(
                model_name=world.model, dataset_id=world.dataset_id, hyperparameters=FAST, requested_by="chaos"
            )
        )
    service = ServiceProcess(
        world,
        "fine_tuning",
        "llmops_fine_tuning",
        {
            "LLMOPS_FINE_TUNING_MIN_EXAMPLES_PER_LABEL": "8",
            "LLMOPS_FINE_TUNING_FRESH_SNAPSHOT_WAIT_S": "0",
            "LLMOPS_FINE_TUNING_PROGRESS_INTERVAL_S": "1",
        },
    )
    services.append(service)
    registry = ModelRegistry(world.store)
    mine: Callable[[Any], bool] = lambda data: data.request_id == request.id  # noqa: E731

    try:
        counts.killed = await killed_and_restarted(service, fault, timeout=900)
        counts.notes.append(f"versions at the kill: {registry.published_versions(world.model)};")
        # The redelivered request is handled again: reported again, not trained again.
        await wait_for(
            "the request handled again",
            lambda: caught_up(world.kafka, "fine-tuning", TRAINING),
            timeout=600,
            service=service,
        )
        await asyncio.sleep(SETTLE_S)
        events = await read_topic(world.kafka, TRAINING)
        versions = registry.published_versions(world.model)
        counts.effects = len(versions)
        counts.duplicated = max(0, len(versions) - 1)
        counts.lost = 0 if versions else 1
        started_ids = tally(counts, "training.started", of(events, TrainingStarted, mine))
        completed_ids = tally(counts, "training.completed", of(events, TrainingCompleted, mine))
        tally(counts, "training.failed", of(events, TrainingFailed, mine))
        counts.duplicated += max(0, started_ids - 1) + max(0, completed_ids - 1)
        counts.notes.append(f"versions {versions};")
        world.outputs["version"] = versions[0] if versions else None
    finally:
        counts.seconds = time.monotonic() - started
        world.results.save(counts)
    assert versions == [1], f"one version for the request, got {versions}"
    assert registry.find_by_request(world.model, request.id) is not None
    assert counts.distinct["training.started"] == 1 and counts.distinct["training.completed"] == 1
    assert counts.copies["training.started"] == 1, "the request was trained again"
    assert counts.copies["training.failed"] == 0


def _need(world: World, key: str) -> Any:
    if world.outputs.get(key) is None:
        pytest.skip(f"needs the output of an earlier service of the chain ({key}), which did not run or failed")
    return world.outputs[key]


async def test_evaluation_killed_after_publishing_its_decision(world: World, services: list[ServiceProcess]) -> None:
    version = _need(world, "version")
    started = time.monotonic()
    fault = f"kill_after_effect:{TrainingCompleted.event_type}:1"
    policies = world.root / "policies"
    policies.mkdir(exist_ok=True)
    (policies / "default.yaml").write_text(EVALUATION_POLICY)
    service = ServiceProcess(
        world,
        "evaluation",
        "llmops_evaluation",
        {"LLMOPS_EVALUATION_POLICY_DIR": str(policies), "LLMOPS_EVALUATION_LATENCY_EXAMPLES": "10"},
    )
    services.append(service)
    trained = of(await read_topic(world.kafka, TRAINING), TrainingCompleted, lambda d: d.model_name == world.model)
    counts = ServiceCounts("evaluation", fault=fault, produced=len(trained))
    counts.notes.append(f"training.completed in: {len(trained)} copies, {len({e.id for e in trained})} id;")
    mine: Callable[[Any], bool] = lambda data: data.model_name == world.model and data.model_version == version  # noqa: E731

    async def decisions() -> list[Envelope[Any]]:
        return of(await read_topic(world.kafka, EVALUATIONS), EvaluationCompleted, mine)

    try:
        counts.killed = await killed_and_restarted(service, fault, timeout=600)
        counts.notes.append(f"decisions at the kill: {len(await decisions())};")
        await wait_for(
            "the redelivered event handled",
            lambda: caught_up(world.kafka, "evaluation", TRAINING),
            timeout=600,
            service=service,
        )
        await asyncio.sleep(SETTLE_S)
        found = await decisions()
        counts.effects = tally(counts, "evaluation.completed", found)
        counts.duplicated = max(0, counts.effects - len({e.id for e in trained}))
        counts.lost = max(0, len({e.id for e in trained}) - counts.effects)
        counts.notes.append(f"decision {found[0].data.decision.value};")
        world.outputs["approved"] = found[0].data.decision.value == "approved"
    finally:
        counts.seconds = time.monotonic() - started
        world.results.save(counts)
    assert counts.effects == 1 and counts.duplicated == 0 and counts.lost == 0
    assert world.outputs["approved"], f"the candidate was not approved: {found[0].data.reasons}"


async def test_deployment_killed_after_the_version_went_live(world: World, services: list[ServiceProcess]) -> None:
    version = _need(world, "version")
    if not world.outputs.get("approved"):
        pytest.skip("needs an approval from the evaluation service")
    started = time.monotonic()
    fault = f"kill_after_effect:{EvaluationCompleted.event_type}:1"
    service = ServiceProcess(
        world,
        "deployment",
        "llmops_deployment",
        {
            "LLMOPS_DEPLOYMENT_MODEL_NAMES": json.dumps([world.model]),
            "LLMOPS_DEPLOYMENT_WARMUP_REQUESTS": "1",
            "LLMOPS_DEPLOYMENT_RECONCILE_INTERVAL_S": "2",
        },
    )
    # Triton reads its model repository from the session's var/; the service writes into it.
    (service.var_dir / "triton").mkdir(exist_ok=True)
    (service.var_dir / "triton" / "models").symlink_to(world.triton.model_repository.resolve())
    services.append(service)
    approvals = of(
        await read_topic(world.kafka, EVALUATIONS), EvaluationCompleted, lambda d: d.model_name == world.model
    )
    counts = ServiceCounts("deployment", fault=fault, produced=len(approvals))
    counts.notes.append(f"evaluation.completed in: {len(approvals)} copies, {len({e.id for e in approvals})} id;")
    mine: Callable[[Any], bool] = lambda data: data.model_name == world.model and data.model_version == version  # noqa: E731

    async def promotions() -> list[Envelope[Any]]:
        return of(await read_topic(world.kafka, DEPLOYMENTS), DeploymentPromoted, mine)

    try:
        counts.killed = await killed_and_restarted(service, fault, timeout=900)
        counts.notes.append(f"promotions at the kill: {len(await promotions())};")
        await wait_for(
            "the redelivered approval handled",
            lambda: caught_up(world.kafka, "deployment", EVALUATIONS),
            timeout=600,
            service=service,
        )
        await asyncio.sleep(SETTLE_S)
        events = await read_topic(world.kafka, DEPLOYMENTS)
        requested = tally(counts, "deployment.requested", of(events, DeploymentRequested, mine))
        promoted = tally(counts, "deployment.promoted", of(events, DeploymentPromoted, mine))
        counts.effects = promoted
        counts.duplicated = max(0, requested - 1) + max(0, promoted - 1)
        counts.lost = 0 if promoted else 1
        ready = await _triton_ready(world, triton_name(world.model, version))
        counts.notes.append(f"live on Triton: {ready};")
        world.outputs["promoted"] = bool(promoted)
    finally:
        counts.seconds = time.monotonic() - started
        world.results.save(counts)
        service.stop()
        await _triton_unload(world, triton_name(world.model, version))
    assert requested == 1 and promoted == 1 and ready


async def _triton_ready(world: World, name: str) -> bool:
    import tritonclient.grpc.aio as grpcclient

    client = grpcclient.InferenceServerClient(world.triton.triton_grpc_url)
    try:
        return bool(await client.is_model_ready(name))
    finally:
        await client.close()


async def _triton_unload(world: World, name: str) -> None:
    import tritonclient.grpc.aio as grpcclient

    client = grpcclient.InferenceServerClient(world.triton.triton_grpc_url)
    try:
        await client.unload_model(name)
    except Exception as error:  # cleanup only
        say(f"unloading {name} from the session's Triton failed: {error!r}")
    finally:
        await client.close()


async def test_monitoring_killed_after_reporting_a_window(world: World, services: list[ServiceProcess]) -> None:
    version = _need(world, "version")
    started = time.monotonic()
    fault = f"kill_after_effect:{InferenceLogged.event_type}:{WINDOW}"
    policy = world.root / "drift.yaml"
    policy.write_text(DRIFT_POLICY)
    service = ServiceProcess(
        world,
        "monitoring",
        "llmops_monitoring",
        {
            "LLMOPS_MONITORING_POLICY_FILE": str(policy),
            "LLMOPS_MONITORING_WINDOW_SIZE": str(WINDOW),
            "LLMOPS_MONITORING_WINDOW_SECONDS": "86400",
            "LLMOPS_MONITORING_REFERENCE_SIZE": "12",
            "LLMOPS_MONITORING_EMBEDDING_SAMPLE_SIZE": "20",
        },
    )
    services.append(service)
    counts = ServiceCounts("monitoring", fault=fault, produced=WINDOW)
    drifted = "Could you please explain in detail why the weather in the mountains changes so quickly. " * 3
    async with EventPublisher(world.platform, service="chaos-gateway") as publisher:
        for index in range(WINDOW):
            await publisher.publish(
                InferenceLogged(
                    request_id=f"{world.model}-req-{index}",
                    model_name=world.model,
                    model_version=version,
                    text=f"{drifted} Question {index}.",
                    label=LABELS[index % 3],
                    confidence=0.4,
                    latency_ms=5.0,
                    served_at=datetime.now(UTC),
                )
            )
    mine: Callable[[Any], bool] = lambda data: data.model_name == world.model  # noqa: E731
    try:
        counts.killed = await killed_and_restarted(service, fault, timeout=600)
        # The restarted service is given the window's last event again (the others are recorded).
        await wait_for(
            "the redelivered event handled",
            lambda: caught_up(world.kafka, "monitoring", INFERENCE, FEEDBACK),
            timeout=300,
            service=service,
        )
        await asyncio.sleep(SETTLE_S)
        events = await read_topic(world.kafka, MONITORING) + await read_topic(world.kafka, TRAINING)
        counts.effects = tally(counts, "monitoring.report_created", of(events, MonitoringReportCreated, mine))
        drift = tally(counts, "monitoring.drift_detected", of(events, MonitoringDriftDetected, mine))
        requests = tally(
            counts,
            "training.requested",
            of(events, TrainingRequested, lambda d: d.model_name == world.model and d.requested_by == "monitoring"),
        )
        counts.duplicated = max(0, counts.effects - 1) + max(0, drift - 1) + max(0, requests - 1)
        counts.lost = (counts.effects == 0) + (drift == 0) + (requests == 0)
        open_window = _open_window(service, world.model, version)
        counts.notes.append(
            f"open window after the restart: {open_window:.0f} event(s) (the window's last event, in the reported"
            " window and again in the next: windows are kept in memory);"
        )
    finally:
        counts.seconds = time.monotonic() - started
        world.results.save(counts)
    assert counts.effects == 1 and drift == 1 and requests == 1
    assert counts.copies["monitoring.report_created"] == 1, "the window was reported twice"


def _open_window(service: ServiceProcess, model: str, version: int) -> float | None:
    try:
        samples = service.metrics()
    except OSError:
        return None
    return samples.get(("llmops_monitoring_open_window_size", (("model", model), ("version", str(version)))))

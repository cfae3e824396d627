"""A retraining request is recorded (cooldown, streak) only once it is published: a publish that
fails leaves the policy state as it was, so the next window requests again; and a request
published but not recorded (a crash in between) is re-published with the same event ids, so
downstream recognises the duplicate.

The service runs its real analysis (Evidently) on small windows, with a hashed bag-of-words
encoder for MiniLM, and the real ``EventPublisher`` whose broker round trip (``publish_record``)
is replaced by a recorder that can fail."""

from __future__ import annotations

import contextlib
import zlib
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from llmops_config import PlatformSettings
from llmops_events import Envelope, KafkaRecord, decode
from llmops_events.topics import TRAINING
from llmops_events.v1 import MonitoringDriftDetected, TrainingRequested
from llmops_messaging import EventPublisher, ProcessedEvents
from llmops_monitoring.adapters.metrics import MonitoringMetrics
from llmops_monitoring.adapters.policy_state import PolicyStateStore
from llmops_monitoring.domain.analysis import vocabulary_of
from llmops_monitoring.domain.policy import DriftPolicy
from llmops_monitoring.domain.ports import Reference
from llmops_monitoring.domain.windows import Observation, Window, WindowKey
from llmops_monitoring.handlers import MonitoringService
from llmops_monitoring.settings import MonitoringSettings
from llmops_serving import ChampionTable
from llmops_storage import ArtifactStore
from llmops_workloads import out_of_domain_texts

MODEL = "banking"
KEY = WindowKey(MODEL, 1)
BANKING = [
    "where is my new card",
    "my card has not arrived yet",
    "what exchange rate do you use",
    "i lost my card yesterday",
    "how do i top up my account",
    "why was my transfer declined",
]
# Every window that breaches requests (no debounce); a request starts a 6-hour cooldown.
POLICY = DriftPolicy(min_window_size=50, consecutive_windows=1, cooldown_minutes=360, max_retrains_per_day=10)


class HashedWords:
    def encode(self, texts: Sequence[str]) -> np.ndarray:
        vectors = np.zeros((len(texts), 64), dtype=np.float32)
        for row, text in enumerate(texts):
            for word in text.lower().split():
                vectors[row, zlib.crc32(word.encode()) % 64] += 1.0
        return vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-9)


class References:
    def __init__(self) -> None:
        rng = np.random.default_rng(0)
        index = rng.integers(0, len(BANKING), size=300)
        texts = [BANKING[i] for i in index]
        frame = pd.DataFrame(
            {
                "text": texts,
                "label": [f"l{i}" for i in index],
                "prediction": [f"l{i}" for i in index],
                "confidence": rng.uniform(0.8, 1.0, size=len(index)),
            }
        )
        self.reference = Reference(MODEL, 1, "d", frame, HashedWords().encode(texts), vocabulary_of(texts))

    def get(self, model_name: str, version: int) -> Reference:
        return self.reference


class RecordingPublisher(EventPublisher):
    """The real publisher with the broker round trip replaced: keeps what reached the "broker";
    ``failures`` publishes to ``fail_topic`` raise as an unreachable broker does."""

    def __init__(self, *, fail_topic: str = TRAINING, failures: int = 0) -> None:
        super().__init__(PlatformSettings(), service="monitoring")
        self.sent: list[Envelope[Any]] = []
        self.attempted: list[Envelope[Any]] = []
        self.fail_topic = fail_topic
        self.failures = failures

    async def publish_record(self, topic: str, record: KafkaRecord) -> Any:
        envelope = decode(record)
        self.attempted.append(envelope)
        if topic == self.fail_topic and self.failures > 0:
            self.failures -= 1
            raise ConnectionError("KafkaTimeoutError: broker unreachable")
        self.sent.append(envelope)
        return None

    def of(self, kind: type, *, attempted: bool = False) -> list[Envelope[Any]]:
        return [e for e in (self.attempted if attempted else self.sent) if isinstance(e.data, kind)]


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def _service(tmp_path: Path, publisher: EventPublisher, clock: Clock, state: PolicyStateStore) -> MonitoringService:
    settings = MonitoringSettings(
        platform=PlatformSettings(var_dir=tmp_path / "var"),
        window_size=60,
        window_seconds=None,
        embedding_sample_size=20,
        metrics_port=0,
    )
    return MonitoringService(
        settings=settings,
        policy=POLICY,
        store=ArtifactStore(str(tmp_path / "artifacts")),
        references=References(),  # type: ignore[arg-type]
        encoder=HashedWords(),
        publisher=publisher,
        policy_state=state,
        champions=ChampionTable(state._connection),
        metrics=MonitoringMetrics(),
        wall_clock=clock,
    )


_windows = iter(range(1_000))


def _drifted_window() -> Window:
    """60 requests a banking model was never trained on, answered unsure: oov_share and confidence breach."""
    n = next(_windows)
    texts = out_of_domain_texts(60, seed=n)
    now = datetime.now(UTC)
    observations = [Observation(f"w{n}-r{i}", text, "l0", 0.3, now) for i, text in enumerate(texts)]
    return Window(key=KEY, opened_at=0.0, observations=observations)


async def _report(service: MonitoringService) -> bool:
    """Report a drifted window; whether ``report_window`` raised (it must not)."""
    try:
        await service.report_window(_drifted_window())
    except ConnectionError:
        return True
    return False


async def test_a_failed_publish_records_no_cooldown_and_the_next_window_requests(tmp_path: Path) -> None:
    processed = ProcessedEvents(tmp_path / "monitoring.db", consumer="monitoring")
    state = PolicyStateStore(processed.connection)
    publisher, clock = RecordingPublisher(failures=1), Clock()
    service = _service(tmp_path, publisher, clock, state)

    raised = await _report(service)
    assert state.load(MODEL).request_times == ()  # no cooldown for a request nobody received
    assert not raised  # the service carries on: a failed report is logged and counted
    assert publisher.of(TrainingRequested) == []
    failed_attempt = publisher.of(TrainingRequested, attempted=True)[0]

    clock.now += 600  # the next window, 10 minutes later: well within a cooldown
    assert not await _report(service)
    [request] = publisher.of(TrainingRequested)
    assert state.load(MODEL).request_times == (clock.now,)  # recorded once published
    # The request is the one the failed attempt tried to publish, by id: a broker that got it
    # after all (a lost acknowledgement) holds a duplicate that downstream recognises.
    assert request.id == failed_attempt.id
    detections = publisher.of(MonitoringDriftDetected)
    assert request.correlationid == detections[-1].id
    assert {e.id for e in detections} == {detections[-1].id}

    clock.now += 600  # now the cooldown holds
    assert not await _report(service)
    assert len(publisher.of(TrainingRequested)) == 1
    processed.close()


class CrashingSave(PolicyStateStore):
    """The process dies between publishing the request and recording it."""

    def save(self, model_name: str, state: Any) -> None:
        raise SystemExit("killed")


async def test_a_request_published_but_not_recorded_is_republished_with_the_same_ids(tmp_path: Path) -> None:
    publisher, clock = RecordingPublisher(), Clock()
    before = ProcessedEvents(tmp_path / "monitoring.db", consumer="monitoring")
    crashing = _service(tmp_path, publisher, clock, CrashingSave(before.connection))
    with contextlib.suppress(SystemExit):
        await _report(crashing)
    before.close()
    [first] = publisher.of(TrainingRequested)  # it was published before the crash

    after = ProcessedEvents(tmp_path / "monitoring.db", consumer="monitoring")  # the restarted process
    state = PolicyStateStore(after.connection)
    assert state.load(MODEL).request_times == ()
    clock.now += 600
    restarted = _service(tmp_path, publisher, clock, state)
    assert not await _report(restarted)  # a new window (new requests) breaches again
    _, second = publisher.of(TrainingRequested)
    assert second.id == first.id  # the fine-tuning service skips it as a duplicate
    detections = publisher.of(MonitoringDriftDetected)
    assert detections[0].id == detections[1].id and second.correlationid == first.correlationid
    assert state.load(MODEL).request_times == (clock.now,)

    clock.now += 7 * 3600  # after the cooldown a new request is a new event
    assert not await _report(restarted)
    third = publisher.of(TrainingRequested)[-1]
    assert third.id != first.id
    after.close()


def test_a_state_database_of_an_earlier_version_is_migrated(tmp_path: Path) -> None:
    import sqlite3

    path = tmp_path / "monitoring.db"
    old = sqlite3.connect(path, isolation_level=None)
    old.execute(
        "CREATE TABLE drift_policy_state ("
        " model_name TEXT PRIMARY KEY, consecutive_breaches INTEGER NOT NULL, request_times TEXT NOT NULL)"
    )
    old.execute("INSERT INTO drift_policy_state VALUES ('banking', 1, '[1000.0]')")
    old.close()

    first = ProcessedEvents(path, consumer="monitoring")
    store = PolicyStateStore(first.connection)
    assert store.load(MODEL).request_times == (1000.0,) and store.load(MODEL).requests == 0
    epoch = store.epoch
    first.close()
    second = ProcessedEvents(path, consumer="monitoring")
    assert PolicyStateStore(second.connection).epoch == epoch  # drawn once per database
    second.close()
    other = ProcessedEvents(tmp_path / "fresh.db", consumer="monitoring")
    assert PolicyStateStore(other.connection).epoch != epoch
    other.close()

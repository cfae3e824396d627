"""Feast's Redis online store (``LLMOPS_FEAST_ONLINE_STORE=redis``) on a real ``redis-server`` with a
password: the direct writer leaves exactly the hashes Feast's own push leaves, Feast reads them
back, erasure removes them, a wrong password or address fails at start-up without the password in
sight, and the service pushes there when its settings say so. The default stays SQLite."""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any

import pytest
import redis
from feast_rows import curated_rows
from ingestion_harness import start_ingestion, stop_ingestion, wait_until

from llmops_config import PlatformSettings
from llmops_events.v1 import RecordSubmitted
from llmops_features import ENTITY, INSTRUCTIONS_VIEW
from llmops_features.online_store import FeastOnlineStoreSettings
from llmops_ingestion.adapters.feast_store import ONLINE_FILE, FeastCuratedStore
from llmops_ingestion.settings import IngestionSettings
from llmops_privacy.redaction import Redactor
from llmops_stack import free_port
from tests.redis_server import RedisServer

pytestmark = pytest.mark.integration


def _settings(server: RedisServer, **overrides: Any) -> FeastOnlineStoreSettings:
    options: dict[str, Any] = {
        "online_store": "redis",
        "redis_url": server.address,
        "redis_password": server.password,
        "redis_timeout_s": 5,
    }
    return FeastOnlineStoreSettings(**{**options, **overrides})


def _client(server: RedisServer) -> redis.Redis:
    host, port = server.address.split(":")
    return redis.Redis(host=host, port=int(port), password=server.password, socket_timeout=5)


def _hashes(client: redis.Redis, project: str, record_ids: list[str]) -> list[dict[bytes, bytes]]:
    from feast.infra.online_stores.helpers import _redis_key
    from feast.protos.feast.types.EntityKey_pb2 import EntityKey
    from feast.protos.feast.types.Value_pb2 import Value

    keys = [_redis_key(project, EntityKey(join_keys=[ENTITY], entity_values=[Value(string_val=i)])) for i in record_ids]
    return [client.hgetall(key) for key in keys]


def _project() -> str:
    return f"t{uuid.uuid4().hex[:10]}"  # a Redis key is entity key + project: each test its own


def test_a_pushed_batch_is_read_back_from_redis_through_feast(
    tmp_path: Path, redactor: Redactor, redis_server: RedisServer
) -> None:
    from feast.data_source import PushMode

    from llmops_features import PUSH_SOURCE
    from llmops_ingestion.adapters.feast_store import to_frame, with_descriptors
    from llmops_ingestion.adapters.language import language_detector

    rows = curated_rows(redactor)
    ids = [str(row[ENTITY]) for row in rows]
    client = _client(redis_server)
    ours_project, feasts_project = _project(), _project()
    ours = FeastCuratedStore(tmp_path / "ours", project=ours_project, online_store=_settings(redis_server))
    ours.open()
    ours.push(rows)
    # Feast's own push of the same rows, in another project: the same hashes, field for field.
    by_feast = FeastCuratedStore(tmp_path / "feast", project=feasts_project, online_store=_settings(redis_server))
    by_feast.open()
    described = with_descriptors(rows, detect_languages=language_detector().many)
    by_feast._require_open().push(PUSH_SOURCE, to_frame(described), to=PushMode.ONLINE)
    expected = _hashes(client, feasts_project, ids)
    assert (
        all(expected) and len(expected[0]) == len(to_frame(described).columns) - 2
    )  # features + _ts, less id and created
    assert _hashes(client, ours_project, ids) == expected
    # Feast reads what the writer wrote, descriptors included.
    online = ours.online(ids)
    assert online["text"] == [row["text"] for row in rows]
    assert online["label"] == [None, "card_arrival", "card_arrival"]
    assert online["pii_email"] == [row["pii_email"] for row in rows] and online["pii_email"][1] == 1
    assert online["language"] == [row["language"] for row in described] and online["language"][0] == "en"
    # Pushed again (the outbox is at-least-once): the same hashes.
    ours.push(rows)
    assert _hashes(client, ours_project, ids) == expected
    # Nothing went to SQLite, and the repository file names Redis without its password.
    assert not (tmp_path / "ours" / "data" / ONLINE_FILE).exists()
    written = (tmp_path / "ours" / "feature_store.yaml").read_text()
    assert "type: redis" in written and redis_server.address in written
    assert redis_server.password not in written and "${LLMOPS_FEAST_REDIS_PASSWORD}" in written
    # A second handle on the repository (as the push worker opens one) reads the same rows.
    reader = FeastCuratedStore(tmp_path / "ours", project=ours_project, online_store=_settings(redis_server))
    reader.open(apply=False)
    assert reader.online(ids)["text"] == online["text"]
    for store in (ours, by_feast, reader):
        store.close()
    client.close()


def test_erasure_removes_the_rows_from_redis(tmp_path: Path, redactor: Redactor, redis_server: RedisServer) -> None:
    project = _project()
    client = _client(redis_server)
    store = FeastCuratedStore(tmp_path / "feast", project=project, online_store=_settings(redis_server))
    store.open()
    rows = curated_rows(redactor)
    store.push(rows)
    # An instruction example of another record: the records view's erasure leaves it alone.
    instruction = {**rows[2], ENTITY: "i-0", "messages_json": "[]", "output_format_json": "", "turn_count": 1}
    store.push_instructions([{**instruction, "chat_tokens": 7}])
    doomed, kept = str(rows[1][ENTITY]), [str(rows[0][ENTITY]), str(rows[2][ENTITY])]
    store.erase([doomed])
    assert store.online([doomed, *kept])["text"] == [None, rows[0]["text"], rows[2]["text"]]
    assert _hashes(client, project, [doomed]) == [{}]  # no field left, so no key
    # A whole tenant: every row of it, found offline, goes online too (both views).
    store.erase([], tenant="acme")
    assert store.online(kept)["text"] == [None, None]
    assert store.online(["i-0"], view=INSTRUCTIONS_VIEW)["text"] == [None]
    assert list(client.scan_iter(match=b"*" + project.encode())) == []
    store.close()
    client.close()


def test_a_wrong_password_or_address_fails_at_open_without_the_password_in_sight(
    tmp_path: Path, redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    wrong = "not-the-password-" + uuid.uuid4().hex
    store = FeastCuratedStore(tmp_path / "feast", online_store=_settings(redis_server, redis_password=wrong))
    with caplog.at_level("DEBUG"), pytest.raises(redis.AuthenticationError) as refused:
        store.open()
    assert wrong not in str(refused.value) and wrong not in caplog.text
    assert wrong not in (tmp_path / "feast" / "feature_store.yaml").read_text()
    assert wrong not in repr(_settings(redis_server, redis_password=wrong))
    # Nobody listens: the connect timeout bounds the wait.
    nowhere = _settings(redis_server, redis_url=f"127.0.0.1:{free_port()}", redis_timeout_s=1)
    started = time.monotonic()
    with pytest.raises(redis.ConnectionError):
        FeastCuratedStore(tmp_path / "nowhere", online_store=nowhere).open()
    assert time.monotonic() - started < 30


def test_the_default_online_store_stays_sqlite(
    tmp_path: Path, redactor: Redactor, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("ONLINE_STORE", "REDIS_URL", "REDIS_PASSWORD"):
        monkeypatch.delenv(f"LLMOPS_FEAST_{name}", raising=False)
    settings = IngestionSettings()
    assert settings.feast.online_store == "sqlite"
    store = FeastCuratedStore(tmp_path / "feast", online_store=settings.feast)
    store.open()
    rows = curated_rows(redactor)
    store.push(rows)
    assert "RecordRowSqliteOnlineStore" in (tmp_path / "feast" / "feature_store.yaml").read_text()
    assert (tmp_path / "feast" / "data" / ONLINE_FILE).exists()
    assert store.online([str(row[ENTITY]) for row in rows])["text"] == [row["text"] for row in rows]
    store.close()


async def test_the_service_pushes_to_redis_when_its_settings_say_so(
    kafka_settings: PlatformSettings, redis_server: RedisServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As the chart runs it: Redis chosen by ``LLMOPS_FEAST_*`` alone, pushes from the worker process."""
    monkeypatch.setenv("LLMOPS_FEAST_ONLINE_STORE", "redis")
    monkeypatch.setenv("LLMOPS_FEAST_REDIS_URL", redis_server.address)
    monkeypatch.setenv("LLMOPS_FEAST_REDIS_PASSWORD", redis_server.password)
    tenant = f"tenant-{uuid.uuid4().hex[:8]}"
    running, broker = await start_ingestion(kafka_settings, tmp_path)
    try:
        assert running.settings.feast.online_store == "redis" and running.settings.feast_push_in_worker_process
        texts = ["where is my card", "I lost my card yesterday", "refund my last payment please"]
        for text in texts:
            await running.publisher.publish(RecordSubmitted(tenant=tenant, source="crm", text=text, label="refund"))
        await running.wait_for_rows(tenant, 3, timeout=60)
        await wait_until(lambda: running.service._state.outbox_size() == 0, timeout=60)
        ids = sorted(running.offline_rows(tenant)[ENTITY])
        reader = FeastCuratedStore(running.settings.feast_repo_dir, online_store=running.settings.feast)
        reader.open(apply=False)
        online = reader.online(ids)
        reader.close()
        assert sorted(online["text"]) == sorted(texts) and set(online["tenant"]) == {tenant}
        assert not (running.settings.feast_repo_dir / "data" / ONLINE_FILE).exists()
    finally:
        await stop_ingestion(running, broker)

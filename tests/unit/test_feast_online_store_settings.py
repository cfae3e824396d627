"""The Feast online store's settings (``LLMOPS_FEAST_*``, ``llmops_features.online_store``): SQLite
by default, Redis chosen by the environment, an address without a password, the password kept out
of every text but the configuration handed to Feast in memory."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from llmops_features.online_store import FeastOnlineStoreSettings
from llmops_ingestion.settings import IngestionSettings


@pytest.fixture(autouse=True)
def _no_feast_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("ONLINE_STORE", "REDIS_URL", "REDIS_PASSWORD", "REDIS_TIMEOUT_S"):
        monkeypatch.delenv(f"LLMOPS_FEAST_{name}", raising=False)


def test_the_default_is_the_embedded_sqlite_store() -> None:
    assert IngestionSettings().feast.online_store == "sqlite"
    assert FeastOnlineStoreSettings().redis_password is None


def test_the_environment_selects_redis_and_the_password_stays_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLMOPS_FEAST_ONLINE_STORE", "redis")
    monkeypatch.setenv("LLMOPS_FEAST_REDIS_URL", "redis-master.feast:6379,ssl=true")
    monkeypatch.setenv("LLMOPS_FEAST_REDIS_PASSWORD", "123")
    monkeypatch.setenv("LLMOPS_FEAST_REDIS_TIMEOUT_S", "2.5")
    settings = IngestionSettings().feast
    assert (settings.online_store, settings.redis_url, settings.redis_timeout_s) == (
        "redis",
        "redis-master.feast:6379,ssl=true",
        2.5,
    )
    assert "123" not in repr(settings) and "123" not in str(IngestionSettings())
    on_disk = settings.redis_config(with_password=False)["connection_string"]
    assert on_disk == (
        "redis-master.feast:6379,ssl=true,socket_connect_timeout=2.5,socket_timeout=2.5"
        ",password=${LLMOPS_FEAST_REDIS_PASSWORD}"
    )
    # JSON-quoted in memory: Feast JSON-decodes option values, and "123" must stay a string.
    in_memory = settings.redis_config(with_password=True)["connection_string"]
    assert in_memory.endswith(',password="123"')


def test_without_a_password_the_connection_string_has_none() -> None:
    settings = FeastOnlineStoreSettings(online_store="redis", redis_url="127.0.0.1:6379")
    assert settings.redis_config(with_password=True) == {
        "type": "redis",
        "connection_string": "127.0.0.1:6379,socket_connect_timeout=5.0,socket_timeout=5.0",
    }


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"online_store": "redis"}, "needs LLMOPS_FEAST_REDIS_URL"),
        ({"redis_url": "redis://redis-master:6379"}, "not a redis:// URL"),
        ({"redis_url": "redis-master:6379,password=hunter2"}, "must not carry the password"),
        ({"redis_url": "redis-master:6379", "redis_password": "a,b"}, "must not contain a comma"),
        ({"redis_timeout_s": 0}, "greater than 0"),
        ({"online_store": "memcached"}, "'sqlite' or 'redis'"),
    ],
)
def test_a_setting_that_cannot_work_is_refused(options: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError, match=message) as refused:
        FeastOnlineStoreSettings(**options)  # type: ignore[arg-type]
    assert "hunter2" not in str(refused.value) and "a,b" not in str(refused.value)  # secrets stay out of errors

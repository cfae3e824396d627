"""Session fixtures shared by tests/ and services/*/tests/: one real Kafka broker and one real
Triton server per test session.

Both run on free ports with a temporary ``var/``, so a stack started with ``make up`` is left
alone. The session broker is plaintext (tests create throw-away topics and groups as whoever they
like); the security tests get a second, secured broker (``secured_kafka_settings``) with exactly
the SCRAM users and ACLs ``make up`` creates. Each test uses its own consumer group (and, where it
matters, its own ids), so tests share the broker without seeing each other's effects.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from llmops_config import PlatformSettings
from llmops_config.kafka import KafkaSettings
from llmops_privacy import Redactor
from llmops_stack import KafkaBroker, KafkaComponent, TritonComponent, TritonServer, free_port, repo_paths, running

# Processes the tests start (services, the CLI, helper scripts) read their Kafka security from the
# environment, and the platform's default is SASL: the session's throw-away brokers are plaintext,
# so say so once for every child. The e2e stack and `secured_kafka_settings` set SASL explicitly.
os.environ.setdefault("LLMOPS_KAFKA_SECURITY_PROTOCOL", "PLAINTEXT")


def _session_tls() -> None:
    """One local CA and certificates for the whole session (``LLMOPS_TLS_DIR``, inherited by every
    process a test starts), made before any settings are read: the gateway and the ops API serve
    TLS in tests as they do by default, and every test client dials them through
    ``llmops_config.tls``. A run with ``LLMOPS_TLS_INSECURE=true`` or its own ``LLMOPS_TLS_DIR``
    keeps that."""
    if os.environ.get("LLMOPS_TLS_DIR") or os.environ.get("LLMOPS_TLS_INSECURE", "").lower() in ("1", "true", "yes"):
        return
    import atexit
    import shutil
    import tempfile

    from llmops_stack.certificates import ensure_local_certificates

    folder = Path(tempfile.mkdtemp(prefix="llmops-tls-"))
    atexit.register(shutil.rmtree, folder, True)
    os.environ["LLMOPS_TLS_DIR"] = str(folder)
    ensure_local_certificates(PlatformSettings(), operator="test-admin")


_session_tls()


@pytest.fixture(scope="session")
def stack_settings(tmp_path_factory: pytest.TempPathFactory) -> PlatformSettings:
    """Platform settings for this test session: free ports, a temporary var/ directory."""
    var_dir = tmp_path_factory.mktemp("var")
    return PlatformSettings(
        kafka_bootstrap_servers=f"127.0.0.1:{free_port()}",
        kafka_controller_port=free_port(),
        triton_http_port=free_port(),
        triton_grpc_port=free_port(),
        triton_metrics_port=free_port(),
        gateway_port=free_port(),
        ops_port=free_port(),
        var_dir=var_dir,
        log_format="text",
        # Plaintext on purpose: most tests make uuid-named topics and groups, which no ACL of the
        # platform's table grants; the ACLs themselves are tested on `secured_kafka_settings`.
        kafka=KafkaSettings(security_protocol="PLAINTEXT"),
    )


@pytest.fixture(scope="session")
def secured_kafka_settings(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PlatformSettings]:
    """A second real broker, secured as ``make up`` runs it: SASL/SCRAM-SHA-512, one principal per
    service with its generated password under its ``var/kafka/credentials``, the ACL table applied
    (started only by the tests that ask for it; ~10 s)."""
    settings = PlatformSettings(
        kafka_bootstrap_servers=f"127.0.0.1:{free_port()}",
        kafka_controller_port=free_port(),
        var_dir=tmp_path_factory.mktemp("secured-var"),
        log_format="text",
        kafka=KafkaSettings(
            security_protocol="SASL_PLAINTEXT", sasl_mechanism="SCRAM-SHA-512", sasl_username="", credentials_dir=None
        ),
    )
    paths = repo_paths()
    with running(KafkaComponent(KafkaBroker(settings, paths.kafka_libs_dir, paths.kafka_log4j_config))):
        yield settings


@pytest.fixture(scope="session")
def kafka_settings(stack_settings: PlatformSettings) -> Iterator[PlatformSettings]:
    """A real single-node KRaft broker with every topic of the platform created."""
    paths = repo_paths()
    with running(KafkaComponent(KafkaBroker(stack_settings, paths.kafka_libs_dir, paths.kafka_log4j_config))):
        yield stack_settings


@pytest.fixture(scope="session")
def triton_settings(stack_settings: PlatformSettings) -> Iterator[PlatformSettings]:
    """The real tritonserver (Python backend, explicit model control)."""
    paths = repo_paths()
    with running(TritonComponent(TritonServer(stack_settings, paths.triton_venv, paths.triton_backend_dir))):
        yield stack_settings


@pytest.fixture(scope="session")
def shared_data_dir() -> Path:
    """BANKING77 and other shared data for tests and benchmarks (``LLMOPS_SHARED_DATA``)."""
    folder = Path(os.environ.get("LLMOPS_SHARED_DATA", Path(__file__).resolve().parent / ".." / "shared" / "data"))
    if not (folder / "banking77" / "train.csv").exists():
        pytest.skip(f"shared data not found at {folder} (set LLMOPS_SHARED_DATA to the folder holding banking77/)")
    return folder.resolve()


@pytest.fixture(scope="session")
def redactor() -> Redactor:
    # Built once: constructing a Redactor imports Presidio (seconds).
    return Redactor()


TINY_PHRASES = {
    "card_arrival": ["where is my new card", "my card has not arrived", "when will my card be delivered"],
    "exchange_rate": ["what exchange rate do you use", "is your currency rate fair", "how is the fx rate set"],
    "lost_card": ["i lost my card", "my card was stolen", "someone took my bank card"],
}


@pytest.fixture(scope="session")
def tiny_model(stack_settings: PlatformSettings, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """One version of ``tiny-intents``, trained for real (seconds) into the session's artifact store,
    for the services that deploy, serve and watch models. Returns its ``TrainingCompleted``."""
    import pandas as pd

    from llmops_events.v1.training import Hyperparameters
    from llmops_fine_tuning import train_model
    from llmops_storage import ArtifactStore

    rows = [
        {"text": f"{phrase} please {i}", "label": label, "split": "train" if i < 8 else "validation"}
        for label, phrases in TINY_PHRASES.items()
        for i in range(10)
        for phrase in phrases[i % len(phrases) : i % len(phrases) + 1]
    ]
    fast = Hyperparameters(epochs=2, batch_size=8, max_length=32, lora_rank=4, target_modules=["query", "value"])
    training = train_model(
        ArtifactStore(stack_settings.resolved_artifact_store_uri),
        pd.DataFrame(rows),
        model_name="tiny-intents",
        hyperparameters=fast,
        work_dir=tmp_path_factory.mktemp("training"),
    )
    with ThreadPoolExecutor(1) as thread:  # its own event loop, whatever loop the test runs in
        return thread.submit(asyncio.run, training).result()


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A real PostgreSQL (Debian's ``postgresql`` package) for the shared state store, started once
    per session in a temporary folder on a free port; skipped where the server is not installed."""
    import shutil
    import tempfile

    from tests.postgres_server import postgres_bin_dir, running_postgres

    if postgres_bin_dir() is None:
        pytest.skip("PostgreSQL server binaries not found under /usr/lib/postgresql (apt-get install postgresql)")
    # Not under pytest's 0700 base folder: the server runs as the postgres user when tests run as root.
    folder = Path(tempfile.mkdtemp(prefix="llmops-postgres-"))
    try:
        with running_postgres(folder) as url:
            yield url
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A real Redis (Debian's ``redis-server``) for Feast's Redis online store, with a password,
    started once per session on a free port; skipped where the server is not installed. Tests keep
    apart by a Feast project or record ids of their own (a Redis key is entity key and project)."""
    from tests.redis_server import redis_server_binary, running_redis

    if redis_server_binary() is None:
        pytest.skip("redis-server not found (apt-get install redis-server): the Redis online store's tests skip")
    with running_redis(tmp_path_factory.mktemp("redis")) as server:
        yield server

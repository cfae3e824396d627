"""Session fixtures shared by tests/ and services/*/tests/: one real Kafka broker and one real
Triton server per test session.

Both run on free ports with a temporary ``var/``, so a stack started with ``make up`` is left
alone. Each test uses its own consumer group (and, where it matters, its own ids), so tests
share the broker without seeing each other's effects.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from llmops_cli.stack.kafka import KafkaBroker
from llmops_cli.stack.paths import repo_paths
from llmops_cli.stack.stack import KafkaComponent, TritonComponent, running
from llmops_cli.stack.triton import TritonServer
from llmops_config import PlatformSettings
from llmops_privacy import Redactor


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture(scope="session")
def stack_settings(tmp_path_factory: pytest.TempPathFactory) -> PlatformSettings:
    """Platform settings for this test session: free ports, a temporary var/ directory."""
    var_dir = tmp_path_factory.mktemp("var")
    return PlatformSettings(
        kafka_bootstrap_servers=f"127.0.0.1:{_free_port()}",
        kafka_controller_port=_free_port(),
        triton_http_port=_free_port(),
        triton_grpc_port=_free_port(),
        triton_metrics_port=_free_port(),
        gateway_port=_free_port(),
        var_dir=var_dir,
        log_format="text",
    )


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

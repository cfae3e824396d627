"""The embedded Apache Kafka broker: one JVM running a combined KRaft broker+controller.

Jars come from Maven Central (``deploy/kafka/pom.xml`` → ``build/kafka/libs``). State lives under
``<var_dir>/kafka``: ``server.properties`` (re-rendered from the settings at every start),
``cluster.id`` (generated once) and ``data/`` (the log dirs, formatted once; kept across restarts).
"""

from __future__ import annotations

import asyncio
import base64
import os
import shutil
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from aiokafka.admin import AIOKafkaAdminClient

from llmops_config import PlatformSettings

from .processes import ManagedProcess, NullProgress, Progress, StackError, port_open, run_sync

# Sized for a developer machine (2 cores): one JVM, modest heap, few threads, small internal topics.
JVM_OPTIONS = (
    "-XX:+UseG1GC",
    "-XX:MaxGCPauseMillis=20",
    "-XX:+ExplicitGCInvokesConcurrent",
    "-XX:ActiveProcessorCount=2",
    "-XX:+ExitOnOutOfMemoryError",
    "-Djava.awt.headless=true",
    # Kafka logs its shutdown from its own shutdown hook; Log4j2's hook would stop logging first.
    "-Dlog4j2.shutdownHookEnabled=false",
)


def parse_address(address: str, default_port: int = 9092) -> tuple[str, int]:
    """``host:port`` (the first of a comma-separated list) as a tuple."""
    first = address.split(",")[0].strip()
    for prefix in ("PLAINTEXT://", "plaintext://"):
        first = first.removeprefix(prefix)
    host, sep, port = first.rpartition(":")
    if not sep:
        return first, default_port
    return host.strip("[]"), int(port)


def new_cluster_id() -> str:
    """A Kafka cluster id: 16 random bytes, URL-safe base64, no padding (as ``StorageTool random-uuid``)."""
    while True:
        candidate = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not candidate.startswith("-"):  # Kafka rejects ids a command line would read as an option
            return candidate


async def fetch_topics(bootstrap: str, *, timeout: float = 5.0, client_id: str = "llmops-stack") -> list[str]:
    """Topic names from a metadata request (raises on any failure or after ``timeout`` s)."""
    admin = AIOKafkaAdminClient(
        bootstrap_servers=bootstrap, client_id=client_id, request_timeout_ms=int(timeout * 1000)
    )
    try:
        async with asyncio.timeout(timeout):
            await admin.start()
            return sorted(await admin.list_topics())
    finally:
        await admin.close()


def find_java() -> str:
    """The ``java`` launcher: ``$JAVA_HOME/bin/java`` if set, else the one on PATH."""
    if home := os.environ.get("JAVA_HOME"):
        candidate = Path(home) / "bin" / "java"
        if candidate.is_file():
            return str(candidate)
    if found := shutil.which("java"):
        return found
    raise StackError("java not found: Kafka 4.x needs a JDK/JRE 17+ on PATH (or JAVA_HOME)")


@dataclass
class KafkaBroker:
    """A single-node KRaft broker for ``settings.kafka_bootstrap_servers``, started from ``libs_dir``'s jars."""

    settings: PlatformSettings
    libs_dir: Path
    log4j_config: Path
    heap: str = "512m"
    node_id: int = 1
    name: str = "kafka"
    process: ManagedProcess = field(init=False, repr=False)

    def __post_init__(self) -> None:
        # One handle per broker object: the one that started the JVM can also report its exit code.
        self.process = ManagedProcess(self.name, self.settings.var_dir)

    # -- layout -------------------------------------------------------------------------------------
    @property
    def state_dir(self) -> Path:
        return Path(self.settings.var_dir).resolve() / "kafka"

    @property
    def data_dir(self) -> Path:
        return self.state_dir / "data"

    @property
    def config_file(self) -> Path:
        return self.state_dir / "server.properties"

    @property
    def cluster_id_file(self) -> Path:
        return self.state_dir / "cluster.id"

    @property
    def address(self) -> tuple[str, int]:
        return parse_address(self.settings.kafka_bootstrap_servers)

    # -- configuration ------------------------------------------------------------------------------
    def properties(self) -> dict[str, str]:
        """``server.properties`` for a combined broker+controller listening on loopback only."""
        host, port = self.address
        broker = f"{host}:{port}"
        controller = f"{host}:{self.settings.kafka_controller_port}"
        return {
            "process.roles": "broker,controller",
            "node.id": str(self.node_id),
            "controller.quorum.bootstrap.servers": controller,
            "listeners": f"PLAINTEXT://{broker},CONTROLLER://{controller}",
            "advertised.listeners": f"PLAINTEXT://{broker},CONTROLLER://{controller}",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
            "log.dirs": str(self.data_dir),
            # Topics are created by `llmops topics create` with their partitions and configs; a typo'd
            # topic name should fail loudly instead of silently creating a new topic.
            "auto.create.topics.enable": "false",
            "num.partitions": "1",
            # One node: every internal topic must have replication factor 1.
            "offsets.topic.replication.factor": "1",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "share.coordinator.state.topic.replication.factor": "1",
            "share.coordinator.state.topic.min.isr": "1",
            # Fewer internal partitions than the default 50: faster first consumer group / transaction.
            "offsets.topic.num.partitions": "10",
            "transaction.state.log.num.partitions": "10",
            "group.initial.rebalance.delay.ms": "0",
            "num.network.threads": "2",
            "num.io.threads": "2",
            "num.recovery.threads.per.data.dir": "1",
            "log.cleaner.dedupe.buffer.size": "2097152",
        }

    def write_config(self) -> Path:
        """Render ``server.properties`` from the current settings (always: ports may have changed)."""
        lines = ["# Written by `llmops stack up` from PlatformSettings; edits are overwritten."]
        lines += [f"{key}={value}" for key, value in self.properties().items()]
        self.config_file.parent.mkdir(parents=True, exist_ok=True)
        self.config_file.write_text("\n".join(lines) + "\n")
        return self.config_file

    def cluster_id(self) -> str:
        """The cluster id of this data directory: kept in ``cluster.id``, generated on first use."""
        if self.cluster_id_file.is_file():
            return self.cluster_id_file.read_text().strip()
        cluster_id = self._formatted_cluster_id() or new_cluster_id()
        self.cluster_id_file.parent.mkdir(parents=True, exist_ok=True)
        self.cluster_id_file.write_text(cluster_id + "\n")
        return cluster_id

    def _formatted_cluster_id(self) -> str | None:
        meta = self.data_dir / "meta.properties"
        if not meta.is_file():
            return None
        for line in meta.read_text().splitlines():
            if line.startswith("cluster.id="):
                return line.partition("=")[2].strip()
        return None

    def is_formatted(self) -> bool:
        return (self.data_dir / "meta.properties").is_file()

    # -- commands -----------------------------------------------------------------------------------
    def preflight(self) -> None:
        """Fail early, before anything starts, if java, the jars or the logging config are missing."""
        find_java()
        self.classpath()
        if not self.log4j_config.is_file():
            raise StackError(f"kafka: logging config {self.log4j_config} is missing")

    def classpath(self) -> str:
        if not any(self.libs_dir.glob("kafka_2.13-*.jar")):
            raise StackError(
                f"Kafka jars missing in {self.libs_dir}: run `make setup` "
                "(mvn -q -B -f deploy/kafka/pom.xml dependency:copy-dependencies)"
            )
        return f"{self.libs_dir}/*"

    def java_command(self, main_class: str, *args: str, heap: str | None = None) -> list[str]:
        """``java <options> -cp <jars> <main_class> <args>`` with this broker's logging set-up."""
        heap = heap or self.heap
        return [
            find_java(),
            f"-Xms{min(256, _megabytes(heap))}m",
            f"-Xmx{heap}",
            *JVM_OPTIONS,
            f"-Dlog4j2.configurationFile={self.log4j_config.resolve()}",
            f"-Dkafka.logs.dir={self.process.log_file.parent}",
            "-cp",
            self.classpath(),
            main_class,
            *args,
        ]

    def format_storage(self) -> bool:
        """Format the log dirs once (``StorageTool format --standalone``); False if already formatted."""
        if self.is_formatted():
            return False
        self.write_config()
        command = self.java_command(
            "kafka.tools.StorageTool",
            "format",
            "--standalone",
            "--ignore-formatted",
            "--cluster-id",
            self.cluster_id(),
            "--config",
            str(self.config_file),
            heap="256m",
        )
        result = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
        log = self.process.log_file
        log.parent.mkdir(parents=True, exist_ok=True)
        with log.open("a") as handle:
            handle.write(f"\n===== llmops formatting {self.data_dir}\n{result.stdout}{result.stderr}")
        if result.returncode != 0:
            raise self.process.failure(f"formatting {self.data_dir} failed (exit {result.returncode})")
        return True

    def start(self) -> int:
        """Write the config, format on first use and launch the broker; returns its pid (not yet ready)."""
        host, port = self.address
        for busy in (port, self.settings.kafka_controller_port):
            if port_open(host, busy):
                raise StackError(f"kafka: {host}:{busy} is already in use by a process llmops did not start")
        self.write_config()
        self.format_storage()
        return self.process.start(self.java_command("kafka.Kafka", str(self.config_file)), cwd=self.state_dir)

    def wait_ready(self, timeout: float = 90.0, progress: Progress | None = None) -> float:
        """Block until the broker answers a metadata request; returns the seconds waited."""
        progress = progress or NullProgress()
        process = self.process
        host, port = self.address
        started = time.monotonic()
        while (elapsed := time.monotonic() - started) < timeout:
            if not process.is_running():
                code = process.exit_code()
                raise process.failure("exited during start-up" + (f" (exit code {code})" if code is not None else ""))
            if port_open(host, port) and self.topics(timeout=5) is not None:
                return time.monotonic() - started
            progress.waiting(f"kafka: waiting for {host}:{port} to answer metadata requests ({elapsed:.0f}s)")
            time.sleep(0.5)
        raise process.failure(f"not ready after {timeout:.0f}s")

    def topics(self, timeout: float = 5.0) -> list[str] | None:
        """The broker's topics, or None if it does not answer."""
        host, port = self.address
        if not port_open(host, port):
            return None
        try:
            return run_sync(
                fetch_topics(
                    f"{host}:{port}", timeout=timeout, client_id=f"{self.settings.kafka_client_id_prefix}-stack"
                )
            )
        except Exception:  # any client error means "not answering yet"
            return None

    def stop(self, timeout: float = 30.0) -> bool:
        """Controlled shutdown (SIGTERM), forced after ``timeout`` s; False if it was not running."""
        return self.process.stop(timeout)


def _megabytes(size: str) -> int:
    """``512m``/``1g``/``1024k`` in MiB (JVM heap notation)."""
    unit = size[-1].lower()
    number = int(size[:-1]) if unit in "kmg" else int(size) // (1024 * 1024)
    return {"k": number // 1024, "m": number, "g": number * 1024}.get(unit, number)

"""The embedded Apache Kafka broker: one JVM running a combined KRaft broker+controller.

Jars come from Maven Central (``deploy/kafka/pom.xml`` → ``build/kafka/libs``). State lives under
``<var_dir>/kafka``: ``server.properties`` (re-rendered from the settings at every start),
``cluster.id`` (generated once) and ``data/`` (the log dirs, formatted once; kept across restarts).

Secured by default (``LLMOPS_KAFKA_SECURITY_PROTOCOL=SASL_PLAINTEXT``): clients authenticate with
SASL/SCRAM-SHA-512 (or -256) on the client listener, the broker talks to its controller with
SASL/PLAIN on the controller listener (KRaft cannot use SCRAM there: the SCRAM users live in the
metadata log the controller serves), and ``StandardAuthorizer`` allows only what the ACL table
(``llmops_stack.acls``) grants; ``broker`` and ``admin`` are super users. Every principal's password
is generated once into ``<var_dir>/kafka/credentials/<principal>`` (mode 0600) and its SCRAM user
is created when the log dirs are formatted (``StorageTool format --add-scram``).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import secrets
import shutil
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from aiokafka.admin import AIOKafkaAdminClient

from llmops_config import PlatformSettings
from llmops_config.kafka import (
    BROKER_PRINCIPAL,
    PRINCIPALS,
    SUPER_USERS,
    KafkaClientOptions,
    credentials_dir,
    kafka_client_options,
)

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


async def fetch_topics(options: KafkaClientOptions, *, timeout: float = 5.0) -> list[str]:
    """Topic names from a metadata request (raises on any failure or after ``timeout`` s)."""
    admin = AIOKafkaAdminClient(**options.aiokafka(request_timeout_ms=int(timeout * 1000)))
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

    @property
    def controller_port(self) -> int:
        return self.settings.kafka_controller_port

    @property
    def bootstrap(self) -> str:
        """``host:port`` of the client listener."""
        host, port = self.address
        return f"{host}:{port}"

    @property
    def log_file(self) -> Path:
        return self.process.log_file

    @property
    def pid_file(self) -> Path:
        return self.process.pid_file

    def is_running(self) -> bool:
        """Whether the JVM this broker's pid file names is alive (started by llmops)."""
        return self.process.is_running()

    @property
    def credentials_dir(self) -> Path:
        return credentials_dir(self.settings)

    @property
    def scram_users_file(self) -> Path:
        """The principals whose SCRAM users the log dirs were formatted with, one per line."""
        return self.state_dir / "scram-users"

    @property
    def secured(self) -> bool:
        """SASL + ACLs (``SASL_PLAINTEXT``, the default) rather than an open ``PLAINTEXT`` listener."""
        return self.settings.kafka.security_protocol == "SASL_PLAINTEXT"

    def admin_options(self) -> KafkaClientOptions:
        """How the stack itself connects: as ``admin`` (a super user) when secured."""
        return kafka_client_options(self.settings, service="stack")

    # -- credentials --------------------------------------------------------------------------------
    def credentials(self) -> dict[str, str]:
        """Every principal's password, generated on first use (files mode 0600 in a 0700 folder)."""
        folder = self.credentials_dir
        folder.mkdir(parents=True, exist_ok=True)
        folder.chmod(0o700)
        passwords = {}
        for principal in PRINCIPALS:
            path = folder / principal
            if not path.is_file():
                # Created 0600 before the secret is written, so it is never readable by others.
                descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                with os.fdopen(descriptor, "w") as handle:
                    handle.write(secrets.token_urlsafe(24) + "\n")
            passwords[principal] = path.read_text().strip()
        return passwords

    # -- configuration ------------------------------------------------------------------------------
    def properties(self) -> dict[str, str]:
        """``server.properties`` for a combined broker+controller listening on loopback only."""
        host, port = self.address
        broker = f"{host}:{port}"
        controller = f"{host}:{self.controller_port}"
        listeners = (
            self._security_properties(broker, controller)
            if self.secured
            else {
                "listeners": f"PLAINTEXT://{broker},CONTROLLER://{controller}",
                "advertised.listeners": f"PLAINTEXT://{broker},CONTROLLER://{controller}",
                "inter.broker.listener.name": "PLAINTEXT",
                "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
            }
        )
        return {
            "process.roles": "broker,controller",
            "node.id": str(self.node_id),
            "controller.quorum.bootstrap.servers": controller,
            "controller.listener.names": "CONTROLLER",
            **listeners,
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
            **self._extra_properties(),
        }

    def _extra_properties(self) -> dict[str, str]:
        """What a node of a cluster changes (quorum, replication of internal topics); none here."""
        return {}

    def _format_arguments(self) -> list[str]:
        """How StorageTool learns the controller quorum: this node alone (``--standalone``)."""
        return ["--standalone"]

    def _security_properties(self, broker: str, controller: str) -> dict[str, str]:
        """SASL listeners and the authorizer: SCRAM for clients (PLAIN too, on this loopback listener
        only, for librdkafka < 2.6.1 whose SCRAM Kafka 4 rejects: Debian's kcat), PLAIN (the broker
        only) to the controller."""
        passwords = self.credentials()
        password = passwords[BROKER_PRINCIPAL]
        scram_login = (
            "org.apache.kafka.common.security.scram.ScramLoginModule required "
            f'username="{BROKER_PRINCIPAL}" password="{password}";'
        )
        plain_login = (
            "org.apache.kafka.common.security.plain.PlainLoginModule required "
            f'username="{BROKER_PRINCIPAL}" password="{password}" user_{BROKER_PRINCIPAL}="{password}";'
        )
        plain_users = " ".join(f'user_{principal}="{secret}"' for principal, secret in passwords.items())
        return {
            "listeners": f"CLIENT://{broker},CONTROLLER://{controller}",
            "advertised.listeners": f"CLIENT://{broker},CONTROLLER://{controller}",
            "inter.broker.listener.name": "CLIENT",
            "listener.security.protocol.map": "CONTROLLER:SASL_PLAINTEXT,CLIENT:SASL_PLAINTEXT",
            "listener.name.client.sasl.enabled.mechanisms": "SCRAM-SHA-512,SCRAM-SHA-256,PLAIN",
            "sasl.mechanism.inter.broker.protocol": "SCRAM-SHA-512",
            "listener.name.client.scram-sha-512.sasl.jaas.config": scram_login,
            "listener.name.client.scram-sha-256.sasl.jaas.config": scram_login,
            "listener.name.client.plain.sasl.jaas.config": (
                f"org.apache.kafka.common.security.plain.PlainLoginModule required {plain_users};"
            ),
            "listener.name.controller.sasl.enabled.mechanisms": "PLAIN",
            "sasl.mechanism.controller.protocol": "PLAIN",
            "listener.name.controller.plain.sasl.jaas.config": plain_login,
            "authorizer.class.name": "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
            "super.users": ";".join(f"User:{user}" for user in SUPER_USERS),
            "allow.everyone.if.no.acl.found": "false",
        }

    def write_config(self) -> Path:
        """Render ``server.properties`` from the current settings (always: ports may have changed).
        Mode 0600: when secured it holds the broker's own password."""
        lines = ["# Written by `llmops stack up` from PlatformSettings; edits are overwritten."]
        lines += [f"{key}={value}" for key, value in self.properties().items()]
        self.config_file.parent.mkdir(parents=True, exist_ok=True)
        self.config_file.touch(mode=0o600, exist_ok=True)
        self.config_file.chmod(0o600)
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
        """Fail early, before anything starts, if java, the jars or the logging config are missing,
        or the security settings ask for something the embedded broker does not offer."""
        kafka = self.settings.kafka
        if kafka.security_protocol not in ("PLAINTEXT", "SASL_PLAINTEXT"):
            raise StackError(
                f"kafka: the embedded broker offers PLAINTEXT or SASL_PLAINTEXT, not {kafka.security_protocol} "
                "(TLS is for an external cluster: point LLMOPS_KAFKA_BOOTSTRAP_SERVERS at it)"
            )
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

    def java_command(
        self, main_class: str, *args: str, heap: str | None = None, rotating_log: bool = False
    ) -> list[str]:
        """``java <options> -cp <jars> <main_class> <args>`` with this broker's logging set-up:
        ``rotating_log`` (the broker) writes the log file itself and rotates it by size, as the
        platform's services do; otherwise Log4j prints to stdout (a one-shot tool's output)."""
        heap = heap or self.heap
        rotation = (
            [
                "-Dllmops.log.appender=ROLLING",
                f"-Dllmops.log.file={self.process.log_file.resolve()}",
                f"-Dllmops.log.max.bytes={self.settings.log_max_bytes}",
                f"-Dllmops.log.backups={self.settings.log_backup_count}",
            ]
            if rotating_log
            else []
        )
        return [
            find_java(),
            f"-Xms{min(256, _megabytes(heap))}m",
            f"-Xmx{heap}",
            *JVM_OPTIONS,
            f"-Dlog4j2.configurationFile={self.log4j_config.resolve()}",
            f"-Dkafka.logs.dir={self.process.log_file.parent}",
            *rotation,
            "-cp",
            self.classpath(),
            main_class,
            *args,
        ]

    def format_storage(self) -> bool:
        """Format the log dirs once (``StorageTool format --standalone``); False if already formatted."""
        if self.is_formatted():
            self._check_scram_users()
            return False
        self.write_config()
        scram: list[str] = []
        if self.secured:
            for principal, password in self.credentials().items():
                for mechanism in ("SCRAM-SHA-512", "SCRAM-SHA-256"):
                    scram += ["--add-scram", f"{mechanism}=[name={principal},password={password}]"]
        command = self.java_command(
            "kafka.tools.StorageTool",
            "format",
            *self._format_arguments(),
            "--ignore-formatted",
            "--cluster-id",
            self.cluster_id(),
            "--config",
            str(self.config_file),
            *scram,
            heap="256m",
        )
        result = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
        log = self.process.log_file
        log.parent.mkdir(parents=True, exist_ok=True)
        with log.open("a") as handle:
            handle.write(f"\n===== llmops formatting {self.data_dir}\n{_without_scram(result.stdout + result.stderr)}")
        if result.returncode != 0:
            raise self.process.failure(f"formatting {self.data_dir} failed (exit {result.returncode})")
        if self.secured:
            lines = [f"{principal} {_fingerprint(password)}" for principal, password in self.credentials().items()]
            self.scram_users_file.write_text("\n".join(lines) + "\n")
        return True

    def _check_scram_users(self) -> None:
        """A secured start needs every principal's SCRAM user, created only when formatting."""
        if not self.secured:
            return
        lines = self.scram_users_file.read_text().splitlines() if self.scram_users_file.is_file() else []
        formatted = dict(line.split(" ", 1) for line in lines if " " in line)
        if missing := [principal for principal in PRINCIPALS if principal not in formatted]:
            raise StackError(
                f"kafka: {self.data_dir} was formatted without the SCRAM users {', '.join(missing)} "
                "(an older plaintext broker?): stop the stack and remove "
                f"{self.state_dir} to start a secured one, or set LLMOPS_KAFKA_SECURITY_PROTOCOL=PLAINTEXT"
            )
        passwords = self.credentials()
        if changed := [
            principal for principal in PRINCIPALS if formatted[principal] != _fingerprint(passwords[principal])
        ]:
            raise StackError(
                f"kafka: the passwords of {', '.join(changed)} in {self.credentials_dir} are not those the SCRAM "
                f"users were created with (they are only created when {self.data_dir} is formatted): restore "
                f"the files, or stop the stack and remove {self.state_dir}"
            )

    def start(self) -> int:
        """Write the config, format on first use and launch the broker; returns its pid (not yet ready)."""
        host, port = self.address
        for busy in (port, self.controller_port):
            if port_open(host, busy):
                raise StackError(f"kafka: {host}:{busy} is already in use by a process llmops did not start")
        self.write_config()
        self.format_storage()
        return self.process.start(
            self.java_command("kafka.Kafka", str(self.config_file), rotating_log=True), cwd=self.state_dir
        )

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
            return run_sync(fetch_topics(self.admin_options(), timeout=timeout))
        except Exception:  # any client error means "not answering yet"
            return None

    def stop(self, timeout: float = 30.0) -> bool:
        """Controlled shutdown (SIGTERM), forced after ``timeout`` s; False if it was not running."""
        return self.process.stop(timeout)


def _without_scram(output: str) -> str:
    """StorageTool's output minus the SCRAM records it echoes (salts and keys stay out of the log)."""
    return (
        "\n".join(
            "Bootstrap metadata: (SCRAM credential records omitted)" if "UserScramCredentialRecord" in line else line
            for line in output.splitlines()
        )
        + "\n"
    )


def _fingerprint(password: str) -> str:
    """What ``scram-users`` keeps of a password: enough to notice a changed file, useless to log in."""
    return hashlib.sha256(password.encode()).hexdigest()[:16]


def _megabytes(size: str) -> int:
    """``512m``/``1g``/``1024k`` in MiB (JVM heap notation)."""
    unit = size[-1].lower()
    number = int(size[:-1]) if unit in "kmg" else int(size) // (1024 * 1024)
    return {"k": number // 1024, "m": number, "g": number * 1024}.get(unit, number)

"""Kafka and Triton as stack components: something ``up`` starts, ``down`` stops and ``status`` asks,
plus :func:`running` (a component up for the duration of a block) for tests and benchmarks.

The platform's services join these in the CLI's stack (``llmops stack up``); nothing here names a service.
A component found answering on its ports without a pid file of ours (a broker someone else runs, or
the production endpoints) counts as *external*: ``ensure_up`` uses it and ``stop`` leaves it alone.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from llmops_config import PlatformSettings
from llmops_events.topics import TopicSpec, platform_topics

from .acls import acl_bindings, ensure_acls
from .cluster import KafkaCluster
from .kafka import KafkaBroker
from .processes import NullProgress, Progress, StackError, run_sync
from .topics import TopicsReport, ensure_topics
from .triton import TritonServer


@dataclass(frozen=True, slots=True)
class ComponentStatus:
    """One line of ``llmops stack status``."""

    name: str
    healthy: bool
    detail: str


class Component(Protocol):
    """Something ``up`` starts and ``down`` stops."""

    name: str

    def preflight(self) -> None:
        """Raise StackError if the component cannot start (missing build output); starts nothing."""
        ...

    def ensure_up(self, progress: Progress) -> str:
        """Start unless already running and healthy; wait until healthy; return a one-line summary."""
        ...

    def stop(self) -> bool:
        """Stop what ``ensure_up`` started (pid file); False if nothing of ours was running."""
        ...

    def status(self) -> ComponentStatus:
        """Process and live health."""
        ...


@dataclass
class KafkaComponent:
    """The embedded broker plus the platform's topics and, when secured, the ACLs of ``llmops_stack.acls``.

    ``replication_factor``/``min_insync_replicas`` default to the settings (``LLMOPS_KAFKA_*``); an
    external broker (not started here) with replication factor 1 is refused unless
    ``LLMOPS_KAFKA_ALLOW_SINGLE_REPLICA=true``: one lost broker would lose the platform's state."""

    broker: KafkaBroker | KafkaCluster
    """One broker, or the embedded cluster (``kafka_component`` picks by ``LLMOPS_KAFKA_CLUSTER_SIZE``)."""
    topics: Sequence[TopicSpec] | None = None
    """The topics to create; default: the platform's (``platform_topics``, audit retention from settings)."""
    replication_factor: int | None = None
    min_insync_replicas: int | None = None
    ready_timeout: float = 90.0
    stop_timeout: float = 30.0
    name: str = "kafka"

    @property
    def bootstrap(self) -> str:
        return self.broker.bootstrap

    def client_environment(self) -> dict[str, str]:
        """What a service started beside this Kafka needs to reach it: every node's address (a
        service that starts while the first node is down still connects) and the replication the
        topics were created with."""
        return {
            "LLMOPS_KAFKA_BOOTSTRAP_SERVERS": self.bootstrap,
            "LLMOPS_KAFKA_CLUSTER_SIZE": str(self.broker.size if isinstance(self.broker, KafkaCluster) else 1),
            "LLMOPS_KAFKA_REPLICATION_FACTOR": str(self._replication_factor),
            "LLMOPS_KAFKA_MIN_INSYNC_REPLICAS": str(self._min_insync_replicas),
        }

    def preflight(self) -> None:
        self.broker.preflight()

    def ensure_up(self, progress: Progress) -> str:
        note = self._ensure_broker(progress)
        kafka = self.broker.settings.kafka
        ours = self.broker.is_running()
        if not ours and self._replication_factor == 1 and not kafka.allow_single_replica:
            raise StackError(
                f"kafka: {note}: refusing to create topics with replication factor 1 on a cluster "
                "(set LLMOPS_KAFKA_REPLICATION_FACTOR=3 and LLMOPS_KAFKA_MIN_INSYNC_REPLICAS=2, or "
                "LLMOPS_KAFKA_ALLOW_SINGLE_REPLICA=true for a single-broker test cluster)"
            )
        if ours and self.broker.secured:
            run_sync(ensure_acls(self.broker.admin_options(), acl_bindings()))
        report = self.create_topics()
        for line in report.drift:
            progress.step(f"kafka: topic drift (left as is): {line}")
        created = f", created {len(report.created)} topics" if report.created else ""
        return f"{note}{created}"

    def _ensure_broker(self, progress: Progress) -> str:
        if self.broker.is_running():
            if isinstance(self.broker, KafkaCluster) and len(self.broker.running_nodes()) < len(self.broker.nodes):
                progress.step(f"kafka: starting the cluster's stopped nodes ({self.bootstrap})")
                self.broker.start()
            self.broker.wait_ready(self.ready_timeout, progress)
            return f"already running at {self.bootstrap}"
        if self.broker.topics() is not None:
            return f"external broker at {self.bootstrap} (not started by llmops)"
        progress.step(f"kafka: starting KRaft broker on {self.bootstrap} (log {self.broker.log_file})")
        started = time.monotonic()
        self.broker.start()
        self.broker.wait_ready(self.ready_timeout, progress)
        return f"ready at {self.bootstrap} in {time.monotonic() - started:.1f}s"

    @property
    def _replication_factor(self) -> int:
        if self.replication_factor:
            return self.replication_factor
        # The embedded cluster replicates on every node unless the settings ask for more.
        size = len(self.broker.nodes) if isinstance(self.broker, KafkaCluster) else 1
        return max(size, self.broker.settings.kafka.replication_factor)

    @property
    def _min_insync_replicas(self) -> int:
        if self.min_insync_replicas:
            return self.min_insync_replicas
        size = len(self.broker.nodes) if isinstance(self.broker, KafkaCluster) else 1
        return max(size - 1, self.broker.settings.kafka.min_insync_replicas)

    @property
    def topic_specs(self) -> Sequence[TopicSpec]:
        if self.topics is not None:
            return self.topics
        return platform_topics(audit_retention_ms=self.broker.settings.audit_retention_ms)

    def create_topics(self) -> TopicsReport:
        """Create the missing platform topics (idempotent), as the stack's admin principal."""
        return run_sync(
            ensure_topics(
                self.broker.admin_options(),
                self.topic_specs,
                replication_factor=self._replication_factor,
                min_insync_replicas=self._min_insync_replicas,
            )
        )

    def stop(self) -> bool:
        return self.broker.stop(self.stop_timeout)

    def status(self) -> ComponentStatus:
        ours = self.broker.is_running()
        topics = self.broker.topics()
        if topics is None:
            why = "not answering" if ours else not_running(self.broker.pid_file)
            return ComponentStatus(self.name, False, f"{self.bootstrap} {why}")
        user_topics = [name for name in topics if not name.startswith("__")]
        wire = self.broker.admin_options()
        missing = [wire.topic(spec.name) for spec in self.topic_specs if wire.topic(spec.name) not in topics]
        security = self.broker.settings.kafka.security_protocol
        detail = f"{self.bootstrap} ({len(user_topics)} topics, {security})" + ("" if ours else " external")
        if missing:
            return ComponentStatus(self.name, False, f"{detail}; missing topics: {', '.join(missing)}")
        return ComponentStatus(self.name, True, detail)


def kafka_component(settings: PlatformSettings, libs_dir: Path, log4j_config: Path) -> KafkaComponent:
    """The embedded Kafka of ``settings``: one broker, or a cluster of ``LLMOPS_KAFKA_CLUSTER_SIZE``
    nodes. With the size unset, a cluster ``make up CLUSTER=3`` left running (its first node's pid
    file) is the one meant, so ``make status``/``make down`` need no ``CLUSTER=``."""
    kafka = settings.kafka
    size = kafka.cluster_size
    if size == 1 and "cluster_size" not in kafka.model_fields_set:
        try:
            if KafkaCluster(settings, libs_dir, log4j_config, size=3).process.record() is not None:
                size = 3
        except StackError:
            pass  # bootstrap servers that cannot describe a cluster of 3: none was started
    if size == 1:
        return KafkaComponent(KafkaBroker(settings, libs_dir, log4j_config))
    return KafkaComponent(KafkaCluster(settings, libs_dir, log4j_config, size=size), ready_timeout=180.0)


@dataclass
class TritonComponent:
    """The Triton Inference Server (explicit model control)."""

    server: TritonServer
    ready_timeout: float = 60.0
    stop_timeout: float = 30.0
    name: str = "triton"

    @property
    def endpoint(self) -> str:
        s = self.server.settings
        return f"{s.triton_host}:{s.triton_http_port}/{s.triton_grpc_port}"

    def preflight(self) -> None:
        self.server.preflight()

    def ensure_up(self, progress: Progress) -> str:
        if self.server.process.is_running():
            self.server.wait_ready(self.ready_timeout, progress)
            return f"already running at {self.endpoint}"
        if self.server.is_ready():
            return f"external server at {self.endpoint} (not started by llmops)"
        progress.step(f"triton: starting tritonserver on {self.endpoint} (log {self.server.process.log_file})")
        started = time.monotonic()
        self.server.start()
        self.server.wait_ready(self.ready_timeout, progress)
        return f"ready at {self.endpoint} in {time.monotonic() - started:.1f}s"

    def stop(self) -> bool:
        stopped = self.server.stop(self.stop_timeout)
        # Wait until the endpoint is really closed, so a start right after (restart, `make up`)
        # cannot mistake the old server, still shutting down, for the new one being ready.
        deadline = time.monotonic() + self.stop_timeout
        while self.server.is_ready(timeout=0.5) and time.monotonic() < deadline:
            time.sleep(0.2)
        return stopped

    def status(self) -> ComponentStatus:
        ours = self.server.process.is_running()
        if not self.server.is_ready():
            why = "not ready" if ours else not_running(self.server.process.pid_file)
            return ComponentStatus(self.name, False, f"{self.endpoint} {why}")
        models = self.server.loaded_models()
        return ComponentStatus(self.name, True, f"{self.endpoint} ({_models(models)})" + ("" if ours else " external"))


@contextmanager
def running(component: Component, progress: Progress | None = None) -> Iterator[Component]:
    """``component`` up for the duration of the block, stopped after it (tests, benchmarks)."""
    component.preflight()
    try:
        component.ensure_up(progress or NullProgress())
        yield component
    finally:
        component.stop()


def _models(names: list[str] | None) -> str:
    if names is None:
        return "models unknown"
    if not names:
        return "no models loaded"
    shown = ", ".join(names[:5]) + (", …" if len(names) > 5 else "")
    return f"{len(names)} model{'s' if len(names) != 1 else ''} loaded: {shown}"


def not_running(pid_file: Path) -> str:
    """Why a component whose pid file is ``pid_file`` is down, in a few words."""
    # A pid file without its process means it died (or was killed) instead of being stopped by `down`.
    return "not running (no pid file)" if not pid_file.exists() else f"not running (stale {pid_file.name}; see logs)"

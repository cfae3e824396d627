"""The embedded three-broker cluster: N KRaft nodes (each a combined broker+controller, one controller
quorum of all N) on this machine, for ``make up CLUSTER=3`` (``LLMOPS_KAFKA_CLUSTER_SIZE=3``) and the
reliability tests that kill a broker.

Node ``i`` (1-based) listens for clients on the ``i``-th address of ``kafka_bootstrap_servers`` when
that lists N of them, else on ``port + 2(i-1)`` of the first (9092, 9094, 9096), and for its
controller on ``kafka_controller_port + 2(i-1)`` (9093, 9095, 9097) unless ``controller_ports`` are
given. Its state lives under ``<var_dir>/kafka-cluster/node-<i>`` (config, log dirs), its pid file and
log are ``kafka-<i>``. All nodes share the cluster id, the credentials and the security of the single
broker (SASL/SCRAM + ACLs by default, plaintext in the test session). Internal topics get replication
factor N and ``min.insync.replicas`` N-1 (3 and 2), so one node may die without losing a write.
The JVMs start in parallel, each with the single broker's small heap.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path

from llmops_config import PlatformSettings
from llmops_config.kafka import KafkaClientOptions

from .kafka import KafkaBroker, parse_address
from .processes import ManagedProcess, NullProgress, Progress, StackError


@dataclass
class ClusterNode(KafkaBroker):
    """One node of :class:`KafkaCluster`: a broker with its own ports and state, voting in the shared quorum."""

    client_address: tuple[str, int] = ("127.0.0.1", 9092)
    controller_address: tuple[str, int] = ("127.0.0.1", 9093)
    voters: tuple[tuple[int, str, int], ...] = ()
    """``(node id, host, controller port)`` of every node of the quorum."""
    shared_cluster_id: Path = field(default_factory=Path)

    @property
    def state_dir(self) -> Path:
        return Path(self.settings.var_dir).resolve() / "kafka-cluster" / f"node-{self.node_id}"

    @property
    def cluster_id_file(self) -> Path:
        # One id for all nodes: a node formatted with another id would never join the quorum.
        return self.shared_cluster_id

    @property
    def address(self) -> tuple[str, int]:
        return self.client_address

    @property
    def controller_port(self) -> int:
        return self.controller_address[1]

    def _extra_properties(self) -> dict[str, str]:
        size = len(self.voters)
        replicas, min_isr = str(size), str(max(1, size - 1))
        return {
            # A static quorum of every node: formatted without --standalone, no dynamic voter changes.
            "controller.quorum.voters": ",".join(f"{node}@{host}:{port}" for node, host, port in self.voters),
            "controller.quorum.bootstrap.servers": "",
            "offsets.topic.replication.factor": replicas,
            "transaction.state.log.replication.factor": replicas,
            "transaction.state.log.min.isr": min_isr,
            "share.coordinator.state.topic.replication.factor": replicas,
            "share.coordinator.state.topic.min.isr": min_isr,
            "default.replication.factor": replicas,
            "min.insync.replicas": min_isr,
            # Three JVMs starting together on a busy 2-core machine can take minutes to elect a
            # controller: a node waits for that (default 60 s, then it gives up and exits), and the
            # quorum tolerates slow peers (defaults 2 s / 1 s elect again and again under load).
            "initial.broker.registration.timeout.ms": "600000",
            "controller.quorum.fetch.timeout.ms": "10000",
            "controller.quorum.election.timeout.ms": "5000",
        }

    def properties(self) -> dict[str, str]:
        properties = super().properties()
        if not properties.get("controller.quorum.bootstrap.servers"):
            properties.pop("controller.quorum.bootstrap.servers", None)
        return properties

    def _format_arguments(self) -> list[str]:
        return []  # the static quorum comes from controller.quorum.voters


@dataclass
class KafkaCluster:
    """N :class:`ClusterNode` s started, waited for and stopped together."""

    settings: PlatformSettings
    libs_dir: Path
    log4j_config: Path
    size: int = 3
    heap: str = "384m"
    controller_ports: Sequence[int] | None = None
    nodes: list[ClusterNode] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if self.size < 1:
            raise StackError(f"kafka: a cluster needs at least one node, not {self.size}")
        clients = self.client_addresses()
        controllers = self._controller_addresses(clients)
        voters = tuple((index + 1, host, port) for index, (host, port) in enumerate(controllers))
        cluster_id = Path(self.settings.var_dir).resolve() / "kafka-cluster" / "cluster.id"
        self.nodes = [
            ClusterNode(
                self.settings,
                self.libs_dir,
                self.log4j_config,
                heap=self.heap,
                node_id=index + 1,
                name=f"kafka-{index + 1}",
                client_address=clients[index],
                controller_address=controllers[index],
                voters=voters,
                shared_cluster_id=cluster_id,
            )
            for index in range(self.size)
        ]

    def client_addresses(self) -> list[tuple[str, int]]:
        servers = [server.strip() for server in self.settings.kafka_bootstrap_servers.split(",") if server.strip()]
        if len(servers) == self.size:
            return [parse_address(server) for server in servers]
        if len(servers) != 1:
            raise StackError(
                f"kafka: LLMOPS_KAFKA_BOOTSTRAP_SERVERS lists {len(servers)} addresses for a cluster of {self.size}: "
                f"give one (the others follow on every second port) or {self.size}"
            )
        host, port = parse_address(servers[0])
        return [(host, port + 2 * index) for index in range(self.size)]

    def _controller_addresses(self, clients: list[tuple[str, int]]) -> list[tuple[str, int]]:
        if self.controller_ports is not None:
            if len(self.controller_ports) != self.size:
                raise StackError(f"kafka: {len(self.controller_ports)} controller ports for {self.size} nodes")
            ports = list(self.controller_ports)
        else:
            ports = [self.settings.kafka_controller_port + 2 * index for index in range(self.size)]
        taken = {port for _, port in clients} & set(ports)
        if taken:
            raise StackError(f"kafka: ports {sorted(taken)} are both a client and a controller port")
        return [(host, port) for (host, _), port in zip(clients, ports, strict=True)]

    # -- what KafkaComponent asks of a broker ---------------------------------------------------------
    @property
    def bootstrap(self) -> str:
        """Every node's client address: a client that starts while one node is down still connects."""
        return ",".join(node.bootstrap for node in self.nodes)

    @property
    def secured(self) -> bool:
        return self.nodes[0].secured

    @property
    def process(self) -> ManagedProcess:
        """The first node's process (what ``status`` shows of a slow start)."""
        return self.nodes[0].process

    @property
    def log_file(self) -> Path:
        return self.nodes[0].log_file

    @property
    def pid_file(self) -> Path:
        return self.nodes[0].pid_file

    def admin_options(self) -> KafkaClientOptions:
        return replace(self.nodes[0].admin_options(), bootstrap_servers=self.bootstrap)

    def node(self, node_id: int) -> ClusterNode:
        return self.nodes[node_id - 1]

    def is_running(self) -> bool:
        """Whether any node started by llmops is alive (``down`` must stop what is left)."""
        return any(node.is_running() for node in self.nodes)

    def running_nodes(self) -> list[ClusterNode]:
        return [node for node in self.nodes if node.is_running()]

    def preflight(self) -> None:
        self.nodes[0].preflight()

    def start(self) -> list[int]:
        """Write every node's config, format the log dirs on first use and launch the JVMs not
        already running, in parallel; returns their pids (not yet ready)."""
        pending = [node for node in self.nodes if not node.is_running()]
        self.nodes[0].cluster_id()  # generated once, before the nodes format in parallel
        with ThreadPoolExecutor(max(1, len(pending))) as pool:
            return list(pool.map(lambda node: node.start(), pending))

    def wait_ready(self, timeout: float = 120.0, progress: Progress | None = None) -> float:
        """Block until every node answers a metadata request listing all nodes' topics."""
        progress = progress or NullProgress()
        started = time.monotonic()
        for node in self.nodes:
            left = max(1.0, timeout - (time.monotonic() - started))
            node.wait_ready(left, progress)
        return time.monotonic() - started

    def topics(self, timeout: float = 5.0) -> list[str] | None:
        """The cluster's topics, asked of the first node that answers; None if none does."""
        for node in self.nodes:
            if (topics := node.topics(timeout=timeout)) is not None:
                return topics
        return None

    def stop(self, timeout: float = 30.0) -> bool:
        """Controlled shutdown of every node at once; False if none was running."""
        with ThreadPoolExecutor(len(self.nodes)) as pool:
            return any(list(pool.map(lambda node: node.stop(timeout), self.nodes)))

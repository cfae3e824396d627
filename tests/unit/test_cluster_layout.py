"""The embedded cluster's layout (ports, quorum, replication) and how ``kafka_component`` picks it: pure logic,
nothing started (the cluster itself runs in tests/integration/test_cluster_kill.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from llmops_config import PlatformSettings
from llmops_config.kafka import KafkaSettings
from llmops_stack import KafkaBroker, KafkaCluster, StackError, kafka_component


def _settings(tmp_path: Path, servers: str = "127.0.0.1:9092", **kafka: object) -> PlatformSettings:
    return PlatformSettings(
        kafka_bootstrap_servers=servers,
        kafka_controller_port=9093,
        var_dir=tmp_path,
        kafka=KafkaSettings(security_protocol="PLAINTEXT", **kafka),  # type: ignore[arg-type]
    )


def test_nodes_take_every_second_port_of_one_address(tmp_path: Path) -> None:
    cluster = KafkaCluster(_settings(tmp_path), tmp_path, tmp_path / "log4j2.yaml")
    assert cluster.bootstrap == "127.0.0.1:9092,127.0.0.1:9094,127.0.0.1:9096"
    assert [node.controller_port for node in cluster.nodes] == [9093, 9095, 9097]
    assert [node.name for node in cluster.nodes] == ["kafka-1", "kafka-2", "kafka-3"]
    assert len({node.state_dir for node in cluster.nodes}) == 3
    assert len({node.cluster_id_file for node in cluster.nodes}) == 1


def test_listed_addresses_are_used_as_given(tmp_path: Path) -> None:
    settings = _settings(tmp_path, "127.0.0.1:7001,127.0.0.1:7002,127.0.0.1:7003")
    cluster = KafkaCluster(settings, tmp_path, tmp_path / "log4j2.yaml", controller_ports=[7101, 7102, 7103])
    properties = cluster.node(2).properties()
    assert properties["node.id"] == "2"
    assert properties["listeners"] == "PLAINTEXT://127.0.0.1:7002,CONTROLLER://127.0.0.1:7102"
    assert properties["controller.quorum.voters"] == "1@127.0.0.1:7101,2@127.0.0.1:7102,3@127.0.0.1:7103"
    assert "controller.quorum.bootstrap.servers" not in properties
    # Internal topics survive one node: replication 3, two in sync for a write.
    assert properties["offsets.topic.replication.factor"] == "3"
    assert properties["transaction.state.log.min.isr"] == "2"
    assert properties["min.insync.replicas"] == "2"


def test_inconsistent_addresses_are_refused(tmp_path: Path) -> None:
    with pytest.raises(StackError, match="lists 2 addresses"):
        KafkaCluster(_settings(tmp_path, "127.0.0.1:7001,127.0.0.1:7002"), tmp_path, tmp_path)
    with pytest.raises(StackError, match="both a client and a controller port"):
        KafkaCluster(_settings(tmp_path), tmp_path, tmp_path, controller_ports=[9094, 9200, 9201])


def test_component_replicates_on_every_node(tmp_path: Path) -> None:
    cluster = kafka_component(_settings(tmp_path, cluster_size=3), tmp_path, tmp_path)
    assert isinstance(cluster.broker, KafkaCluster)
    assert (cluster._replication_factor, cluster._min_insync_replicas) == (3, 2)
    single = kafka_component(_settings(tmp_path), tmp_path, tmp_path)
    assert isinstance(single.broker, KafkaBroker)
    assert (single._replication_factor, single._min_insync_replicas) == (1, 1)


def test_status_finds_a_cluster_make_up_started(tmp_path: Path) -> None:
    """``make status`` without CLUSTER=3 finds the cluster by its first node's pid file."""
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "kafka-1.pid").write_text('{"pid": 1, "argv": ["java"], "started_at": 0}')
    assert isinstance(kafka_component(_settings(tmp_path), tmp_path, tmp_path).broker, KafkaCluster)
    # An explicit size wins.
    assert isinstance(kafka_component(_settings(tmp_path, cluster_size=1), tmp_path, tmp_path).broker, KafkaBroker)


def test_topic_prefix_is_applied_once(tmp_path: Path) -> None:
    from llmops_config.kafka import kafka_client_options
    from llmops_events.topics import RECORDS_RAW, prefixed, unprefixed

    options = kafka_client_options(_settings(tmp_path, topic_prefix="team-a."), service="ingestion")
    assert options.topic(RECORDS_RAW) == "team-a.llmops.records.raw.v1"
    # A wire name read back from a message (a DLQ header) is not prefixed twice.
    assert options.topic(options.topic(RECORDS_RAW)) == options.topic(RECORDS_RAW)
    assert unprefixed(options.topic(RECORDS_RAW), "team-a.") == RECORDS_RAW
    assert prefixed(RECORDS_RAW, "") == RECORDS_RAW
    assert kafka_client_options(_settings(tmp_path), service="ingestion").topic(RECORDS_RAW) == RECORDS_RAW
    with pytest.raises(ValueError, match="topic_prefix"):
        KafkaSettings(topic_prefix="no spaces")


def test_services_get_every_nodes_address(tmp_path: Path) -> None:
    """``make up CLUSTER=3`` starts the services with all three addresses, not only the first
    node's (a service started while node 1 is down would otherwise not connect)."""
    from llmops_cli.stack import ServiceComponent, components

    stack = components(_settings(tmp_path, cluster_size=3))
    services = [component for component in stack if isinstance(component, ServiceComponent)]
    assert services, "no service is installed"
    for service in services:
        assert service.environment == {
            "LLMOPS_KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:9092,127.0.0.1:9094,127.0.0.1:9096",
            "LLMOPS_KAFKA_CLUSTER_SIZE": "3",
            "LLMOPS_KAFKA_REPLICATION_FACTOR": "3",
            "LLMOPS_KAFKA_MIN_INSYNC_REPLICAS": "2",
        }
    single = [c for c in components(_settings(tmp_path)) if isinstance(c, ServiceComponent)]
    assert single[0].environment["LLMOPS_KAFKA_BOOTSTRAP_SERVERS"] == "127.0.0.1:9092"
    assert single[0].environment["LLMOPS_KAFKA_REPLICATION_FACTOR"] == "1"

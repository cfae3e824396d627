"""The Kafka client options builder, the ACL table and the secured embedded broker's configuration
(pure logic: no broker; the broker itself is tried in tests/integration/test_kafka_security.py)."""

from __future__ import annotations

import re
import stat
from pathlib import Path

import pytest

import llmops_events.topics as topics
from llmops_config import PlatformSettings
from llmops_config.kafka import (
    PRINCIPALS,
    SERVICE_PRINCIPALS,
    KafkaConfigurationError,
    KafkaSettings,
    kafka_client_options,
    kafka_environment,
    principal_for,
)
from llmops_stack import KafkaBroker, StackError
from llmops_stack.acls import ACCESS, Operation, ResourceType, acl_bindings

ROOT = Path(__file__).resolve().parents[2]
SERVICES = ("ingestion", "fine_tuning", "evaluation", "deployment", "gateway", "monitoring")


def _settings(tmp_path: Path, **kafka: object) -> PlatformSettings:
    return PlatformSettings(var_dir=tmp_path, kafka=KafkaSettings(**kafka))  # type: ignore[arg-type]


def test_plaintext_options_carry_no_credentials(tmp_path: Path) -> None:
    options = kafka_client_options(_settings(tmp_path, security_protocol="PLAINTEXT"), service="gateway")
    assert options.aiokafka() == {
        "bootstrap_servers": "127.0.0.1:9092",
        "client_id": "llmops-gateway",
        "security_protocol": "PLAINTEXT",
    }
    assert options.kcat() == [
        "-b",
        "127.0.0.1:9092",
        "-X",
        "client.id=llmops-gateway",
        "-X",
        "security.protocol=plaintext",
    ]


def test_scram_options_read_the_service_principals_password(tmp_path: Path) -> None:
    folder = tmp_path / "kafka" / "credentials"
    folder.mkdir(parents=True)
    (folder / "fine_tuning").write_text("s3cret\n")
    settings = _settings(tmp_path, security_protocol="SASL_PLAINTEXT")
    options = kafka_client_options(settings, service="fine-tuning")
    assert options.aiokafka()["sasl_plain_username"] == "fine_tuning"
    assert options.aiokafka()["sasl_plain_password"] == "s3cret"
    assert options.aiokafka()["sasl_mechanism"] == "SCRAM-SHA-512"
    assert "s3cret" not in repr(options)
    assert "sasl.password=s3cret" in options.kcat()


def test_a_configured_user_and_password_win(tmp_path: Path) -> None:
    settings = _settings(tmp_path, security_protocol="SASL_SSL", sasl_username="svc-a", sasl_password="pw")
    options = kafka_client_options(settings, service="gateway")
    assert (options.username, options.password) == ("svc-a", "pw")
    assert options.aiokafka()["ssl_context"] is not None


def test_a_missing_password_file_says_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(KafkaConfigurationError, match="make up"):
        kafka_client_options(_settings(tmp_path, security_protocol="SASL_PLAINTEXT"), service="gateway")


def test_plain_over_an_unencrypted_listener_is_refused_off_loopback(tmp_path: Path) -> None:
    settings = _settings(tmp_path, security_protocol="SASL_PLAINTEXT", sasl_mechanism="PLAIN", sasl_password="x")
    assert kafka_client_options(settings, service="gateway").sasl_mechanism == "PLAIN"  # 127.0.0.1: the embedded broker
    remote = settings.model_copy(update={"kafka_bootstrap_servers": "kafka-0.example:9092,127.0.0.1:9092"})
    with pytest.raises(KafkaConfigurationError, match="SASL_SSL"):
        kafka_client_options(remote, service="gateway")


def test_clients_map_to_one_principal_per_service() -> None:
    assert {principal_for(name) for name in SERVICE_PRINCIPALS} == set(SERVICES)
    assert principal_for("cli") == principal_for("demo") == principal_for("dlq-replay") == "operator"
    assert principal_for("stack") == "admin"


def test_a_child_process_environment_reproduces_the_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = _settings(tmp_path, security_protocol="SASL_PLAINTEXT", replication_factor=3, min_insync_replicas=2)
    for name, value in kafka_environment(settings).items():
        monkeypatch.setenv(name, value)
    child = PlatformSettings(var_dir=tmp_path / "elsewhere")
    assert child.kafka.security_protocol == "SASL_PLAINTEXT"
    assert (child.kafka.replication_factor, child.kafka.min_insync_replicas) == (3, 2)
    assert child.kafka.credentials_dir == (tmp_path / "kafka" / "credentials").resolve()


# -- the ACL table -----------------------------------------------------------------------------------


def _writers(topic: str) -> set[str]:
    return {principal for principal, access in ACCESS.items() if topic in access.writes}


def test_only_the_deployment_service_writes_deployments() -> None:
    assert _writers(topics.DEPLOYMENTS) == {"deployment"}


def test_the_gateway_writes_only_inference_and_feedback_besides_dlq_and_audit() -> None:
    assert ACCESS["gateway"].writes == {topics.INFERENCE, topics.FEEDBACK, topics.RECORDS_DLQ, topics.AUDIT}


def test_only_operators_request_erasures() -> None:
    assert _writers(topics.PRIVACY) == {"operator"}


def test_every_principal_may_dead_letter_and_audit() -> None:
    assert set(ACCESS) == {*SERVICES, "operator"}
    assert _writers(topics.RECORDS_DLQ) == _writers(topics.AUDIT) == set(ACCESS)


def test_every_service_reads_what_it_subscribes_to() -> None:
    """The table is checked against the subscriptions in each service's composition root (the
    gateway subscribes to nothing: it only follows the deployments topic)."""
    checked = set()
    for service in SERVICES:
        source = (ROOT / "services" / service / "src" / f"llmops_{service}" / "main.py").read_text()
        calls = re.findall(r"subscribe\(\s*broker,\s*consumer,\s*([A-Z_,\s]+?)(?:,\s*(?:on_outcome|\*\*)|\))", source)
        if calls:
            checked.add(service)
        subscribed = {getattr(topics, name.strip()) for call in calls for name in call.split(",") if name.strip()}
        assert subscribed <= ACCESS[service].reads, (service, subscribed - ACCESS[service].reads)
    assert checked == set(SERVICES) - {"gateway"}


def test_bindings_grant_group_prefixes_and_topic_operations() -> None:
    bindings = acl_bindings()
    assert any(
        b.principal == "ingestion" and b.resource_type is ResourceType.GROUP and b.resource_name == "ingestion"
        for b in bindings
    )
    assert not any(
        b.principal != "deployment" and b.resource_name == topics.DEPLOYMENTS and b.operation is Operation.WRITE
        for b in bindings
    )


# -- the secured embedded broker ---------------------------------------------------------------------


def test_the_secured_broker_authenticates_authorizes_and_keeps_passwords_private(tmp_path: Path) -> None:
    broker = KafkaBroker(_settings(tmp_path, security_protocol="SASL_PLAINTEXT"), tmp_path, tmp_path / "log4j2")
    properties = broker.properties()
    assert properties["authorizer.class.name"].endswith("StandardAuthorizer")
    assert properties["allow.everyone.if.no.acl.found"] == "false"
    assert properties["super.users"] == "User:broker;User:admin"
    assert "PLAINTEXT:" not in properties["listener.security.protocol.map"]
    assert set(broker.credentials()) == set(PRINCIPALS)
    for path in [*broker.credentials_dir.iterdir(), broker.write_config()]:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path


def test_a_secured_start_refuses_log_dirs_formatted_without_or_with_other_scram_users(tmp_path: Path) -> None:
    broker = KafkaBroker(_settings(tmp_path, security_protocol="SASL_PLAINTEXT"), tmp_path, tmp_path / "log4j2")
    broker.data_dir.mkdir(parents=True)
    (broker.data_dir / "meta.properties").write_text("cluster.id=x\n")  # formatted by a plaintext broker
    with pytest.raises(StackError, match="formatted without the SCRAM users"):
        broker.format_storage()
    broker.scram_users_file.write_text("".join(f"{principal} 0000\n" for principal in PRINCIPALS))
    with pytest.raises(StackError, match="are not those the SCRAM users were created with"):
        broker.format_storage()

"""Kafka security on a real broker secured as ``make up`` runs it (SASL/SCRAM-SHA-512, the ACL table
of ``llmops_stack.acls``), tried from real outside clients: aiokafka and kcat.

The issue's attack: a forged ``llmops.deployment.promoted.v1`` written with kcat onto the
deployments topic made every ``Predict`` fail and, after a restart, became the champion. Here
the broker refuses it unless it comes from the deployment service's own principal.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import uuid
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.errors import GroupAuthorizationFailedError, KafkaError, TopicAuthorizationFailedError

from llmops_config import PlatformSettings
from llmops_config.kafka import KafkaClientOptions, kafka_client_options
from llmops_events import KafkaRecord
from llmops_events.topics import DEPLOYMENTS, FEEDBACK, INFERENCE, RECORDS_DLQ, RECORDS_RAW, TRAINING
from llmops_messaging import EventPublisher
from llmops_serving import DeploymentFeed
from llmops_stack import KafkaBroker, KafkaComponent, NullProgress, StackError, repo_paths
from tests.bus_readback import count_on_topic

pytestmark = pytest.mark.integration

needs_kcat = pytest.mark.skipif(shutil.which("kcat") is None, reason="kcat is not installed (apt-get install kcat)")


def _as(settings: PlatformSettings, principal: str) -> KafkaClientOptions:
    return kafka_client_options(settings, service=f"test-{principal}", principal=principal)


async def _messages_on(settings: PlatformSettings, topic: str) -> int:
    """End offsets summed over ``topic``'s partitions, read as admin."""
    return await count_on_topic(_as(settings, "admin"), topic)


async def _produce(options: KafkaClientOptions, topic: str) -> None:
    producer = AIOKafkaProducer(**options.aiokafka(), acks="all", enable_idempotence=True, request_timeout_ms=10_000)
    await producer.start()
    try:
        await producer.send_and_wait(topic, b"{}", key=b"test")
    finally:
        await producer.stop()


def _forged_promotion() -> str:
    """The issue's forged event: a promotion of a version that does not exist."""
    return json.dumps(
        {
            "specversion": "1.0",
            "id": uuid.uuid4().hex,
            "source": "/attacker",
            "type": "llmops.deployment.promoted.v1",
            "data": {"model_name": "intents", "model_version": 999},
        }
    )


def _kcat_produce(options: KafkaClientOptions, topic: str, document: str) -> subprocess.CompletedProcess[str]:
    # PLAIN: Debian's kcat links librdkafka 2.0, whose SCRAM Kafka 4 rejects (fixed in librdkafka 2.6.1);
    # the embedded broker offers PLAIN on its loopback listener for such clients, with the same users.
    return subprocess.run(
        ["kcat", *options.kcat(sasl_mechanism="PLAIN"), "-P", "-t", topic, "-k", "intents", "-m", "10"],
        input=document,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


async def test_a_principal_cannot_write_a_topic_outside_its_acls(secured_kafka_settings: PlatformSettings) -> None:
    settings = secured_kafka_settings
    before = await _messages_on(settings, DEPLOYMENTS)
    # Ingestion may not write deployments; the gateway only inference and feedback (and DLQ/audit).
    for principal, topic in (("ingestion", DEPLOYMENTS), ("gateway", DEPLOYMENTS), ("gateway", TRAINING)):
        with pytest.raises(TopicAuthorizationFailedError):
            await _produce(_as(settings, principal), topic)
    assert await _messages_on(settings, DEPLOYMENTS) == before


async def test_each_service_principal_does_its_real_job(secured_kafka_settings: PlatformSettings) -> None:
    settings = secured_kafka_settings
    # The gateway logs inference and feedback through the platform's own publisher, as its principal.
    inference_before = await _messages_on(settings, INFERENCE)
    feedback_before = await _messages_on(settings, FEEDBACK)
    async with EventPublisher(settings, service="gateway") as publisher:
        for topic in (INFERENCE, FEEDBACK, RECORDS_DLQ):
            await publisher.publish_record(topic, KafkaRecord(b"r", b"{}", ()))
    assert await _messages_on(settings, INFERENCE) == inference_before + 1
    assert await _messages_on(settings, FEEDBACK) == feedback_before + 1

    # ...and follows the deployments topic to route (READ, no group).
    feed = DeploymentFeed(settings, client_id="gateway")
    await feed.start(follow=False)

    # Ingestion consumes raw records in its own consumer group.
    await _produce(_as(settings, "operator"), RECORDS_RAW)
    consumer = AIOKafkaConsumer(
        RECORDS_RAW,
        **kafka_client_options(settings, service="ingestion").aiokafka(),
        group_id=f"ingestion-test-{uuid.uuid4().hex[:8]}",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    try:
        async with asyncio.timeout(30):
            while not any((await consumer.getmany(timeout_ms=500)).values()):
                pass
        await consumer.commit()
    finally:
        await consumer.stop()


async def test_a_consumer_group_of_another_service_is_refused(secured_kafka_settings: PlatformSettings) -> None:
    # The gateway may read deployments, but not as a member of ingestion's consumer group.
    consumer = AIOKafkaConsumer(
        DEPLOYMENTS,
        **kafka_client_options(secured_kafka_settings, service="gateway").aiokafka(),
        group_id=f"ingestion-{uuid.uuid4().hex[:8]}",
        auto_offset_reset="earliest",
    )
    try:
        with pytest.raises(GroupAuthorizationFailedError):
            async with asyncio.timeout(30):
                await consumer.start()
                await consumer.getone()
    finally:
        await consumer.stop()


@needs_kcat
async def test_kcat_with_the_gateway_credentials_cannot_forge_a_promotion(
    secured_kafka_settings: PlatformSettings,
) -> None:
    settings = secured_kafka_settings
    before = await _messages_on(settings, DEPLOYMENTS)

    refused = _kcat_produce(_as(settings, "gateway"), DEPLOYMENTS, _forged_promotion())
    assert refused.returncode != 0
    assert "authorization failed" in refused.stderr.lower()
    assert await _messages_on(settings, DEPLOYMENTS) == before

    # The same command as the deployment service's principal goes through: the refusal above is
    # the ACL, not a broken kcat invocation.
    accepted = _kcat_produce(_as(settings, "deployment"), DEPLOYMENTS, _forged_promotion())
    assert accepted.returncode == 0, accepted.stderr
    assert await _messages_on(settings, DEPLOYMENTS) == before + 1


@needs_kcat
def test_an_unauthenticated_client_is_refused(secured_kafka_settings: PlatformSettings) -> None:
    options = _as(secured_kafka_settings, "operator")
    plaintext = subprocess.run(
        ["kcat", "-b", options.bootstrap_servers, "-L", "-m", "5"], capture_output=True, text=True, timeout=60
    )
    assert plaintext.returncode != 0
    assert 'topic "' not in plaintext.stdout


async def test_a_wrong_password_is_refused(secured_kafka_settings: PlatformSettings) -> None:
    options = _as(secured_kafka_settings, "gateway")
    wrong = KafkaClientOptions(
        bootstrap_servers=options.bootstrap_servers,
        client_id=options.client_id,
        security_protocol=options.security_protocol,
        sasl_mechanism=options.sasl_mechanism,
        username=options.username,
        password="not-the-password",
    )
    with pytest.raises(KafkaError):
        await _produce(wrong, INFERENCE)


def test_an_external_broker_is_refused_replication_factor_one_unless_allowed(
    kafka_settings: PlatformSettings, tmp_path: Path
) -> None:
    """``make up`` pointed at a broker it did not start (here: the session's) will not create
    single-replica topics there unless told to."""
    paths = repo_paths()

    def component(**kafka: object) -> KafkaComponent:
        settings = kafka_settings.model_copy(
            update={"var_dir": tmp_path, "kafka": kafka_settings.kafka.model_copy(update=kafka)}
        )
        return KafkaComponent(KafkaBroker(settings, paths.kafka_libs_dir, paths.kafka_log4j_config))

    with pytest.raises(StackError, match="replication factor 1"):
        component().ensure_up(NullProgress())
    assert "external broker" in component(allow_single_replica=True).ensure_up(NullProgress())

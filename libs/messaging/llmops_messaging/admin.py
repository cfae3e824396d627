"""Cluster metadata the services need without joining a consumer group."""

from __future__ import annotations

from aiokafka.admin import AIOKafkaAdminClient

from llmops_config.kafka import KafkaClientOptions


async def topic_partitions(options: KafkaClientOptions, topic: str) -> list[int]:
    """The partition ids of ``topic`` (empty when it does not exist), asked with ``options``
    (``llmops_config.kafka.kafka_client_options``)."""
    admin = AIOKafkaAdminClient(**options.aiokafka())
    await admin.start()
    try:
        [description] = await admin.describe_topics([options.topic(topic)])
    finally:
        await admin.close()
    if description.get("error_code"):
        return []
    return sorted(partition["partition"] for partition in description["partitions"])

"""Cluster metadata the services need without joining a consumer group."""

from __future__ import annotations

from aiokafka.admin import AIOKafkaAdminClient


async def topic_partitions(bootstrap: str, topic: str) -> list[int]:
    """The partition ids of ``topic`` (empty when it does not exist)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        [description] = await admin.describe_topics([topic])
    finally:
        await admin.close()
    if description.get("error_code"):
        return []
    return sorted(partition["partition"] for partition in description["partitions"])

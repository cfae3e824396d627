"""Create the platform's topics (``llmops_events.topics.TOPICS``) on a broker, idempotently.

Missing topics are created with their partitions and configuration; existing topics are left
alone, but differences from the spec (fewer/more partitions, other config values) are reported
so an operator can decide whether to alter them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from llmops_config.kafka import KafkaClientOptions
from llmops_events.topics import TopicSpec

TOPIC_ALREADY_EXISTS = 36  # Kafka protocol error code


class TopicCreationError(RuntimeError):
    """The broker refused to create one or more topics."""


@dataclass(slots=True)
class TopicsReport:
    """What :func:`ensure_topics` did."""

    created: list[str] = field(default_factory=list)
    existing: list[str] = field(default_factory=list)
    drift: list[str] = field(default_factory=list)
    """Human-readable differences between an existing topic and its spec."""


async def ensure_topics(
    options: KafkaClientOptions,
    specs: Iterable[TopicSpec],
    *,
    replication_factor: int = 1,
    min_insync_replicas: int | None = None,
    timeout: float = 30.0,
) -> TopicsReport:
    """Create every topic of ``specs`` that the cluster ``options`` connect to lacks; report drift on
    the others. ``min_insync_replicas``, when given, is set on every topic (and checked as drift)."""
    if min_insync_replicas is not None:
        if min_insync_replicas > replication_factor:
            raise TopicCreationError(
                f"min.insync.replicas={min_insync_replicas} exceeds the replication factor {replication_factor}: "
                "no write with acks=all could ever succeed"
            )
        specs = [
            replace(spec, config={**spec.config, "min.insync.replicas": str(min_insync_replicas)}) for spec in specs
        ]
    # Created under their wire names (LLMOPS_KAFKA_TOPIC_PREFIX); the report names them so too.
    specs = [replace(spec, name=options.topic(spec.name)) for spec in specs]
    report = TopicsReport()
    admin = AIOKafkaAdminClient(**options.aiokafka(request_timeout_ms=int(timeout * 1000)))
    try:
        async with asyncio.timeout(timeout):
            await admin.start()
            present = set(await admin.list_topics())
            missing = [spec for spec in specs if spec.name not in present]
            if missing:
                raced = await _create(admin, missing, replication_factor, timeout)
                report.created = [spec.name for spec in missing if spec.name not in raced]
                present |= set(raced)
            existing = [spec for spec in specs if spec.name in present and spec.name not in report.created]
            report.existing = [spec.name for spec in existing]
            if existing:
                report.drift = await _drift(admin, existing)
    finally:
        await admin.close()
    return report


async def _create(
    admin: AIOKafkaAdminClient, specs: list[TopicSpec], replication_factor: int, timeout: float
) -> list[str]:
    """Create ``specs``; returns the names another client created first (already-exists errors)."""
    new_topics = [
        NewTopic(
            name=spec.name,
            num_partitions=spec.partitions,
            replication_factor=replication_factor,
            topic_configs=dict(spec.config),
        )
        for spec in specs
    ]
    response = await admin.create_topics(new_topics, timeout_ms=int(timeout * 1000))
    already, failures = [], []
    for entry in response.to_object()["topic_errors"]:
        name, code = entry["topic"], entry["error_code"]
        if code == TOPIC_ALREADY_EXISTS:
            already.append(name)
        elif code != 0:
            failures.append(f"{name}: error {code} {entry.get('error_message') or ''}".rstrip())
    if failures:
        raise TopicCreationError("could not create topics: " + "; ".join(failures))
    return already


async def _drift(admin: AIOKafkaAdminClient, specs: list[TopicSpec]) -> list[str]:
    """Differences in partition count and in the configs each spec sets."""
    drift: list[str] = []
    described = {entry["topic"]: entry for entry in await admin.describe_topics([spec.name for spec in specs])}
    for spec in specs:
        partitions = len(described.get(spec.name, {}).get("partitions", []))
        if partitions != spec.partitions:
            drift.append(f"{spec.name}: {partitions} partitions, spec says {spec.partitions}")
    resources = [
        ConfigResource(ConfigResourceType.TOPIC, spec.name, configs=dict.fromkeys(spec.config))
        for spec in specs
        if spec.config
    ]
    if not resources:
        return drift
    actual = _config_values(await admin.describe_configs(resources))
    for spec in specs:
        for key, wanted in spec.config.items():
            have = actual.get(spec.name, {}).get(key)
            if have != wanted:
                drift.append(f"{spec.name}: {key}={have}, spec says {wanted}")
    return drift


def _config_values(responses: list[Any]) -> dict[str, dict[str, str | None]]:
    """``{topic: {config: value}}`` from DescribeConfigs responses."""
    values: dict[str, dict[str, str | None]] = {}
    for response in responses:
        for resource in response.to_object()["resources"]:
            entries = values.setdefault(resource["resource_name"], {})
            for entry in resource["config_entries"]:
                entries[entry["config_names"]] = entry["config_value"]
    return values

"""Who may read and write what on the bus: one table (:data:`ACCESS`), turned into Kafka ACLs.

The table is derived from what each service really does: the topics it subscribes to (its
``main.py``), the events it publishes, the state topics it follows (deployments, inference
traffic) and the consumer groups it joins (its ``group_id`` setting, and ``<name>-follower-*``
for the followers). Every service may write the dead-letter topic and the audit topic. Only the
deployment service writes the deployments topic: a forged promotion from any other principal
(the gateway's, an ingestion producer's) is refused by the broker, so the compacted state
topics only ever hold events from the services entitled to write them.

The broker and ``admin`` are super users (``llmops_config.kafka.SUPER_USERS``); ACLs are only
added, never removed, so an operator's extra grants survive ``make up``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import IntEnum

from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.protocol.admin import CreateAclsRequest

from llmops_config.kafka import OPERATOR_PRINCIPAL, KafkaClientOptions
from llmops_events.topics import (
    AUDIT,
    DATASETS,
    DEPLOYMENTS,
    EVALUATIONS,
    FEEDBACK,
    INFERENCE,
    MONITORING,
    PRIVACY,
    RECORDS_DLQ,
    RECORDS_RAW,
    TOPICS,
    TRAINING,
)

ALL_TOPICS = tuple(spec.name for spec in TOPICS)


@dataclass(frozen=True, slots=True)
class Access:
    """What one principal may do: topics it reads, topics it writes, consumer-group prefixes it uses."""

    reads: frozenset[str]
    writes: frozenset[str]
    group_prefixes: tuple[str, ...]
    describes_all_groups: bool = False
    """See every consumer group's committed offsets (``llmops lag``) without joining any."""


def _access(
    *, reads: Iterable[str], writes: Iterable[str], groups: Iterable[str], describes_all_groups: bool = False
) -> Access:
    # Every principal may dead-letter what it cannot handle and record what it did.
    return Access(frozenset(reads), frozenset({*writes, RECORDS_DLQ, AUDIT}), tuple(groups), describes_all_groups)


ACCESS: dict[str, Access] = {
    # Curates raw records and the inference/feedback join; cuts snapshots (on demand: training
    # requests); applies operators' erasure requests.
    "ingestion": _access(
        reads={RECORDS_RAW, INFERENCE, FEEDBACK, TRAINING, PRIVACY},
        writes={DATASETS},
        groups=["ingestion"],
    ),
    # Trains on requests and reports progress and outcomes on the same topic.
    "fine_tuning": _access(reads={TRAINING}, writes={TRAINING}, groups=["fine-tuning"]),
    # Gates completed trainings against the champion (read from deployments).
    "evaluation": _access(reads={TRAINING, DEPLOYMENTS}, writes={EVALUATIONS}, groups=["evaluation"]),
    # The only writer of deployments; follows its own state, the canary's traffic and the audit history.
    "deployment": _access(
        reads={EVALUATIONS, DEPLOYMENTS, INFERENCE, AUDIT},
        writes={DEPLOYMENTS},
        groups=["deployment"],
    ),
    # The front door: logs inference and feedback, follows the deployments to route; nothing else.
    "gateway": _access(reads={DEPLOYMENTS}, writes={INFERENCE, FEEDBACK}, groups=["gateway"]),
    # Watches traffic and feedback per deployed version; reports and asks for retraining.
    "monitoring": _access(
        reads={INFERENCE, FEEDBACK, DEPLOYMENTS},
        writes={MONITORING, TRAINING},
        groups=["monitoring"],
    ),
    # The CLI and the demo: read everything (status, audit, lineage, DLQ), submit records, feedback
    # and training requests, replay dead letters of the raw-records topic, request erasures (the
    # only writer of the privacy topic). Promotions go through the ops API (the deployment
    # service), never straight onto the deployments topic.
    OPERATOR_PRINCIPAL: _access(
        reads=ALL_TOPICS,
        writes={RECORDS_RAW, FEEDBACK, TRAINING, PRIVACY},
        groups=["llmops-", "demo-", "operator"],
        describes_all_groups=True,
    ),
}
"""The ACL table: principal → :class:`Access`."""


class ResourceType(IntEnum):
    TOPIC = 2
    GROUP = 3


class PatternType(IntEnum):
    LITERAL = 3
    PREFIXED = 4


class Operation(IntEnum):
    READ = 3
    WRITE = 4
    DESCRIBE = 8


ALLOW = 3  # AclPermissionType.ALLOW


@dataclass(frozen=True, slots=True)
class AclBinding:
    """One ``allow`` ACL: ``User:<principal>`` may ``operation`` on the resource, from any host."""

    principal: str
    resource_type: ResourceType
    resource_name: str
    pattern_type: PatternType
    operation: Operation

    def __str__(self) -> str:
        pattern = "prefix " if self.pattern_type is PatternType.PREFIXED else ""
        return f"User:{self.principal} {self.operation.name} {self.resource_type.name} {pattern}{self.resource_name}"


def acl_bindings(access: dict[str, Access] | None = None) -> list[AclBinding]:
    """The ACLs that grant exactly the table (READ and WRITE imply DESCRIBE on a topic)."""
    bindings: list[AclBinding] = []
    for principal, grant in (access or ACCESS).items():
        for topic in sorted(grant.reads):
            bindings.append(AclBinding(principal, ResourceType.TOPIC, topic, PatternType.LITERAL, Operation.READ))
        for topic in sorted(grant.writes):
            bindings.append(AclBinding(principal, ResourceType.TOPIC, topic, PatternType.LITERAL, Operation.WRITE))
        for prefix in grant.group_prefixes:
            bindings.append(AclBinding(principal, ResourceType.GROUP, prefix, PatternType.PREFIXED, Operation.READ))
        if grant.describes_all_groups:
            bindings.append(AclBinding(principal, ResourceType.GROUP, "*", PatternType.LITERAL, Operation.DESCRIBE))
    return bindings


class AclCreationError(RuntimeError):
    """The broker refused to create an ACL."""


async def ensure_acls(options: KafkaClientOptions, bindings: Iterable[AclBinding], *, timeout: float = 30.0) -> int:
    """Create ``bindings`` as ``options``' principal (a super user); creating an existing ACL is a
    no-op for Kafka, so this is idempotent. Returns how many were sent."""
    # aiokafka's admin client has no ACL method but speaks the protocol request: one per binding.
    admin = AIOKafkaAdminClient(**options.aiokafka(request_timeout_ms=int(timeout * 1000)))
    sent = 0
    try:
        await admin.start()
        failures = []
        for binding in bindings:
            name = binding.resource_name
            if binding.resource_type is ResourceType.TOPIC:
                name = options.topic(name)  # the table names platform topics; the broker has wire names
            request = CreateAclsRequest(
                resource_type=int(binding.resource_type),
                resource_name=name,
                resource_pattern_type_filter=int(binding.pattern_type),
                principal=f"User:{binding.principal}",
                host="*",
                operation=int(binding.operation),
                permission_type=ALLOW,
            )
            response = await admin._send_request(request)
            for result in response.to_object()["creation_responses"]:
                if result["error_code"] != 0:
                    failures.append(f"{binding}: error {result['error_code']} {result['error_message'] or ''}".rstrip())
            sent += 1
        if failures:
            raise AclCreationError("could not create ACLs: " + "; ".join(failures))
    finally:
        await admin.close()
    return sent

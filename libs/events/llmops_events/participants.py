"""Who sends and who receives each event: the one table of the bus's participants.

Each participant is one principal on the bus (a service, the operator's CLI, or an enterprise
system producing records). The AsyncAPI document's operations are generated from this table and a
unit test holds it to the event registry (every event type has a sender); Kafka ACLs can be
derived from it too (``topics_written`` / ``topics_read``). A service that starts sending or
receiving an event type adds it here, in the same change.
"""

from __future__ import annotations

from dataclasses import dataclass

from llmops_events import topics

# Event type names, spelled once here so the table reads as a table.
RECORD = "llmops.record.submitted.v1"
INSTRUCTION = "llmops.instruction.submitted.v1"
SNAPSHOT = "llmops.dataset.snapshotted.v1"
TRAINING_REQUESTED = "llmops.training.requested.v1"
TRAINING_OUTCOMES = (
    "llmops.training.started.v1",
    "llmops.training.progressed.v1",
    "llmops.training.completed.v1",
    "llmops.training.failed.v1",
)
TRAINING_COMPLETED = "llmops.training.completed.v1"
EVALUATION = "llmops.evaluation.completed.v1"
DEPLOYMENT_REQUESTED = "llmops.deployment.requested.v1"
CANARY_STARTED = "llmops.deployment.canary_started.v1"
PROMOTED = "llmops.deployment.promoted.v1"
ROLLED_BACK = "llmops.deployment.rolled_back.v1"
DEPLOYMENT_EVENTS = (DEPLOYMENT_REQUESTED, CANARY_STARTED, PROMOTED, ROLLED_BACK)
INFERENCE = "llmops.inference.logged.v1"
FEEDBACK = "llmops.feedback.submitted.v1"
REPORT = "llmops.monitoring.report_created.v1"
DRIFT = "llmops.monitoring.drift_detected.v1"
AUDIT = "llmops.audit.recorded.v1"
ERASURE = "llmops.erasure.requested.v1"


@dataclass(frozen=True, slots=True)
class Participant:
    """One principal on the bus and the events it sends and receives."""

    name: str
    """The principal's name (a service's name as in ``llmops_<name>``, ``operator``, ``producer``)."""
    description: str
    sends: tuple[str, ...] = ()
    """Event types it publishes."""
    receives: tuple[str, ...] = ()
    """Event types it handles (it subscribes to their topics and skips the other types there)."""
    dead_letters: bool = False
    """It sends what it cannot handle to the DLQ topic."""
    replays_dead_letters: bool = False
    """It reads the DLQ and re-sends entries to their original topics (those it may write: the
    Kafka ACLs of ``llmops_stack.acls`` let the operator re-send raw records, not other services' events)."""


PARTICIPANTS: tuple[Participant, ...] = (
    Participant(
        "producer",
        "An enterprise system (CRM, ticketing, chat) that submits records, instruction examples and feedback.",
        sends=(RECORD, INSTRUCTION, FEEDBACK),
    ),
    Participant(
        "ingestion",
        "Validates, redacts and de-duplicates records into Feast, cuts dataset snapshots, audits erasures.",
        sends=(SNAPSHOT, AUDIT),
        receives=(RECORD, INSTRUCTION, INFERENCE, FEEDBACK, TRAINING_REQUESTED, ERASURE),
        dead_letters=True,
    ),
    Participant(
        "fine_tuning",
        "Trains a LoRA adapter per training request and reports progress and the outcome.",
        sends=TRAINING_OUTCOMES,
        receives=(TRAINING_REQUESTED,),
        dead_letters=True,
    ),
    Participant(
        "evaluation",
        "Gates each trained version against the champion with a policy.",
        sends=(EVALUATION,),
        receives=(TRAINING_COMPLETED, PROMOTED, ROLLED_BACK),
        dead_letters=True,
    ),
    Participant(
        "deployment",
        "Loads approved versions on Triton, runs the canary, promotes or rolls back; audits each decision.",
        sends=(*DEPLOYMENT_EVENTS, AUDIT),
        receives=(EVALUATION, INFERENCE),
        dead_letters=True,
    ),
    Participant(
        "gateway",
        "The gRPC front door: routes by deployment state, logs every request, forwards feedback, audits denied keys.",
        sends=(INFERENCE, FEEDBACK, AUDIT),
        receives=DEPLOYMENT_EVENTS,
    ),
    Participant(
        "monitoring",
        "Windowed drift and quality reports over the inference log; asks for retraining.",
        sends=(REPORT, DRIFT, TRAINING_REQUESTED),
        receives=(INFERENCE, FEEDBACK, *DEPLOYMENT_EVENTS),
        dead_letters=True,
    ),
    Participant(
        "operator",
        "A person through the llmops CLI (make retrain, make dlq-replay, make audit, make erase, the demo).",
        sends=(TRAINING_REQUESTED, RECORD, INSTRUCTION, FEEDBACK, ERASURE),
        receives=(AUDIT,),
        replays_dead_letters=True,
    ),
)

PARTICIPANTS_BY_NAME: dict[str, Participant] = {participant.name: participant for participant in PARTICIPANTS}


def _topic_of(event_type: str) -> str:
    from llmops_events.base import event_types

    return event_types()[event_type].topic


def topics_written(participant: Participant) -> frozenset[str]:
    """The topics a participant produces to (ACL ``WRITE``)."""
    written = {_topic_of(event_type) for event_type in participant.sends}
    if participant.dead_letters:
        written.add(topics.RECORDS_DLQ)
    return frozenset(written)


def topics_read(participant: Participant) -> frozenset[str]:
    """The topics a participant consumes (ACL ``READ``)."""
    read = {_topic_of(event_type) for event_type in participant.receives}
    if participant.replays_dead_letters:
        read.add(topics.RECORDS_DLQ)
    return frozenset(read)

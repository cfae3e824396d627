"""``llmops audit`` / ``make audit MODEL=...``: the audit trail (``llmops.audit.v1``) as a table or JSON.

The audit topic is never compacted, so this is the whole history: every promotion, rollback,
canary verdict, override, policy change, denied key and erasure, each with the verified principal
that made it. Read from the topic's beginning up to its end as it is when the command starts.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from rich.table import Table

from llmops_config import PlatformSettings
from llmops_events import Envelope
from llmops_events.topics import AUDIT
from llmops_events.v1 import AuditRecorded
from llmops_messaging.follower import TopicFollower

CLIENT_ID = "llmops-audit"  # the operator principal's consumer groups start with llmops- (the ACL table)
SERVICE = "operator"
"""The CLI's Kafka principal (``llmops_config.kafka``): operators read the audit topic."""


async def read_audit(
    settings: PlatformSettings,
    *,
    model: str | None = None,
    tenant: str | None = None,
    action: str | None = None,
    timeout_s: float = 60.0,
) -> list[Envelope[AuditRecorded]]:
    """The audit records (with their envelopes: id, source, time), oldest first, of ``model`` /
    ``tenant`` / ``action`` when given, else all of them."""
    found: list[Envelope[AuditRecorded]] = []

    def wanted(data: AuditRecorded) -> bool:
        return (
            (model is None or data.model == model)
            and (tenant is None or data.tenant == tenant)
            and (action is None or data.action.value == action)
        )

    def collect(envelope: Envelope[Any]) -> None:
        if isinstance(envelope.data, AuditRecorded) and wanted(envelope.data):
            found.append(envelope)

    follower = TopicFollower(
        settings, AUDIT, client_id=CLIENT_ID, service=SERVICE, on_event=collect, start_at="beginning"
    )
    try:
        await follower.start(timeout=timeout_s, follow=False)
    finally:
        await follower.stop()
    return found


def _details(details: dict[str, str]) -> str:
    return ", ".join(f"{key}={value}" for key, value in sorted(details.items()) if value != "")


def table(records: Sequence[Envelope[AuditRecorded]], *, title: str) -> Table:
    """One row per record: when, what, who, on which model version or tenant, why, details."""
    view = Table(title=title, title_justify="left", show_lines=False, expand=False)
    for column in ("time (UTC)", "action", "principal", "model", "version", "tenant", "reason", "details"):
        view.add_column(column, overflow="fold")
    for envelope in records:
        data = envelope.data
        view.add_row(
            data.recorded_at.strftime("%Y-%m-%d %H:%M:%S"),
            data.action.value,
            data.principal,
            data.model or "",
            "" if data.version is None else str(data.version),
            data.tenant or "",
            data.reason,
            _details(data.details),
        )
    return view


def as_json(records: Sequence[Envelope[AuditRecorded]]) -> str:
    """The records as a JSON array: each record's fields plus its event ``id``, ``source`` and ``time``."""
    rows = [
        {"id": e.id, "source": e.source, "time": e.time.isoformat(), **e.data.model_dump(mode="json")} for e in records
    ]
    return json.dumps(rows, indent=2)

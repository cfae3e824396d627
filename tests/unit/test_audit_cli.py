"""``llmops audit``'s rendering: one table row per record, and JSON that keeps every field plus the
event's id, source and time (reading the topic is covered by the deployment audit-trail test)."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from rich.console import Console

from llmops_cli.audit import as_json, table
from llmops_events import Envelope
from llmops_events.v1 import AuditAction, AuditRecorded

WHEN = datetime(2026, 12, 1, 8, 30, tzinfo=UTC)
RECORDS = [
    Envelope.wrap(
        AuditRecorded(
            action=AuditAction.PROMOTION,
            principal="operator:alice",
            model="intents",
            version=2,
            reason="checked by hand",
            details={"previous_version": "1", "champion_after": "2", "champion_before": ""},
            recorded_at=WHEN,
        ),
        source="/llmops/deployment",
    ),
    Envelope.wrap(
        AuditRecorded(action=AuditAction.KEY_DENIED, principal="key:k-7", tenant="acme", reason="wrong tenant"),
        source="/llmops/gateway",
    ),
]


def test_the_table_has_a_row_per_record_with_who_did_what() -> None:
    console = Console(width=200, record=True)
    console.print(table(RECORDS, title="audit trail"))
    text = console.export_text()
    assert "2026-12-01 08:30:00" in text and "operator:alice" in text and "checked by hand" in text
    assert "champion_after=2, previous_version=1" in text and "champion_before" not in text  # empty values left out
    assert "key_denied" in text and "acme" in text


def test_json_keeps_every_field_and_the_event_id() -> None:
    rows = json.loads(as_json(RECORDS))
    assert [row["action"] for row in rows] == ["promotion", "key_denied"]
    assert rows[0]["id"] == RECORDS[0].id and rows[0]["version"] == 2 and rows[1]["tenant"] == "acme"
    assert rows[0]["details"]["previous_version"] == "1"

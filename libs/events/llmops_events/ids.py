"""Event ids derived from the event they answer, so a handler that runs again (a crash before its
offset was committed, a redelivery) publishes its output under the same ids, and the consumers
further down recognise the duplicate (``llmops_messaging.ProcessedEvents``) instead of applying it
a second time."""

from __future__ import annotations

import uuid

NAMESPACE = uuid.UUID("5f1b7c2e-3d4a-5b6c-8d9e-0a1b2c3d4e5f")
"""The platform's UUID namespace for derived ids (fixed forever: changing it changes every id)."""


def derived_id(input_id: str, step: str) -> str:
    """The id of the event that ``step`` of the handling of event ``input_id`` publishes: a UUID 5,
    the same for the same two strings on every run and every replica.

    ``step`` names the output within that handling, so two outputs of one input differ: usually the
    output's event type, plus what tells several of that type apart (``"…progressed.v1/step=40"``).
    """
    # Length-prefixed, so ("a/b", "c") and ("a", "b/c") cannot give the same name.
    return str(uuid.uuid5(NAMESPACE, f"{len(input_id)}:{input_id}/{step}"))

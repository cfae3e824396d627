"""The feedback flywheel: a served request plus its true label becomes a labelled record."""

from __future__ import annotations

from dataclasses import dataclass

FEEDBACK_SOURCE = "feedback"


@dataclass(frozen=True, slots=True)
class ServedRequest:
    """What ingestion remembers of a logged inference (text already redacted)."""

    request_id: str
    tenant: str
    text: str
    model_name: str
    model_version: int
    predicted_label: str


@dataclass(frozen=True, slots=True)
class LabelledFeedback:
    """A record to curate, derived from feedback on a served request."""

    tenant: str
    source: str
    text: str
    label: str
    record_id: str
    metadata: dict[str, str]


def record_from_feedback(request: ServedRequest, *, true_label: str) -> LabelledFeedback:
    """The labelled record for ``request``; its id derives from the request id, so feedback
    given twice for one request yields one record."""
    return LabelledFeedback(
        tenant=request.tenant,
        source=FEEDBACK_SOURCE,
        text=request.text,
        label=true_label,
        record_id=f"feedback-{request.request_id}",
        metadata={
            "request_id": request.request_id,
            "model_name": request.model_name,
            "model_version": str(request.model_version),
            "predicted_label": request.predicted_label,
        },
    )

"""Feedback on a served request: what a client may say (a rating, a corrected answer, the true
label, a comment; at least one of the first three), within bounded lengths, and the event id a
retried call gets again so consumers skip the duplicate."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

from llmops_events.ids import derived_id
from llmops_gateway.errors import InvalidRequest


@dataclass(frozen=True, slots=True)
class RawFeedback:
    """Feedback as it arrived (wire-neutral); 0 and empty strings mean "not said"."""

    request_id: str
    rating: int = 0
    corrected_answer: str = ""
    true_label: str = ""
    comment: str = ""


@dataclass(frozen=True, slots=True)
class FeedbackLimits:
    max_request_id_chars: int = 256
    max_label_chars: int = 256
    max_answer_chars: int = 8000
    max_comment_chars: int = 2000


@dataclass(frozen=True, slots=True)
class Feedback:
    """Validated feedback; None means not said."""

    request_id: str
    rating: int | None = None
    corrected_answer: str | None = None
    true_label: str | None = None
    comment: str | None = None

    @property
    def event_id(self) -> str:
        """Derived from the request id and what is said: a retried call publishes the same id."""
        said = json.dumps(
            [self.rating, self.corrected_answer, self.true_label, self.comment], ensure_ascii=False
        ).encode()
        return derived_id(self.request_id, f"feedback:{hashlib.sha256(said).hexdigest()}")


def validate_feedback(raw: RawFeedback, limits: FeedbackLimits) -> Feedback:
    request_id = raw.request_id.strip()
    if not request_id:
        raise InvalidRequest("request_id is empty: name the served request the feedback is about")
    if len(request_id) > limits.max_request_id_chars:
        raise InvalidRequest(f"request_id has {len(request_id)} characters; the limit is {limits.max_request_id_chars}")
    if not 0 <= raw.rating <= 5:
        raise InvalidRequest(f"rating is {raw.rating}; it must be between 1 and 5 (0: no rating)")
    true_label = raw.true_label.strip()
    for name, value, limit in (
        ("true_label", true_label, limits.max_label_chars),
        ("corrected_answer", raw.corrected_answer, limits.max_answer_chars),
        ("comment", raw.comment, limits.max_comment_chars),
    ):
        if len(value) > limit:
            raise InvalidRequest(f"{name} has {len(value)} characters; the limit is {limit}")
    feedback = Feedback(
        request_id=request_id,
        rating=raw.rating or None,
        corrected_answer=raw.corrected_answer if raw.corrected_answer.strip() else None,
        true_label=true_label or None,
        comment=raw.comment if raw.comment.strip() else None,
    )
    if feedback.rating is None and feedback.corrected_answer is None and feedback.true_label is None:
        raise InvalidRequest("feedback says nothing: send a rating, a corrected_answer or a true_label")
    return feedback

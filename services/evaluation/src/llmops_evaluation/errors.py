"""The service's one error hierarchy: what makes an evaluation end in a rejection with a reason."""

from __future__ import annotations


class EvaluationError(Exception):
    """Anything that stops an evaluation; each subclass carries a stable ``reason`` code."""


class EvaluationRejected(EvaluationError):
    """An evaluation that cannot reach a verdict on the evidence: the candidate is rejected with
    ``reason`` (a stable code) and ``detail`` (a sentence)."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


class ModelUnavailable(EvaluationRejected):
    """A model's artifacts are missing, corrupt, of an unknown kind or for another base model;
    ``reason`` is a stable code."""

"""The service's one error hierarchy: what makes an evaluation end in a rejection with a reason."""

from __future__ import annotations


class EvaluationError(Exception):
    """Anything that stops an evaluation; each subclass carries a stable ``reason`` code."""


class ModelUnavailable(EvaluationError):
    """A model's artifacts are missing or corrupt; ``reason`` is a stable code."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail

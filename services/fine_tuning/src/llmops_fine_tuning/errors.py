"""The service's one error hierarchy; ``retryable`` is what the handler maps to redelivery or not."""

from __future__ import annotations


class FineTuningError(Exception):
    """A job that cannot finish. ``reason`` is the machine-readable code of ``training.failed``."""

    retryable: bool = False

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


class TrainingRejected(FineTuningError):
    """The request is valid as an event but cannot be trained (unknown dataset, too few examples...).

    Reported as ``training.failed`` with ``retryable=false``; the message is acknowledged, never
    dead-lettered, since retrying the same request gives the same answer.
    """


class TransientFailure(FineTuningError):
    """Infrastructure that may recover (artifact store unreachable): the request is redelivered."""

    retryable = True

"""The service's one error hierarchy: what a window report or a drift decision cannot be made without."""

from __future__ import annotations


class MonitoringError(Exception):
    """Anything that stops a report; each subclass carries a stable ``reason`` code."""


class ReferenceUnavailable(MonitoringError):
    """No reference can be built (model or snapshot missing); ``reason`` is a stable code."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail

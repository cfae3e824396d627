"""What one gateway process takes on: how many calls at once, and how long each may wait.

A hung Triton must not hold calls forever nor let them pile up: every call gets a deadline (the
client's, cut to ``max_deadline_s``, or ``default_deadline_s`` when the client set none), and a
call beyond ``max_in_flight`` calls being served is refused at once (``Overloaded``), never queued
without bound.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from llmops_gateway.errors import Overloaded


@dataclass(slots=True)
class Admission:
    max_in_flight: int
    default_deadline_s: float
    max_deadline_s: float
    in_flight: int = field(default=0, init=False)

    def __post_init__(self) -> None:
        if self.max_in_flight < 1:
            raise ValueError("max_in_flight must be at least 1")
        if not 0 < self.default_deadline_s <= self.max_deadline_s:
            raise ValueError("deadlines must satisfy 0 < default_deadline_s <= max_deadline_s")

    def budget(self, client_remaining: float | None) -> float:
        """Seconds the call may take: the client's remaining time cut to the maximum, or the default."""
        if client_remaining is None:
            return self.default_deadline_s
        return min(client_remaining, self.max_deadline_s)

    @contextmanager
    def slot(self) -> Iterator[None]:
        """Hold one of the ``max_in_flight`` slots for the call; raises ``Overloaded`` when none is free.
        (The gateway serves on one event loop, so the count needs no lock.)"""
        if self.in_flight >= self.max_in_flight:
            raise Overloaded(
                f"the gateway is overloaded: {self.in_flight} calls in flight, the limit"
                " (LLMOPS_GATEWAY_MAX_IN_FLIGHT); retry later with backoff"
            )
        self.in_flight += 1
        try:
            yield
        finally:
            self.in_flight -= 1

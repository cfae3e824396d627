"""Windows of live traffic per model version, and the join of late feedback labels to them.

A window closes when it holds ``max_events`` observations (count-based) or when its first
observation is older than ``max_seconds`` (time-based); whichever comes first. Time is passed in
(seconds, any monotonic clock) so the logic is tested without sleeping.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import datetime
from itertools import count
from typing import Any, Generic, TypeVar


@dataclass(frozen=True, slots=True, order=True)
class WindowKey:
    """Traffic is windowed per model name and version: each version has its own reference."""

    model_name: str
    model_version: int

    def __str__(self) -> str:
        return f"{self.model_name}/v{self.model_version}"


@dataclass(slots=True)
class Observation:
    """One served prediction; ``true_label`` is filled in when feedback arrives."""

    request_id: str
    text: str
    label: str
    confidence: float
    served_at: datetime
    true_label: str | None = None


_window_ids = count(1)

ObservationT = TypeVar("ObservationT")
"""What a window holds: an ``Observation`` (classifications) or a ``GenerationObservation``."""


@dataclass(slots=True)
class Window(Generic[ObservationT]):
    key: WindowKey
    opened_at: float
    observations: list[ObservationT] = field(default_factory=list)
    sequence: int = field(default_factory=lambda: next(_window_ids))

    @property
    def size(self) -> int:
        return len(self.observations)

    @property
    def labelled(self) -> list[ObservationT]:
        """The observations that feedback labelled (classifications)."""
        return [o for o in self.observations if getattr(o, "true_label", None) is not None]


class WindowBook(Generic[ObservationT]):
    """The open window of every model version."""

    def __init__(self, *, max_events: int, max_seconds: float | None) -> None:
        if max_events < 1:
            raise ValueError("max_events must be at least 1")
        self._max_events = max_events
        self._max_seconds = max_seconds
        self._open: dict[WindowKey, Window[ObservationT]] = {}

    def add(
        self, key: WindowKey, observation: ObservationT, *, now: float
    ) -> tuple[Window[ObservationT], Window[ObservationT] | None]:
        """Add to ``key``'s open window; returns that window and, when it became full, the closed window."""
        window = self._open.get(key)
        if window is None:
            window = self._open[key] = Window(key=key, opened_at=now)
        window.observations.append(observation)
        if window.size >= self._max_events:
            del self._open[key]
            return window, window
        return window, None

    def expired(self, *, now: float) -> list[Window[ObservationT]]:
        """Close and return the windows older than ``max_seconds``."""
        if self._max_seconds is None:
            return []
        limit = self._max_seconds
        closed = [w for w in self._open.values() if now - w.opened_at >= limit]
        for window in closed:
            del self._open[window.key]
        return closed

    def close(self, key: WindowKey) -> Window[ObservationT] | None:
        """Close ``key``'s window now (on demand), whatever its size."""
        return self._open.pop(key, None)

    def is_open(self, window: Window[Any]) -> bool:
        return self._open.get(window.key) is window

    def open_windows(self) -> list[Window[ObservationT]]:
        return sorted(self._open.values(), key=lambda w: w.key)


class LabelJoin:
    """Joins feedback labels to served predictions by request id, in bounded memory.

    * feedback for a prediction still in an open window labels it there: that window's report
      has the label;
    * feedback for a prediction whose window already closed is kept as a *late* label and goes
      into the next report of the same model version (its quality section says how many were late);
    * feedback that arrives before its inference event (the two topics are not ordered) waits,
      and labels the prediction when it arrives.

    The oldest entries are forgotten beyond ``max_tracked`` requests.
    """

    def __init__(self, *, max_tracked: int = 100_000) -> None:
        self._max_tracked = max_tracked
        self._served: OrderedDict[str, tuple[WindowKey, Window[Observation], Observation]] = OrderedDict()
        self._early: OrderedDict[str, str] = OrderedDict()
        self._late: dict[WindowKey, list[Observation]] = {}

    def served(self, window: Window[Observation], observation: Observation) -> None:
        early = self._early.pop(observation.request_id, None)
        if early is not None:
            observation.true_label = early
        self._served[observation.request_id] = (window.key, window, observation)
        self._trim(self._served)

    def feedback(self, request_id: str, true_label: str, *, book: WindowBook[Observation]) -> str:
        """Record a label; returns where it went: ``window``, ``late`` or ``early``."""
        entry = self._served.get(request_id)
        if entry is None:
            self._early[request_id] = true_label
            self._trim(self._early)
            return "early"
        key, window, observation = entry
        already_labelled = observation.true_label is not None
        observation.true_label = true_label
        if book.is_open(window):
            return "window"
        if not already_labelled:
            self._late.setdefault(key, []).append(observation)
            late = self._late[key]
            if len(late) > self._max_tracked:
                del late[: len(late) - self._max_tracked]
        return "late"

    def take_late(self, key: WindowKey) -> list[Observation]:
        """Late-labelled predictions of ``key`` since the last call."""
        return self._late.pop(key, [])

    def _trim(self, entries: OrderedDict[str, Any]) -> None:
        while len(entries) > self._max_tracked:
            entries.popitem(last=False)

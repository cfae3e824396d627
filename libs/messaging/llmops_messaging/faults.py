"""Faults the consumer knows by name: a full disk, an unreachable state store, and a kill injected by tests.

**Infrastructure faults** (``infrastructure_fault``) are conditions, not verdicts on a message. The
consumer does not count the attempt, does not dead-letter, reports itself stalled with the fault's
name and delivers the same messages again after a backoff until the condition is gone (see
``EventConsumer``):

* a full disk (``disk_full``, ``is_disk_full``): ``OSError`` with ``ENOSPC`` or ``EDQUOT``, SQLite's
  ``SQLITE_FULL`` ("database or disk is full") or PostgreSQL's ``disk_full`` (SQLSTATE 53100, the
  shared state store), raised by a handler or by the consumer's own state writes;
* the shared PostgreSQL state store unreachable (``state_store_unavailable``): the stores'
  ``StateStoreUnavailable`` (down, restarting, the connection broken; what did not commit is rolled
  back, so the redelivery applies it once).

**Fault injection** (``FaultInjection``), for the chaos tests only: with the environment variable
``LLMOPS_FAULT_INJECT=<point>:<event type>:<n>`` the consumer ``SIGKILL``s its own process at a
named point of the n-th event of that type it applies, e.g.
``LLMOPS_FAULT_INJECT=kill_after_effect:llmops.training.completed.v1:1``:

* ``kill_after_effect``: the handler has returned (its effect is durable: rows committed, events
  published) and the consumer has neither recorded the event as applied nor committed the offset.
  After the restart the message is delivered again and its handler runs again: what that proves is
  that the handler is idempotent (derived event ids, its own checks);
* ``kill_before_commit``: the delivery is processed and every event of it recorded as applied,
  and the offsets are not committed. After the restart the batch is delivered again and skipped.

It is read once, when a consumer is built, and is a no-op when unset (one ``is None`` test per
applied event). A malformed value fails the start-up rather than silently testing nothing. Never
set it in production: the process kills itself.
"""

from __future__ import annotations

import errno
import os
import signal
import sqlite3
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum

from llmops_storage.state_store import StateStoreUnavailable

FAULT_INJECT_ENV = "LLMOPS_FAULT_INJECT"

DISK_FULL = "disk_full"
"""The stall reason of a consumer that cannot write for want of space."""

STATE_STORE_UNAVAILABLE = "state_store_unavailable"
"""The stall reason of a consumer whose shared state store cannot be reached."""

FAULT_MEANINGS = {
    DISK_FULL: "the disk is full",
    STATE_STORE_UNAVAILABLE: "the shared state store cannot be reached",
}

_DISK_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})
_SQLITE_FULL = getattr(sqlite3, "SQLITE_FULL", 13)
_POSTGRES_DISK_FULL = "53100"  # SQLSTATE disk_full


def infrastructure_fault(error: BaseException) -> str | None:
    """The infrastructure fault ``error`` says (or what caused it, or a member of an exception
    group): ``disk_full``, ``state_store_unavailable``, or None for a failure of the message's own."""
    seen: set[int] = set()
    pending: list[BaseException] = [error]
    while pending:
        current = pending.pop()
        if id(current) in seen or len(seen) > 32:
            continue
        seen.add(id(current))
        if _says_disk_full(current):
            return DISK_FULL
        if isinstance(current, StateStoreUnavailable):
            return STATE_STORE_UNAVAILABLE
        if isinstance(current, BaseExceptionGroup):
            pending.extend(current.exceptions)
        for linked in (current.__cause__, current.__context__):
            if linked is not None:
                pending.append(linked)
    return None


def is_disk_full(error: BaseException) -> bool:
    """Whether ``error`` (or what caused it, or a member of an exception group) says the disk is full."""
    return infrastructure_fault(error) == DISK_FULL


def _says_disk_full(error: BaseException) -> bool:
    if isinstance(error, OSError) and error.errno in _DISK_FULL_ERRNOS:
        return True
    if isinstance(error, sqlite3.Error) and (
        getattr(error, "sqlite_errorcode", None) == _SQLITE_FULL or "database or disk is full" in str(error)
    ):
        return True
    return getattr(error, "sqlstate", None) == _POSTGRES_DISK_FULL  # psycopg's error from the shared store


class FaultPoint(StrEnum):
    KILL_AFTER_EFFECT = "kill_after_effect"
    """The handler returned; the event is not recorded as applied, the offset not committed."""
    KILL_BEFORE_COMMIT = "kill_before_commit"
    """The delivery is processed and recorded; its offsets are not committed."""


def _kill_this_process(reason: str) -> None:
    sys.stderr.write(f"llmops fault injection: {reason}; SIGKILL to pid {os.getpid()}\n")
    sys.stderr.flush()
    os.kill(os.getpid(), signal.SIGKILL)


@dataclass
class FaultInjection:
    """One injected fault: ``point`` on the ``nth`` applied event of ``event_type`` (counted from 1
    in this process). ``kill`` ends the process (tests in one process pass their own)."""

    point: FaultPoint
    event_type: str
    nth: int
    kill: Callable[[str], None] = field(default=_kill_this_process, repr=False)
    seen: int = 0
    armed: bool = False
    """The n-th event was applied: the fault fires now (``kill_after_effect``) or at the end of the
    delivery (``kill_before_commit``), once."""
    fired: bool = False

    @classmethod
    def parse(cls, spec: str) -> FaultInjection:
        """``<point>:<event type>:<n>``, e.g. ``kill_after_effect:llmops.record.submitted.v1:500``."""
        parts = spec.strip().split(":")
        if len(parts) != 3:
            raise ValueError(f"{FAULT_INJECT_ENV}={spec!r}: expected <point>:<event type>:<n>")
        point, event_type, nth = parts
        try:
            parsed_point = FaultPoint(point)
        except ValueError:
            known = ", ".join(p.value for p in FaultPoint)
            raise ValueError(f"{FAULT_INJECT_ENV}={spec!r}: unknown point {point!r} (one of {known})") from None
        if not event_type or not nth.isdigit() or int(nth) < 1:
            raise ValueError(f"{FAULT_INJECT_ENV}={spec!r}: expected an event type and a count of at least 1")
        return cls(parsed_point, event_type, int(nth))

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> FaultInjection | None:
        spec = (os.environ if environ is None else environ).get(FAULT_INJECT_ENV, "")
        return cls.parse(spec) if spec.strip() else None

    def applied(self, event_type: str, count: int = 1) -> None:
        """``count`` events of ``event_type`` were applied (the handler returned, nothing recorded yet)."""
        if event_type != self.event_type or self.armed:
            return
        self.seen += count
        if self.seen < self.nth:
            return
        self.armed = True
        if self.point is FaultPoint.KILL_AFTER_EFFECT:
            self._fire(f"{self.point} on {self.event_type} #{self.nth}")

    def delivered(self) -> None:
        """The delivery is processed and recorded; its offsets are about to be committed."""
        if self.armed and self.point is FaultPoint.KILL_BEFORE_COMMIT:
            self._fire(f"{self.point} after {self.event_type} #{self.nth}")

    def _fire(self, reason: str) -> None:
        if not self.fired:
            self.fired = True
            self.kill(reason)

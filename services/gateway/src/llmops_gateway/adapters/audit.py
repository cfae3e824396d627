"""Denied key uses and guardrail refusals on the audit topic (``llmops.audit.v1``), published off
the response path.

A refusal must answer at once and an attacker must not be able to make the gateway queue without
bound, so records go through a bounded queue drained by one background task; what does not fit, or
fails to publish, is counted (``llmops_gateway_audit_dropped_total``) and logged, never retried.
Rate-limit refusals are load, not a trust decision: they are counted in metrics only.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from typing import Any, Protocol

from llmops_events.v1 import AuditAction, publish_audit
from llmops_gateway.adapters.metrics import GatewayMetrics
from llmops_gateway.domain.auth import KeysChanged

logger = logging.getLogger(__name__)


class AuditPublisher(Protocol):
    async def publish(self, data: Any, *, correlationid: str | None = ..., id: str | None = ...) -> Any: ...


@dataclass(frozen=True, slots=True)
class Denial:
    principal: str
    """``key:<id>`` for a known key, ``key:unknown`` for a secret that matched none."""
    reason: str
    """``unauthenticated``, ``tenant`` or ``scope``."""
    message: str
    method: str
    tenant: str | None = None
    action: AuditAction = AuditAction.KEY_DENIED
    """``key_denied``, ``guardrail_refusal`` (then ``reason`` is the guardrail's code) or
    ``policy_change`` (the keys file changed)."""
    details: tuple[tuple[str, str], ...] = ()
    """Replaces the default details (the reason and the method) when given."""


def keys_change(change: KeysChanged) -> Denial:
    """A change of the keys file as an audit record: a policy change the gateway applied."""
    counts = f"{len(change.added)} added, {len(change.removed)} removed, {len(change.changed)} changed"
    summary = f"API keys file changed: {counts}"
    return Denial(
        "service:gateway",
        "keys_file",
        summary,
        "keys",
        action=AuditAction.POLICY_CHANGE,
        details=(
            ("file", change.path),
            ("added", ",".join(change.added)),
            ("removed", ",".join(change.removed)),
            ("changed", ",".join(change.changed)),
        ),
    )


class DenialAudit:
    def __init__(self, publisher: AuditPublisher, *, metrics: GatewayMetrics, max_queued: int = 1000) -> None:
        self._publisher = publisher
        self._metrics = metrics
        self._queue: asyncio.Queue[Denial] = asyncio.Queue(maxsize=max_queued)
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._drain())

    def record(self, denial: Denial) -> None:
        try:
            self._queue.put_nowait(denial)
        except asyncio.QueueFull:
            self._metrics.audit_dropped.inc()

    async def _drain(self) -> None:
        while True:
            denial = await self._queue.get()
            try:
                await publish_audit(
                    self._publisher,
                    denial.action,
                    denial.principal,
                    tenant=denial.tenant,
                    reason=denial.message[:2048],
                    details=dict(denial.details)
                    or {
                        ("code" if denial.action is AuditAction.GUARDRAIL_REFUSAL else "denial"): denial.reason,
                        "method": denial.method,
                    },
                )
            except asyncio.CancelledError:
                raise
            except Exception as error:
                self._metrics.audit_dropped.inc()
                logger.warning("denied key use not audited: %s", type(error).__name__)
            finally:
                self._queue.task_done()

    async def stop(self, timeout: float = 5.0) -> None:
        """Publish what is queued (bounded by ``timeout``), then stop."""
        if self._task is None:
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await self._queue.join()
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._task = None
        self._metrics.audit_dropped.inc(self._queue.qsize())

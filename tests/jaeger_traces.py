"""Traces read back from Jaeger's HTTP query API (``/api/traces``, the UI's own) by the tests: the
trace in which a chain of (service, span name) pairs each descends from the one before, as one
record's way from ingestion to deployment does."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Mapping, Sequence
from typing import Any

import httpx

Trace = dict[str, Any]
"""One trace as the API returns it: ``traceID``, ``spans`` (``spanID``, ``operationName``,
``references``, ``tags``, ``processID``) and ``processes`` (``serviceName``)."""
Span = dict[str, Any]

RECORDS_TO_DEPLOYMENT = (
    ("llmops-ingestion", "dataset snapshot"),
    ("llmops-fine-tuning", "training job"),
    ("llmops-evaluation", "evaluation"),
    ("llmops-deployment", "go live"),
)
"""The spans of a record's way, as the services name them, each a descendant of the one before."""


async def chain_trace(
    jaeger_url: str,
    chain: Sequence[tuple[str, str]],
    *,
    first_tags: Mapping[str, Any] | None = None,
    first_parent_service: str | None = None,
    timeout_s: float,
) -> tuple[Trace | None, list[list[str]]]:
    """The first trace holding a span of each (service, name) of ``chain``, each descending from
    the one before; the first with the tags ``first_tags`` and, if given, a parent span of
    ``first_parent_service``. Polled until ``timeout_s`` (services export every few seconds).
    Returns the trace (None if none appeared) and, per trace seen, its ``service:span`` names."""
    service, operation = chain[0]
    # Only traces holding the chain's first span: a service has many others (one per batch, per event).
    query: dict[str, str | int] = {"service": service, "operation": operation, "limit": 100, "lookback": "3h"}
    deadline = time.monotonic() + timeout_s
    while True:
        async with httpx.AsyncClient(base_url=jaeger_url, timeout=30) as client:
            response = await client.get("/api/traces", params=query)
        response.raise_for_status()
        traces: list[Trace] = response.json().get("data") or []
        seen = [sorted({f"{name}:{span['operationName']}" for span, name in _with_services(t)}) for t in traces]
        for trace in traces:
            if _holds_chain(trace, chain, first_tags or {}, first_parent_service):
                return trace, seen
        if time.monotonic() > deadline:
            return None, seen
        await asyncio.sleep(2)


def services_of(trace: Trace) -> list[str]:
    """The services with spans in ``trace``, sorted."""
    return sorted({name for _, name in _with_services(trace)})


def _with_services(trace: Trace) -> list[tuple[Span, str]]:
    processes = trace["processes"]
    return [(span, processes[span["processID"]]["serviceName"]) for span in trace["spans"]]


def _holds_chain(
    trace: Trace, chain: Sequence[tuple[str, str]], first_tags: Mapping[str, Any], first_parent_service: str | None
) -> bool:
    spans = _with_services(trace)
    service_of = {span["spanID"]: name for span, name in spans}
    by_id = {span["spanID"]: span for span, _ in spans}
    found: list[Span] = []
    for service, name in chain:
        span = next((s for s, n in spans if s["operationName"] == name and n == service), None)
        if span is None:
            return False
        found.append(span)
    tags = {tag["key"]: tag["value"] for tag in found[0].get("tags", [])}
    if any(tags.get(key) != value for key, value in first_tags.items()):
        return False
    if first_parent_service is not None and service_of.get(_parent_id(found[0]) or "") != first_parent_service:
        return False
    return all(_descends(by_id, later, earlier) for earlier, later in itertools.pairwise(found))


def _parent_id(span: Span) -> str | None:
    return next((ref["spanID"] for ref in span.get("references", []) if ref["refType"] == "CHILD_OF"), None)


def _descends(by_id: Mapping[str, Span], span: Span, ancestor: Span) -> bool:
    current = _parent_id(span)
    while current is not None:
        if current == ancestor["spanID"]:
            return True
        parent = by_id.get(current)
        current = _parent_id(parent) if parent is not None else None
    return False

"""Erasure: which curated records a request names, and which incoming records stay erased."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import UTC, datetime

from llmops_ingestion.domain.curation import record_id_for


def curated_ids(tenant: str, subject_record_ids: Iterable[str]) -> tuple[str, ...]:
    """The curated ids (``<tenant>/<id>``) of a data subject's records, as a request names them:
    by the producer's record id, or already in the curated form. Sorted, without repeats."""
    prefix = f"{tenant}/"
    return tuple(
        sorted(
            {
                subject if subject.startswith(prefix) else record_id_for(tenant=tenant, record_id=subject, text_key="")
                for subject in subject_record_ids
            }
        )
    )


def as_utc(moment: datetime) -> datetime:
    """An aware datetime in UTC (a naive one is taken as UTC, as CloudEvents times are)."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def is_erased_tenant(erased_tenants: Mapping[str, datetime], tenant: str, submitted_at: datetime) -> bool:
    """Whether a record of ``tenant`` submitted at ``submitted_at`` falls under an erasure of the
    whole tenant (``erased_tenants``: tenant → the latest such erasure's ``requested_at``): one
    submitted up to then is erased even when it is consumed after the erasure (another partition,
    a lagging consumer, a replay), one submitted later is new data."""
    erased_up_to = erased_tenants.get(tenant)
    return erased_up_to is not None and as_utc(submitted_at) <= as_utc(erased_up_to)

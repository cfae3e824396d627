"""Request validation: every item needs a non-empty text within the length limit; a batch has a
maximum size. Messages name the offending item so a caller can fix its request."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field

from llmops_gateway.domain.models import PredictItem
from llmops_gateway.errors import InvalidRequest

DEFAULT_TENANT = "default"


@dataclass(frozen=True, slots=True)
class RawItem:
    """An item as it arrived (wire-neutral)."""

    text: str
    model: str = ""
    tenant: str = ""
    request_id: str = ""


@dataclass(frozen=True, slots=True)
class FieldBounds:
    """Longest accepted identifiers of any request (settings ``LLMOPS_GATEWAY_MAX_*_CHARS``)."""

    max_tenant_chars: int = 64
    max_request_id_chars: int = 256
    max_model_chars: int = 128


@dataclass(frozen=True, slots=True)
class Limits:
    max_text_chars: int
    max_batch_items: int
    bounds: FieldBounds = field(default_factory=FieldBounds)


def check_identifiers(*, model: str, tenant: str, request_id: str, bounds: FieldBounds, prefix: str = "") -> None:
    """Raise ``InvalidRequest`` when an identifier is longer than its bound: a value from outside
    never decides how much the gateway stores, logs or publishes."""
    for name, value, limit in (
        ("model", model, bounds.max_model_chars),
        ("tenant", tenant, bounds.max_tenant_chars),
        ("request_id", request_id, bounds.max_request_id_chars),
    ):
        if len(value) > limit:
            raise InvalidRequest(f"{prefix}{name} has {len(value)} characters; the limit is {limit}")


def validate_item(raw: RawItem, limits: Limits, *, where: str = "") -> PredictItem:
    prefix = f"{where}: " if where else ""
    check_identifiers(
        model=raw.model, tenant=raw.tenant, request_id=raw.request_id, bounds=limits.bounds, prefix=prefix
    )
    if not raw.text.strip():
        raise InvalidRequest(f"{prefix}text is empty")
    if len(raw.text) > limits.max_text_chars:
        raise InvalidRequest(f"{prefix}text has {len(raw.text)} characters; the limit is {limits.max_text_chars}")
    return PredictItem(
        text=raw.text,
        model=raw.model.strip(),
        tenant=raw.tenant.strip() or DEFAULT_TENANT,
        request_id=raw.request_id.strip() or str(uuid.uuid4()),
    )


def validate_batch(raws: Sequence[RawItem], limits: Limits) -> list[PredictItem]:
    if not raws:
        raise InvalidRequest("items is empty: send at least one item")
    if len(raws) > limits.max_batch_items:
        raise InvalidRequest(f"{len(raws)} items in one batch; the limit is {limits.max_batch_items}")
    return [validate_item(raw, limits, where=f"items[{index}]") for index, raw in enumerate(raws)]

"""Generation requests: a chat (or a prompt, which is one user turn) and its sampling parameters,
checked against the gateway's limits before anything reaches Triton, and the numbers a finished
generation is logged with. Messages name the offending field so a caller can fix its request."""

from __future__ import annotations

import math
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

from llmops_gateway.domain.validation import DEFAULT_TENANT, FieldBounds, check_identifiers
from llmops_gateway.errors import InvalidRequest
from llmops_models import shown

ROLES = ("system", "user", "assistant")
FinishReason = Literal["stop", "length", "cancelled", "error"]
FINISH_REASONS: tuple[FinishReason, ...] = ("stop", "length", "cancelled", "error")
CANCELLED = "cancelled"
ERROR = "error"


@dataclass(frozen=True, slots=True)
class Turn:
    role: str
    content: str


@dataclass(frozen=True, slots=True)
class RawGeneration:
    """A generation request as it arrived (wire-neutral); None means the caller left it unset."""

    messages: Sequence[Turn] = ()
    prompt: str = ""
    model: str = ""
    tenant: str = ""
    request_id: str = ""
    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    seed: int | None = None
    stop: Sequence[str] = ()


@dataclass(frozen=True, slots=True)
class GenerationLimits:
    """What one generation request may ask for (settings ``LLMOPS_GATEWAY_GENERATE_*``)."""

    max_messages: int = 32
    max_chars: int = 8000
    """Characters over all turns."""
    max_tokens: int = 256
    default_max_tokens: int = 128
    max_temperature: float = 2.0
    max_stop: int = 4
    max_stop_chars: int = 64
    bounds: FieldBounds = field(default_factory=FieldBounds)


@dataclass(frozen=True, slots=True)
class GenerateItem:
    """One validated generation request, every parameter decided."""

    messages: tuple[Turn, ...]
    model: str
    """The requested model name; empty means the default generation model."""
    tenant: str
    request_id: str
    max_tokens: int
    temperature: float
    top_p: float
    seed: int | None = None
    stop: tuple[str, ...] = ()

    @property
    def last_user_text(self) -> str:
        return self.messages[-1].content


def validate_generation(raw: RawGeneration, limits: GenerationLimits) -> GenerateItem:
    """A ``GenerateItem`` for ``raw``; raises ``InvalidRequest`` naming what is wrong."""
    check_identifiers(model=raw.model, tenant=raw.tenant, request_id=raw.request_id, bounds=limits.bounds)
    return GenerateItem(
        messages=_messages(raw, limits),
        model=raw.model.strip(),
        tenant=raw.tenant.strip() or DEFAULT_TENANT,
        request_id=raw.request_id.strip() or str(uuid.uuid4()),
        max_tokens=_max_tokens(raw.max_tokens, limits),
        temperature=_temperature(raw.temperature, limits),
        top_p=_top_p(raw.top_p),
        seed=_seed(raw.seed),
        stop=_stop(raw.stop, limits),
    )


def _messages(raw: RawGeneration, limits: GenerationLimits) -> tuple[Turn, ...]:
    if raw.messages and raw.prompt:
        raise InvalidRequest("send either messages or prompt, not both")
    if not raw.messages:
        if not raw.prompt.strip():
            raise InvalidRequest("messages and prompt are both empty: send one of them")
        turns: tuple[Turn, ...] = (Turn("user", raw.prompt),)
    else:
        turns = tuple(raw.messages)
    if len(turns) > limits.max_messages:
        raise InvalidRequest(f"{len(turns)} messages; the limit is {limits.max_messages}")
    for index, turn in enumerate(turns):
        where = "prompt" if raw.prompt else f"messages[{index}]"
        if turn.role not in ROLES:
            raise InvalidRequest(f"{where}.role is {shown(turn.role)}; expected one of {', '.join(ROLES)}")
        if turn.role == "system" and index > 0:
            raise InvalidRequest(f"{where}: a system turn may only come first")
        if not turn.content.strip():
            raise InvalidRequest(f"{where}.content is empty")
    if turns[-1].role != "user":
        raise InvalidRequest(f"the last message is the {turns[-1].role}'s; it must be the user's")
    chars = sum(len(turn.content) for turn in turns)
    if chars > limits.max_chars:
        raise InvalidRequest(f"the messages have {chars} characters; the limit is {limits.max_chars}")
    return turns


def _max_tokens(value: int | None, limits: GenerationLimits) -> int:
    if value is None:
        return limits.default_max_tokens
    if not 1 <= value <= limits.max_tokens:
        raise InvalidRequest(f"max_tokens is {value}; it must be between 1 and {limits.max_tokens}")
    return value


def _temperature(value: float | None, limits: GenerationLimits) -> float:
    if value is None:
        return 0.0
    if not math.isfinite(value) or not 0 <= value <= limits.max_temperature:
        raise InvalidRequest(f"temperature is {value}; it must be between 0 (greedy) and {limits.max_temperature}")
    return value


def _top_p(value: float | None) -> float:
    if value is None:
        return 1.0
    if not math.isfinite(value) or not 0 < value <= 1:
        raise InvalidRequest(f"top_p is {value}; it must be in (0, 1]")
    return value


def _seed(value: int | None) -> int | None:
    if value is not None and value < 0:
        raise InvalidRequest(f"seed is {value}; it must be >= 0")
    return value


def _stop(values: Sequence[str], limits: GenerationLimits) -> tuple[str, ...]:
    if len(values) > limits.max_stop:
        raise InvalidRequest(f"{len(values)} stop strings; the limit is {limits.max_stop}")
    for index, value in enumerate(values):
        if not value:
            raise InvalidRequest(f"stop[{index}] is empty")
        if len(value) > limits.max_stop_chars:
            raise InvalidRequest(f"stop[{index}] has {len(value)} characters; the limit is {limits.max_stop_chars}")
    return tuple(values)


@dataclass(frozen=True, slots=True)
class Chunk:
    """One piece of a generation from the model backend: new text, and in the last one the finish
    reason (empty before). Token counts are the totals so far."""

    text: str
    finish_reason: str = ""
    prompt_tokens: int = 0
    completion_tokens: int = 0

    @property
    def final(self) -> bool:
        return bool(self.finish_reason)


@dataclass(frozen=True, slots=True)
class ServedChunk:
    """A chunk with the version that generates it (champion or canary, after any fallback)."""

    chunk: Chunk
    model_name: str
    model_version: int
    route: str


@dataclass(slots=True)
class GenerationClock:
    """Times one generation from the backend call: time to first token and the decoding rate."""

    started: float
    first_token_at: float | None = None
    last_token_at: float | None = None

    def saw_text(self, now: float) -> None:
        if self.first_token_at is None:
            self.first_token_at = now
        self.last_token_at = now

    @property
    def ttft_s(self) -> float | None:
        return None if self.first_token_at is None else self.first_token_at - self.started

    def tokens_per_s(self, completion_tokens: int) -> float | None:
        """(completion tokens - 1) / (last token - first token): the first token's time is the
        prompt's, counted in TTFT; None below two tokens or without a measurable span."""
        if self.first_token_at is None or self.last_token_at is None or completion_tokens < 2:
            return None
        span = self.last_token_at - self.first_token_at
        return (completion_tokens - 1) / span if span > 0 else None


@dataclass(frozen=True, slots=True)
class ServedGeneration:
    """A finished (or cancelled) generation, as the inference log records it."""

    item: GenerateItem
    output: str
    finish_reason: str
    prompt_tokens: int
    completion_tokens: int
    model_name: str
    model_version: int
    route: str
    ttft_s: float | None = None
    tokens_per_s: float | None = None

"""The feedback flywheel: a served request plus its true label becomes a labelled record; a served
generation plus a corrected answer becomes an instruction example, and answers compared by feedback
(a thumbs-down with its correction, two differently rated answers to one prompt) become preference
pairs. Pure functions over already redacted values."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, replace

from llmops_ingestion.domain.instructions import InstructionInput, Turn, instruction_dedup_key
from llmops_ingestion.domain.validation import ROLE_ASSISTANT, ROLE_USER
from llmops_models.kinds.causal_lm.answers import THUMBS_DOWN_MAX_RATING, normalize_answer
from llmops_models.snapshots import PREFERENCE_FROM_CORRECTION, PREFERENCE_FROM_RATINGS

FEEDBACK_SOURCE = "feedback"


@dataclass(frozen=True, slots=True)
class ServedRequest:
    """What ingestion remembers of a logged inference (text already redacted)."""

    request_id: str
    tenant: str
    text: str
    model_name: str
    model_version: int
    predicted_label: str


@dataclass(frozen=True, slots=True)
class LabelledFeedback:
    """A record to curate, derived from feedback on a served request."""

    tenant: str
    source: str
    text: str
    label: str
    record_id: str
    metadata: dict[str, str]


def record_from_feedback(request: ServedRequest, *, true_label: str) -> LabelledFeedback:
    """The labelled record for ``request``; its id derives from the request id, so feedback
    given twice for one request yields one record."""
    return LabelledFeedback(
        tenant=request.tenant,
        source=FEEDBACK_SOURCE,
        text=request.text,
        label=true_label,
        record_id=f"feedback-{request.request_id}",
        metadata={
            "request_id": request.request_id,
            "model_name": request.model_name,
            "model_version": str(request.model_version),
            "predicted_label": request.predicted_label,
        },
    )


# --- generations: corrected answers and preference pairs (issue 16) ------------------------------

CORRECTION = PREFERENCE_FROM_CORRECTION
RATINGS = PREFERENCE_FROM_RATINGS


@dataclass(frozen=True, slots=True)
class ServedGeneration:
    """What ingestion remembers of a logged generation (every text normalised and redacted), and
    the feedback joined to it so far: the first rating and the first corrected answer win, as the
    first true label of a classification does."""

    request_id: str
    tenant: str
    model_name: str
    model_version: int
    prompt: tuple[Turn, ...]
    """The conversation up to and including its last user turn (empty when it has none)."""
    output: str
    rating: int | None = None
    corrected_answer: str | None = None

    @property
    def prompt_json(self) -> str:
        """The prompt as a JSON array of ``{"role", "content"}`` (no whitespace, UTF-8), as an
        instruction example's ``messages_json``."""
        return json.dumps([turn.as_dict() for turn in self.prompt], separators=(",", ":"), ensure_ascii=False)

    @property
    def prompt_key(self) -> str:
        """Equal for two generations whose prompts read the same (whitespace and case aside)."""
        return instruction_dedup_key(self.prompt)

    def with_feedback(self, *, rating: int | None, corrected_answer: str | None) -> ServedGeneration:
        """This generation with feedback added where it had none."""
        return replace(
            self,
            rating=self.rating if self.rating is not None else rating,
            corrected_answer=self.corrected_answer if self.corrected_answer is not None else corrected_answer,
        )


@dataclass(frozen=True, slots=True)
class PreferencePair:
    """One chosen/rejected pair of answers to a redacted prompt (a row of a snapshot's preference
    file, less its split, which the snapshot computes from ``split_key`` with ``split_of``)."""

    pair_id: str
    tenant: str
    messages_json: str
    chosen: str
    rejected: str
    source: str
    split_key: str


def prompt_of(turns: Sequence[Turn]) -> tuple[Turn, ...]:
    """The turns up to and including the last user turn: what the model answered."""
    for index in range(len(turns) - 1, -1, -1):
        if turns[index].role == ROLE_USER:
            return tuple(turns[: index + 1])
    return ()


def correction_record_id(request_id: str) -> str:
    """The record id of the instruction example a corrected answer makes (tenant-scoped on curation):
    derived from the request id, so a correction delivered twice makes one example."""
    return f"feedback-{request_id}"


def instruction_from_correction(generation: ServedGeneration) -> InstructionInput:
    """The instruction example a corrected answer makes: the redacted prompt, then the corrected
    answer as the final assistant turn, ``source=feedback``."""
    if generation.corrected_answer is None:
        raise ValueError(f"generation {generation.request_id} has no corrected answer")
    metadata = {
        "request_id": generation.request_id,
        "model_name": generation.model_name,
        "model_version": str(generation.model_version),
    }
    if generation.rating is not None:
        metadata["rating"] = str(generation.rating)
    return InstructionInput(
        tenant=generation.tenant,
        source=FEEDBACK_SOURCE,
        turns=(*generation.prompt, Turn(ROLE_ASSISTANT, generation.corrected_answer)),
        record_id=correction_record_id(generation.request_id),
        metadata=metadata,
    )


def _different_answers(first: str, second: str) -> bool:
    """Two answers a preference can be learnt from: both said something, and not the same thing."""
    return bool(first.strip()) and bool(second.strip()) and normalize_answer(first) != normalize_answer(second)


def correction_pair(generation: ServedGeneration) -> PreferencePair | None:
    """A thumbs-down answer with its correction: the correction chosen, the model's answer rejected.
    In the split of the instruction example the correction makes, so a held-out prompt stays held out."""
    rating, corrected = generation.rating, generation.corrected_answer
    if rating is None or rating > THUMBS_DOWN_MAX_RATING or corrected is None or not generation.prompt:
        return None
    if not _different_answers(corrected, generation.output):
        return None
    return PreferencePair(
        pair_id=f"{generation.tenant}/{CORRECTION}-{generation.request_id}",
        tenant=generation.tenant,
        messages_json=generation.prompt_json,
        chosen=corrected,
        rejected=generation.output,
        source=CORRECTION,
        split_key=f"{generation.tenant}/{correction_record_id(generation.request_id)}",
    )


def rating_pair(first: ServedGeneration, second: ServedGeneration) -> PreferencePair | None:
    """Two rated answers of one tenant to the same prompt with different ratings: the higher rating
    chosen. The id derives from both request ids (in either order), so a pair is made once; the
    split from the prompt, so every pair of one prompt lands in the same split."""
    if first.request_id == second.request_id or first.tenant != second.tenant or not first.prompt:
        return None
    if first.rating is None or second.rating is None or first.rating == second.rating:
        return None
    if first.prompt_key != second.prompt_key or not _different_answers(first.output, second.output):
        return None
    chosen, rejected = (first, second) if first.rating > second.rating else (second, first)
    earlier, later = sorted((first, second), key=lambda generation: generation.request_id)
    ids = f"{earlier.request_id}\x1f{later.request_id}"
    return PreferencePair(
        pair_id=f"{first.tenant}/{RATINGS}-{hashlib.sha256(ids.encode()).hexdigest()[:32]}",
        tenant=first.tenant,
        messages_json=earlier.prompt_json,  # the prompts read the same; one of them, whatever the order
        chosen=chosen.output,
        rejected=rejected.output,
        source=RATINGS,
        split_key=f"{first.tenant}/prompt-{first.prompt_key}",
    )

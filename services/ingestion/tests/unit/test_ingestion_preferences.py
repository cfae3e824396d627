"""The pure pairing logic of the generative flywheel: which feedback makes an instruction example and
which makes a preference pair, with ids that make a second delivery a no-op."""

from __future__ import annotations

import dataclasses
import json

import pytest

from llmops_ingestion.domain.feedback import (
    CORRECTION,
    RATINGS,
    ServedGeneration,
    correction_pair,
    instruction_from_correction,
    prompt_of,
    rating_pair,
)
from llmops_ingestion.domain.instructions import Turn
from llmops_ingestion.domain.snapshot import split_of
from llmops_models.kinds.causal_lm.answers import THUMBS_DOWN_MAX_RATING, THUMBS_UP_MIN_RATING

PROMPT = (Turn("system", "Be brief."), Turn("user", "How do I freeze my card?"))


def _generation(request_id: str = "req-1", **fields: object) -> ServedGeneration:
    values: dict[str, object] = {
        "request_id": request_id,
        "tenant": "acme",
        "model_name": "support-bot",
        "model_version": 2,
        "prompt": PROMPT,
        "output": "Call us.",
    }
    values.update(fields)
    return ServedGeneration(**values)  # type: ignore[arg-type]


def test_the_prompt_is_the_conversation_up_to_its_last_user_turn() -> None:
    turns = (*PROMPT, Turn("assistant", "partial"))
    assert prompt_of(turns) == PROMPT
    assert prompt_of((Turn("system", "x"),)) == ()


def test_a_corrected_answer_becomes_an_instruction_example_keyed_by_the_request() -> None:
    example = instruction_from_correction(_generation(rating=1, corrected_answer="Open Cards, then Freeze."))
    assert example.source == "feedback" and example.tenant == "acme"
    assert example.turns == (*PROMPT, Turn("assistant", "Open Cards, then Freeze."))
    assert example.record_id == "feedback-req-1"
    assert example.metadata == {"request_id": "req-1", "model_name": "support-bot", "model_version": "2", "rating": "1"}
    with pytest.raises(ValueError, match="no corrected answer"):
        instruction_from_correction(_generation())


def test_a_thumbs_down_answer_with_its_correction_is_a_pair_in_the_examples_split() -> None:
    generation = _generation(rating=THUMBS_DOWN_MAX_RATING, corrected_answer="Open Cards, then Freeze.")
    pair = correction_pair(generation)
    assert pair is not None
    assert (pair.chosen, pair.rejected, pair.source) == ("Open Cards, then Freeze.", "Call us.", CORRECTION)
    assert json.loads(pair.messages_json) == [turn.as_dict() for turn in PROMPT]
    assert pair.pair_id == "acme/correction-req-1" == correction_pair(generation).pair_id  # type: ignore[union-attr]
    # The pair and the example the correction makes share a split: a held-out prompt stays held out.
    assert split_of(pair.split_key) == split_of("acme/feedback-req-1")


@pytest.mark.parametrize(
    "fields",
    [
        {"rating": THUMBS_DOWN_MAX_RATING + 1, "corrected_answer": "Open Cards."},  # not a thumbs-down
        {"rating": None, "corrected_answer": "Open Cards."},  # no rating at all
        {"rating": 1, "corrected_answer": None},  # a thumbs-down alone
        {"rating": 1, "corrected_answer": " call US "},  # the correction says what the model said
        {"rating": 1, "corrected_answer": "Open Cards.", "output": "  "},  # nothing was answered
        {"rating": 1, "corrected_answer": "Open Cards.", "prompt": ()},  # no user turn to answer
    ],
)
def test_no_correction_pair_without_a_thumbs_down_and_two_different_answers(fields: dict[str, object]) -> None:
    assert correction_pair(_generation(**fields)) is None  # type: ignore[arg-type]


def test_two_differently_rated_answers_to_one_prompt_are_a_pair_whichever_came_first() -> None:
    good = _generation("req-a", rating=THUMBS_UP_MIN_RATING, output="Open Cards, then Freeze.")
    bad = _generation(
        "req-b", rating=2, prompt=(Turn("system", "be  BRIEF."), Turn("user", "how do i freeze my card?"))
    )
    pair = rating_pair(good, bad)
    assert pair is not None and pair == rating_pair(bad, good)
    assert (pair.chosen, pair.rejected, pair.source) == ("Open Cards, then Freeze.", "Call us.", RATINGS)
    assert pair.pair_id.startswith("acme/ratings-")
    assert pair.split_key == f"acme/prompt-{good.prompt_key}"  # every pair of one prompt in one split


@pytest.mark.parametrize(
    "other",
    [
        {"request_id": "req-a"},  # the same request
        {"rating": 5},  # the same rating
        {"rating": None},  # not rated
        {"tenant": "globex"},  # another tenant's traffic
        {"prompt": (Turn("user", "How do I close my account?"),)},  # another prompt
        {"output": "Open Cards, then Freeze!"},  # the same answer, punctuation aside
    ],
)
def test_no_rating_pair_unless_one_tenant_rated_two_answers_to_one_prompt_differently(
    other: dict[str, object],
) -> None:
    first = _generation("req-a", rating=5, output="Open Cards, then Freeze.")
    second = dataclasses.replace(_generation("req-b", rating=1), **other)  # type: ignore[arg-type]
    assert rating_pair(first, second) is None


def test_feedback_joins_a_generation_first_come_first_kept() -> None:
    generation = _generation().with_feedback(rating=2, corrected_answer=None)
    generation = generation.with_feedback(rating=5, corrected_answer="Open Cards.")
    assert (generation.rating, generation.corrected_answer) == (2, "Open Cards.")
    assert generation.with_feedback(rating=None, corrected_answer="Other.").corrected_answer == "Open Cards."

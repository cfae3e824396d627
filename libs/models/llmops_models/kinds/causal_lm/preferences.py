"""Preference pairs of the causal_lm kind: a prompt and two answers to it, the ``chosen`` one
preferred to the ``rejected`` one (a user's correction over the model's thumbs-down answer, or the
better rated of two answers). Ingestion writes them into instructions snapshots
(``preferences-<split>.parquet``); fine-tuning trains on them (DPO) and the evaluation gate
scores on them (win rate, preference accuracy). Pure: no torch here (``logprobs`` has that side).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from llmops_models.kinds.causal_lm.answers import normalize_answer
from llmops_models.kinds.causal_lm.conversations import InvalidConversation, parse_messages, prompt_turns

PAIR_ID_COLUMN = "pair_id"
PROMPT_COLUMN = "messages_json"
CHOSEN_COLUMN = "chosen"
REJECTED_COLUMN = "rejected"


@dataclass(frozen=True, slots=True)
class PreferencePair:
    """A prompt (the turns up to and including the last user turn) and two answers to it."""

    pair_id: str
    prompt: list[dict[str, str]]
    chosen: str
    rejected: str
    source: str = ""
    """``correction`` or ``ratings`` (how ingestion made it), for slices."""


def parse_pair(row: Mapping[Any, Any]) -> PreferencePair:
    """A pair from a row of a preferences file; ``InvalidConversation`` (saying why) for a row no
    model can learn from or be judged on: an unreadable prompt, an empty answer, or two answers
    that are the same after normalisation (no preference between them)."""
    pair_id = str(row.get(PAIR_ID_COLUMN) or "")
    chosen, rejected = row.get(CHOSEN_COLUMN), row.get(REJECTED_COLUMN)
    if not pair_id:
        raise InvalidConversation("the pair has no pair_id")
    if not isinstance(chosen, str) or not chosen.strip() or not isinstance(rejected, str) or not rejected.strip():
        raise InvalidConversation("chosen and rejected must both be non-empty answers")
    if normalize_answer(chosen) == normalize_answer(rejected):
        raise InvalidConversation("chosen and rejected are the same answer")
    raw = row.get(PROMPT_COLUMN)
    try:
        turns = json.loads(raw) if isinstance(raw, str) else None
    except ValueError as error:
        raise InvalidConversation(f"messages_json is not JSON: {error}") from error
    if not isinstance(turns, list):
        raise InvalidConversation("messages_json is not a JSON array of turns")
    # The prompt plus an answer must be a conversation the trainer reads like any other.
    messages = parse_messages(json.dumps([*turns, {"role": "assistant", "content": chosen}]))
    prompt = prompt_turns(messages)
    source = row.get("source")
    return PreferencePair(
        pair_id=pair_id,
        prompt=prompt,
        chosen=chosen,
        rejected=rejected,
        source=source if isinstance(source, str) else "",
    )


def parse_pairs(rows: Iterable[Mapping[Any, Any]]) -> tuple[list[PreferencePair], list[str]]:
    """Every readable pair (the first of each ``pair_id``), and one ``"<pair_id>: why"`` per row left out."""
    pairs: list[PreferencePair] = []
    seen: set[str] = set()
    invalid: list[str] = []
    for row in rows:
        try:
            pair = parse_pair(row)
        except InvalidConversation as error:
            invalid.append(f"{row.get(PAIR_ID_COLUMN)}: {error}")
            continue
        if pair.pair_id in seen:
            continue  # the same feedback delivered twice: one pair
        seen.add(pair.pair_id)
        pairs.append(pair)
    return pairs, invalid

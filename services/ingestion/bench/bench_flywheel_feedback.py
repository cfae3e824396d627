"""The feedback flywheel benchmark (``make bench``, benchmark ``flywheel``; issue 16), stage 2 of 4:
users' feedback on the first adapter's answers, turned into training data by ingestion's own code.

For every shifted prompt version 1 answered (``served.json`` of stage 1), a simulated user who
knows the true intent gives feedback: a wrong answer gets a thumbs-down (rating 1) and the true
intent as the corrected answer; a right one a thumbs-up and nothing else. Ingestion's pure domain
then does what its handler does with a logged generation and its feedback
(``handlers._on_generation`` / ``_join_generation``): every turn and the corrected answer
normalised and redacted (the real ``Redactor``, ingestion's settings), the generation remembered
as a ``ServedGeneration``, the correction checked (``check_corrected_answer``, ``check_turns``),
turned into an instruction example (``instruction_from_correction`` then ``curate_instructions``:
``source=feedback``) and into a preference pair (``correction_pair``: the correction chosen, the
model's answer rejected, ``source=correction``).

What differs from the service, and why: no broker, SQLite state or Feast (pure functions, no
de-duplication across events: every prompt here is distinct); no token count of the example
(needs the tokenizer; intent names are a few tokens); and the **split** is the plan's, not
``split_of`` over the record id: corrections and pairs of training prompts go to ``train``, pairs
of held-out prompts to ``test``, so the held-out set is fixed and of a known size. The corrected
examples of held-out prompts are not kept: the held-out prompts are in the test split already,
labelled, for every version alike (stage 3).

Writes ``feedback.json`` (``examples``: snapshot rows; ``pairs``: rows with ``PREFERENCE_COLUMNS``)
in ``LLMOPS_BENCH_FLYWHEEL_DIR`` (default var/bench/flywheel). Prints one JSON object.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[3]
DIR_ENV = "LLMOPS_BENCH_FLYWHEEL_DIR"
THUMBS_DOWN, THUMBS_UP = 1, 5
TENANT = "bench"


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def work_dir() -> Path:
    return Path(os.environ.get(DIR_ENV, REPO_ROOT / "var" / "bench" / "flywheel")).resolve()


def run() -> dict[str, Any] | None:
    work = work_dir()
    if not (work / "served.json").exists():
        print(f"SKIP: {work / 'served.json'} not found (stage 1, bench_flywheel_before.py, writes it)")
        return None

    from llmops_ingestion.domain.feedback import (
        ServedGeneration,
        correction_pair,
        instruction_from_correction,
        prompt_of,
    )
    from llmops_ingestion.domain.instructions import Turn, curate_instructions, normalise_turn
    from llmops_ingestion.domain.validation import ValidationRules, check_corrected_answer, check_turns
    from llmops_ingestion.settings import IngestionSettings
    from llmops_models.kinds.causal_lm.answers import THUMBS_DOWN_MAX_RATING, exact_match
    from llmops_models.snapshots import PREFERENCE_COLUMNS
    from llmops_privacy.redaction import Redactor

    began = time.monotonic()
    assert THUMBS_DOWN <= THUMBS_DOWN_MAX_RATING
    document = json.loads((work / "served.json").read_text())
    plan = json.loads((work / "plan.json").read_text())
    settings = IngestionSettings()
    redactor = Redactor(phone_regions=settings.phone_regions, detect_names=settings.redact_names)
    rules = ValidationRules()

    def redact(text: str) -> str:
        return redactor.redact(normalise_turn(text)).text

    examples: list[dict[str, str]] = []
    pairs: list[dict[str, str]] = []
    thumbs_up = refused = 0
    for served in document["served"]:
        turns = tuple(Turn(turn["role"], redact(turn["content"])) for turn in served["messages"])
        generation = ServedGeneration(
            request_id=served["request_id"],
            tenant=TENANT,
            model_name=plan["model_name"],
            model_version=int(document["model_version"]),
            prompt=prompt_of(turns),
            output=redact(served["output"]),
        )
        if exact_match(served["output"], served["expected"]):
            thumbs_up += 1  # a thumbs-up alone makes neither an example nor a pair
            continue
        corrected = normalise_turn(served["expected"])
        if check_corrected_answer(corrected, rules=rules) is not None:
            refused += 1
            continue
        generation = generation.with_feedback(rating=THUMBS_DOWN, corrected_answer=redactor.redact(corrected).text)
        example = curate_instructions([instruction_from_correction(generation)], redact=redactor.redact)[0]
        if check_turns([t.role for t in example.turns], [t.content for t in example.turns], rules=rules) is not None:
            refused += 1
            continue
        split = served["split"]
        if split == "train":
            examples.append(
                {
                    "record_id": example.record_id,
                    "tenant": example.tenant,
                    "source": example.source,
                    "split": split,
                    "text": example.prompt,
                    "label": example.answer,
                    "messages_json": example.messages_json,
                    "output_format_json": example.output_format.to_json(),
                }
            )
        pair = correction_pair(generation)
        if pair is not None:
            pairs.append(
                {
                    "pair_id": pair.pair_id,
                    "messages_json": pair.messages_json,
                    "chosen": pair.chosen,
                    "rejected": pair.rejected,
                    "source": pair.source,
                    "split": split,
                }
            )
    assert all(tuple(row) == PREFERENCE_COLUMNS for row in pairs)
    (work / "feedback.json").write_text(json.dumps({"examples": examples, "pairs": pairs}, indent=1))
    train_pairs = sum(p["split"] == "train" for p in pairs)
    log(
        f"{len(document['served'])} answers: {thumbs_up} thumbs-up, {len(examples)} corrected training examples, "
        f"{train_pairs} training pairs, {len(pairs) - train_pairs} held-out pairs"
    )
    return {
        "stage": "feedback",
        "feedback_answers": len(document["served"]),
        "feedback_thumbs_up": thumbs_up,
        "feedback_refused": refused,
        "corrections": len(examples),
        "training_pairs": train_pairs,
        "held_out_pairs_built": len(pairs) - train_pairs,
        "feedback_example_pair": pairs[0] if pairs else None,
        "feedback_stage_seconds": round(time.monotonic() - began, 1),
    }


if __name__ == "__main__":
    summary = run()
    if summary is not None:
        print(json.dumps(summary, indent=2))

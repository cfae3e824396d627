"""The conversations a generative evaluation runs on: the test split of an instructions snapshot
(a seeded sample above the bound), with the training split's vocabulary for the OOV descriptor."""

from __future__ import annotations

import logging

from llmops_evaluation.domain.generation import GenerativeTestSet, InstructionExample, words
from llmops_evaluation.errors import EvaluationRejected, ModelUnavailable
from llmops_models.kinds.causal_lm.conversations import (
    INSTRUCTIONS_CONTENT,
    MESSAGES_COLUMN,
    OUTPUT_FORMAT_COLUMN,
    InvalidConversation,
    parse_messages,
    parse_output_format,
    prompt_turns,
    snapshot_content,
)
from llmops_models.kinds.causal_lm.preferences import PreferencePair, parse_pairs
from llmops_models.snapshots import SnapshotReader
from llmops_storage import ArtifactStore

logger = logging.getLogger(__name__)
SLICE_COLUMNS = ("tenant", "source")


def load_instruction_test_set(
    store: ArtifactStore, dataset_id: str, *, max_examples: int, seed: int
) -> GenerativeTestSet:
    """The test split of ``datasets/<dataset_id>/``, an instructions snapshot. Rows whose
    ``messages_json`` cannot be read are left out (counted); ``EvaluationRejected`` when the
    snapshot is missing or holds no conversations."""
    snapshots = SnapshotReader(store)
    if not snapshots.is_complete(dataset_id):
        raise ModelUnavailable("dataset_missing", f"snapshot {dataset_id!r} does not exist")
    if snapshot_content(snapshots.manifest(dataset_id)) != INSTRUCTIONS_CONTENT:
        raise EvaluationRejected(
            "dataset_content_mismatch",
            f"snapshot {dataset_id} holds labelled texts; a causal_lm model is evaluated on an instructions snapshot",
        )
    frame = snapshots.frame(dataset_id)
    if MESSAGES_COLUMN not in frame.columns:
        raise EvaluationRejected("dataset_content_mismatch", f"snapshot {dataset_id} has no {MESSAGES_COLUMN} column")
    test = frame[frame["split"] == "test"]
    if len(test) > max_examples:
        test = test.sample(n=max_examples, random_state=seed).sort_values("record_id", kind="stable")
    examples: list[InstructionExample] = []
    slices: dict[str, list[str]] = {column: [] for column in SLICE_COLUMNS if column in test.columns}
    invalid_rows = invalid_formats = 0
    for row in test.to_dict("records"):
        try:
            messages = parse_messages(row[MESSAGES_COLUMN])
        except InvalidConversation:
            invalid_rows += 1
            continue
        output_format = parse_output_format(row.get(OUTPUT_FORMAT_COLUMN))
        invalid_formats += output_format is None
        examples.append(
            InstructionExample(
                record_id=str(row.get("record_id", len(examples))),
                messages=prompt_turns(messages),
                reference=messages[-1]["content"],
                output_format=output_format,
            )
        )
        for column in slices:
            value = row.get(column)
            slices[column].append("unknown" if value is None or value != value else str(value))
    if invalid_rows or invalid_formats:
        logger.warning(
            "test rows left out or without a readable output format",
            extra={"dataset_id": dataset_id, "invalid_rows": invalid_rows, "invalid_formats": invalid_formats},
        )
    train = frame[frame["split"] == "train"]
    vocabulary = frozenset(
        word
        for column in ("text", "label")
        if column in train.columns
        for value in train[column].astype(str)
        for word in words(value)
    )
    return GenerativeTestSet(
        examples=examples,
        origin=f"test split of {dataset_id}",
        slices=slices,
        vocabulary=vocabulary,
        invalid_rows=invalid_rows,
        invalid_formats=invalid_formats,
    )


def load_preference_pairs(
    store: ArtifactStore, dataset_id: str, *, max_pairs: int, seed: int
) -> tuple[list[PreferencePair], int]:
    """The test split's preference pairs of ``datasets/<dataset_id>/`` (a seeded sample of
    ``max_pairs`` beyond it, ordered by ``pair_id``), and how many rows could not be read (left out).
    No pairs for a snapshot without them."""
    if max_pairs == 0:
        return [], 0
    frame = SnapshotReader(store).preferences(dataset_id, split="test")
    if len(frame) > max_pairs:
        frame = frame.sample(n=max_pairs, random_state=seed).sort_values("pair_id", kind="stable")
    pairs, invalid = parse_pairs(frame.to_dict("records"))
    if invalid:
        logger.warning(
            "held-out preference pairs left out",
            extra={"dataset_id": dataset_id, "pairs": len(invalid), "first": invalid[:3]},
        )
    return pairs, len(invalid)

"""Tiny instructions snapshots for the causal_lm tests: BANKING-like customer messages whose
answer is the intent's name, in the contract ingestion writes (manifest ``content:
"instructions"``; rows ``record_id, tenant, source, split, text, label, messages_json,
output_format_json``)."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from typing import Any

import pandas as pd

from llmops_models.snapshots import publish_snapshot, split_file_name
from llmops_storage import ArtifactStore

INTENTS = {
    "card_arrival": [
        "Where is my new card?",
        "My card has not arrived yet.",
        "When will my card be delivered?",
        "The card you sent never came.",
        "Still waiting for my bank card.",
    ],
    "exchange_rate": [
        "What exchange rate do you use?",
        "Is your currency rate fair?",
        "How is the FX rate set?",
        "Which rate applies for euros?",
        "Why is the exchange rate so bad?",
    ],
    "lost_card": [
        "I lost my card.",
        "My card was stolen yesterday.",
        "I cannot find my bank card.",
        "Someone took my card, block it.",
        "I lost my card on holiday.",
    ],
    "top_up": [
        "How do I top up my account?",
        "My top-up did not go through.",
        "Can I add money with a transfer?",
        "Top up failed twice today.",
        "Where do I add funds?",
    ],
}
SYSTEM_PROMPT = "You classify customer messages of a bank. Answer with the intent name only."
LABELS = sorted(INTENTS)


def instruction_rows(per_intent: int = 10, *, system_prompt: str | None = SYSTEM_PROMPT) -> list[dict[str, Any]]:
    """``per_intent`` conversations per intent: 60% train, 20% validation, 20% test."""
    rows = []
    output_format = json.dumps({"labels": LABELS, "json_schema": None})
    for intent, phrases in INTENTS.items():
        for i in range(per_intent):
            text = phrases[i % len(phrases)] + ("" if i < len(phrases) else f" (ref {i})")
            split = "train" if i < per_intent * 0.6 else ("validation" if i < per_intent * 0.8 else "test")
            messages = ([{"role": "system", "content": system_prompt}] if system_prompt else []) + [
                {"role": "user", "content": text},
                {"role": "assistant", "content": intent},
            ]
            rows.append(
                {
                    "record_id": f"{intent}-{i:03d}",
                    "tenant": "acme" if i % 2 else "globex",
                    "source": "crm",
                    "split": split,
                    "text": text,
                    "label": intent,
                    "messages_json": json.dumps(messages),
                    "output_format_json": output_format,
                }
            )
    return rows


def write_instructions_snapshot(
    store: ArtifactStore, rows: list[dict[str, Any]], *, dataset_id: str, created_at: datetime | None = None
) -> str:
    """Publish ``rows`` as an instructions snapshot with the kernel's ``publish_snapshot``."""
    frame = pd.DataFrame(rows)
    ordered = frame.sort_values("record_id").astype(str).values.tolist()
    manifest = {
        "dataset_id": dataset_id,
        "content": "instructions",
        "created_at": (created_at or datetime.now(UTC)).isoformat(),
        "row_count": len(frame),
        "content_hash": "sha256:" + hashlib.sha256(json.dumps(ordered, ensure_ascii=False).encode()).hexdigest(),
        "split_counts": {str(k): int(v) for k, v in sorted(frame["split"].value_counts().items())},
        "files": {str(split): split_file_name(str(split)) for split in sorted(frame["split"].unique())},
    }
    return publish_snapshot(store, frame, manifest)[0]

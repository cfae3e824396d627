"""What deploying a LoRA adapter version (model kind ``causal_lm``) decides, without I/O: where its
folder goes, whether it fits the base the Triton model serves, and whether its smoke-test
generations look sane."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llmops_models.layout import check_name

BASE_HASH_KEY = "base_model_weights_hash"
"""The key of ``training_config.json`` naming the base weights an adapter was trained on."""

ANSWERED = frozenset({"stop", "length"})
"""Finish reasons of a generation that ended normally (``cancelled`` and ``error`` did not)."""


def adapter_folder(adapters_dir: Path, name: str) -> Path:
    """``<adapters_dir>/<name>``; ``InvalidName`` for a name that could climb out of the folder or
    hide in it (the kernel's name check, the same for every path made of a name)."""
    return adapters_dir / check_name(name, what="adapter name")


def base_model_problem(training_config: Mapping[str, Any], served_hash: str) -> str | None:
    """Why the adapter must not be applied to the base with ``served_hash`` (None: it fits)."""
    trained_on = str(training_config.get(BASE_HASH_KEY) or "")
    base = training_config.get("base_model", "?")
    if not trained_on:
        return f"training_config.json names no {BASE_HASH_KEY}: the base it was trained on is unknown"
    if trained_on != served_hash:
        return f"trained on base model {base!r} with weights {trained_on}; the Triton model serves {served_hash}"
    return None


@dataclass(frozen=True, slots=True)
class SmokeGeneration:
    """One smoke-test generation as streamed back (or the error that ended it)."""

    text: str = ""
    finish_reason: str = ""
    completion_tokens: int = 0
    chunks: int = 0
    """Responses received, the final one included."""
    error: str = ""


def generation_problems(generations: Sequence[SmokeGeneration], *, max_tokens: int) -> list[str]:
    """Readable problems with the smoke-test generations (empty when the adapter looks sane): every
    stream must end normally within ``max_tokens``, and not every answer may be empty (an adapter
    that breaks the base ends each answer at once)."""
    if not generations:
        return ["no smoke-test generation was run"]
    problems: list[str] = []
    for index, generation in enumerate(generations):
        where = f"generation {index}"
        if generation.error:
            problems.append(f"{where}: {generation.error}")
        elif generation.finish_reason not in ANSWERED:
            problems.append(f"{where}: finished with {generation.finish_reason or 'no finish reason'!r}")
        elif generation.completion_tokens > max_tokens:
            problems.append(f"{where}: {generation.completion_tokens} tokens, more than max_tokens {max_tokens}")
    if not problems and not any(g.text.strip() for g in generations):
        problems.append(f"every one of the {len(generations)} answers is empty")
    return problems

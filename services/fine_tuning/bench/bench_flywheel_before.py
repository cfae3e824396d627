"""The feedback flywheel benchmark (``make bench``, benchmark ``flywheel``; issue 16), stage 1 of 4:
the adapter **before** feedback, and what it answers to prompts it never learned.

1. Picks, with a fixed seed, BANKING77 intents the assistant learns (*known*) and intents it never
   sees in training (*shifted*: the "new kinds of questions" of the generative demo), and the
   prompts of every later stage: known training and validation conversations (BANKING77's train
   file), shifted training prompts (train file: answered, then corrected by users), held-out
   prompts of both (BANKING77's test file: judged, never trained on). -> ``plan.json``
2. Trains an SFT adapter on the known intents only, through the fine-tuning service itself
   (``train_offline`` on an ``instructions`` snapshot, the ``causal-lm`` defaults of
   ``deploy/training/defaults.yaml``): version 1 of the model ``flywheel``.
3. Loads version 1 from the artifact store as a server would (hashes verified) and answers every
   shifted prompt, training and held-out, greedily: the answers users thumb down and correct.
   -> ``served.json``

The work folder (``LLMOPS_BENCH_FLYWHEEL_DIR``) is shared by the four stages; its ``store/`` is the
artifact store (snapshots, model versions). Stage 2 is
``services/ingestion/bench/bench_flywheel_feedback.py``. Prints one JSON object (or ``SKIP: why``).

Environment (sizes: the defaults keep the whole benchmark around ten minutes on two cores):
  LLMOPS_SHARED_DATA                            folder holding ``banking77/{train,test}.csv``
  LLMOPS_BENCH_FLYWHEEL_DIR                     work folder (default: var/bench/flywheel; emptied here)
  LLMOPS_BENCH_FLYWHEEL_KNOWN_INTENTS           intents the first adapter learns (12)
  LLMOPS_BENCH_FLYWHEEL_SHIFTED_INTENTS         intents only the shifted traffic asks about (4)
  LLMOPS_BENCH_FLYWHEEL_TRAIN_PER_INTENT        training conversations per known intent (30)
  LLMOPS_BENCH_FLYWHEEL_VALIDATION_PER_INTENT   validation conversations per known intent (2)
  LLMOPS_BENCH_FLYWHEEL_CORRECTIONS_PER_INTENT  shifted training prompts per shifted intent (12)
  LLMOPS_BENCH_FLYWHEEL_HELD_OUT_PER_INTENT     held-out prompts per intent, known and shifted (8)
  LLMOPS_BENCH_FLYWHEEL_SEED                    which intents and prompts (7)
  LLMOPS_BENCH_FLYWHEEL_EPOCHS                  SFT epochs (default: the defaults file's)
  LLMOPS_BENCH_FLYWHEEL_TINY                    1: rank-4 LoRA on two projections, 64 tokens (smoke test)
  LLMOPS_BENCH_THREADS                          torch threads (2)
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[3]
DIR_ENV = "LLMOPS_BENCH_FLYWHEEL_DIR"
MODEL_NAME = "flywheel"
BEFORE_DATASET = "flywheel-before"
SYSTEM_PROMPT = "You are a bank's support assistant. Answer with the intent of the customer's message."
MAX_NEW_TOKENS = 16  # the longest BANKING77 intent name is 12 tokens
GENERATION_BATCH = 32


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def show_training_progress() -> None:
    """The trainer's structured log lines (``training progressed`` with step, loss, speed) on stderr,
    where the benchmark relays them as status."""

    class Line(logging.Formatter):
        def format(self, record: logging.LogRecord) -> str:
            keys = ("step", "total_steps", "loss", "examples_per_second", "eta_seconds", "examples", "pairs")
            fields = " ".join(
                f"{key}={value:.4g}" if isinstance(value, float) else f"{key}={value}"
                for key in keys
                if (value := getattr(record, key, None)) is not None
            )
            return f"{record.getMessage()} {fields}".rstrip()

    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(Line())
    trainer_log = logging.getLogger("llmops_fine_tuning")
    trainer_log.addHandler(handler)
    trainer_log.setLevel(logging.INFO)
    trainer_log.propagate = False


def setting(name: str, default: int) -> int:
    value = int(os.environ.get(f"LLMOPS_BENCH_FLYWHEEL_{name}", default))
    if value < 1:
        raise SystemExit(f"LLMOPS_BENCH_FLYWHEEL_{name} must be at least 1, not {value}")
    return value


def work_dir() -> Path:
    return Path(os.environ.get(DIR_ENV, REPO_ROOT / "var" / "bench" / "flywheel")).resolve()


def data_dir() -> Path:
    return Path(os.environ.get("LLMOPS_SHARED_DATA", REPO_ROOT / ".." / "shared" / "data")).resolve() / "banking77"


def conversation(text: str, intent: str | None = None) -> list[dict[str, str]]:
    turns = [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": text}]
    return turns + ([{"role": "assistant", "content": intent}] if intent is not None else [])


def make_plan(train: list[tuple[str, str]], test: list[tuple[str, str]]) -> dict[str, Any]:
    """Which intents are known and shifted, and every prompt of every stage (seeded, disjoint)."""
    seed = setting("SEED", 7)
    known_n, shifted_n = setting("KNOWN_INTENTS", 12), setting("SHIFTED_INTENTS", 4)
    per_train, per_validation = setting("TRAIN_PER_INTENT", 30), setting("VALIDATION_PER_INTENT", 2)
    per_correction, per_held_out = setting("CORRECTIONS_PER_INTENT", 12), setting("HELD_OUT_PER_INTENT", 8)
    rng = random.Random(seed)
    intents = rng.sample(sorted({intent for _, intent in train}), known_n + shifted_n)
    known, shifted = sorted(intents[:known_n]), sorted(intents[known_n:])

    def texts(rows: list[tuple[str, str]], intent: str) -> list[str]:
        chosen = sorted({text for text, label in rows if label == intent})
        rng.shuffle(chosen)
        return chosen

    plan: dict[str, Any] = {
        "seed": seed,
        "model_name": MODEL_NAME,
        "system_prompt": SYSTEM_PROMPT,
        "max_new_tokens": MAX_NEW_TOKENS,
        "known_intents": known,
        "shifted_intents": shifted,
    }
    rows: dict[str, list[dict[str, str]]] = {
        name: [] for name in ("known_train", "known_validation", "known_test", "shifted_train", "shifted_test")
    }
    drawn = (("known", known, per_train + per_validation), ("shifted", shifted, per_correction))
    for group, names, per_intent in drawn:
        for intent in names:
            pool = texts(train, intent)
            if len(pool) < per_intent:
                raise SystemExit(f"intent {intent} has {len(pool)} training texts; {per_intent} are asked for")
            for i, text in enumerate(pool[:per_intent]):
                split = "train" if group == "shifted" or i < per_train else "validation"
                row = {"id": f"{group}-{split}-{intent}-{i:03d}", "text": text, "intent": intent}
                rows[f"{group}_{split}"].append(row)
    for group, names in (("known", known), ("shifted", shifted)):
        for intent in names:
            for i, text in enumerate(texts(test, intent)[:per_held_out]):
                rows[f"{group}_test"].append({"id": f"{group}-test-{intent}-{i:03d}", "text": text, "intent": intent})
    return {**plan, **rows}


def instruction_frame(rows: list[tuple[dict[str, str], str]], source: str) -> Any:
    """Snapshot rows (the columns ingestion writes) for (plan row, split) pairs."""
    import pandas as pd

    return pd.DataFrame(
        [
            {
                "record_id": f"bench/{row['id']}",
                "tenant": "bench",
                "source": source,
                "split": split,
                "text": row["text"],
                "label": row["intent"],
                "messages_json": json.dumps(conversation(row["text"], row["intent"]), separators=(",", ":")),
                "output_format_json": "",
            }
            for row, split in rows
        ]
    )


def hyperparameters() -> Any:
    from llmops_events.v1.training import Hyperparameters

    epochs = os.environ.get("LLMOPS_BENCH_FLYWHEEL_EPOCHS")
    tiny = os.environ.get("LLMOPS_BENCH_FLYWHEEL_TINY") == "1"
    return Hyperparameters(
        epochs=float(epochs) if epochs else None,
        **({"lora_rank": 4, "target_modules": ["q_proj", "v_proj"], "max_length": 64} if tiny else {}),
    )


def run() -> dict[str, Any] | None:
    folder = data_dir()
    if not (folder / "train.csv").exists() or not (folder / "test.csv").exists():
        print(f"SKIP: BANKING77 not found at {folder} (set LLMOPS_SHARED_DATA to the folder holding banking77/)")
        return None

    from llmops_fine_tuning.adapters.training_loop import flush_subnormal_floats

    flush_subnormal_floats()  # as the service does, before torch starts its threads

    import pandas as pd
    import torch

    from llmops_events.v1.training import TrainingTask
    from llmops_fine_tuning.offline import train_offline
    from llmops_models import ModelRegistry
    from llmops_models.kinds import kind_of
    from llmops_models.kinds.causal_lm.answers import exact_match
    from llmops_models.snapshots import INSTRUCTIONS, write_snapshot
    from llmops_storage import ArtifactStore

    began = time.monotonic()
    show_training_progress()
    threads = int(os.environ.get("LLMOPS_BENCH_THREADS", "2"))
    torch.set_num_threads(threads)
    work = work_dir()
    shutil.rmtree(work, ignore_errors=True)  # every run starts from an empty store
    work.mkdir(parents=True)

    def pairs(name: str) -> list[tuple[str, str]]:
        frame = pd.read_csv(folder / name)
        return list(zip(frame["text"].astype(str), frame["category"].astype(str), strict=True))

    plan = make_plan(pairs("train.csv"), pairs("test.csv"))
    plan["hyperparameters"] = hyperparameters().model_dump(mode="json", exclude_none=True)
    (work / "plan.json").write_text(json.dumps(plan, indent=2))
    log(
        f"known intents {plan['known_intents']}; shifted intents {plan['shifted_intents']}; "
        f"{len(plan['known_train'])} known training conversations, {len(plan['shifted_train'])} shifted training "
        f"prompts, {len(plan['known_test'])} + {len(plan['shifted_test'])} held-out prompts"
    )

    store = ArtifactStore(str(work / "store"))
    frame = instruction_frame(
        [(row, "train") for row in plan["known_train"]]
        + [(row, "validation") for row in plan["known_validation"]]
        + [(row, "test") for row in plan["known_test"]],
        source="banking77",
    )
    write_snapshot(store, frame, dataset_id=BEFORE_DATASET, content=INSTRUCTIONS)
    log(f"training version 1 on {BEFORE_DATASET} (known intents only)")
    trained = time.monotonic()
    completed = asyncio.run(
        train_offline(
            store,
            model_name=MODEL_NAME,
            dataset_id=BEFORE_DATASET,
            hyperparameters=hyperparameters(),
            work_dir=work / "training",
            task=TrainingTask.CAUSAL_LM,
        )
    )
    train_seconds = time.monotonic() - trained
    log(f"version {completed.model_version} trained in {train_seconds:.0f}s: {completed.metrics}")

    # Served: version 1 from the store, as a server loads it, answers the shifted prompts.
    served_rows = [(row, "train") for row in plan["shifted_train"]] + [(row, "test") for row in plan["shifted_test"]]
    with tempfile.TemporaryDirectory(prefix="flywheel-serve-") as scratch:
        manifest = ModelRegistry(store).download_verified(MODEL_NAME, completed.model_version, Path(scratch))
        predictor: Any = kind_of(manifest).load_predictor(Path(scratch), device="cpu")
        answered = time.monotonic()
        generations = predictor.generate(
            [conversation(row["text"]) for row, _ in served_rows],
            max_new_tokens=MAX_NEW_TOKENS,
            batch_size=GENERATION_BATCH,
        )
        answer_seconds = time.monotonic() - answered
    served = [
        {
            "request_id": f"flywheel-{row['id']}",
            "split": split,
            "messages": conversation(row["text"]),
            "output": generation.text,
            "expected": row["intent"],
        }
        for (row, split), generation in zip(served_rows, generations, strict=True)
    ]
    (work / "served.json").write_text(json.dumps({"model_version": completed.model_version, "served": served}))
    right = sum(exact_match(s["output"], s["expected"]) for s in served)
    log(f"version 1 answered {len(served)} shifted prompts in {answer_seconds:.0f}s, {right} of them right")

    return {
        "stage": "before",
        "known_intents": plan["known_intents"],
        "shifted_intents": plan["shifted_intents"],
        "known_training_conversations": len(plan["known_train"]),
        "shifted_training_prompts": len(plan["shifted_train"]),
        "held_out_known_prompts": len(plan["known_test"]),
        "held_out_shifted_prompts": len(plan["shifted_test"]),
        "before_version": completed.model_version,
        "before_train_seconds": round(train_seconds, 1),
        "before_train_examples_per_second": round(completed.metrics.get("train_examples_per_second", 0.0), 2),
        "before_validation_exact_match": completed.metrics.get("exact_match"),
        "before_served_prompts": len(served),
        "before_served_right": right,
        "before_answer_seconds": round(answer_seconds, 1),
        "before_examples_wrong": [s for s in served if not exact_match(s["output"], s["expected"])][:3],
        "before_stage_seconds": round(time.monotonic() - began, 1),
        "threads": threads,
    }


if __name__ == "__main__":
    summary = run()
    if summary is not None:
        print(json.dumps(summary, indent=2))

"""The feedback flywheel benchmark (``make bench``, benchmark ``flywheel``; issue 16), stage 3 of 4:
retraining on the feedback, the way the platform retrains.

The retraining snapshot is what ingestion would cut after the feedback: the known intents'
conversations of stage 1 (same rows, same ids) plus the corrected examples of stage 2
(``source=feedback``, train split); its test split holds every held-out prompt, known and shifted,
with its true intent, the set all three versions are judged on (stage 4). Two snapshots with the
same rows are written:

* ``flywheel-after-sft``: no preference pairs, so the service trains SFT only (DPO off): version 2;
* ``flywheel-after-dpo``: the same rows plus stage 2's preference pairs (training and held-out
  splits), so the service runs SFT and then its own DPO step with the RPO term, as the
  ``causal-lm`` trainer policy of ``deploy/training/defaults.yaml`` configures it (``dpo_*``;
  DPO needs at least ``dpo_min_pairs`` training pairs): version 3.

Both train from the base model with ``train_offline`` (the service, its trainer, the registry),
with the same seed: the SFT phase of version 3 is version 2's, so 3 against 2 is what DPO adds.

Writes ``after.json`` (this summary: the versions, for stage 4). Reads ``plan.json``,
``served.json`` and ``feedback.json`` from ``LLMOPS_BENCH_FLYWHEEL_DIR`` (default
var/bench/flywheel); ``LLMOPS_BENCH_THREADS`` (2). Prints one JSON object.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))  # stage 1's helpers, beside this script

from bench_flywheel_before import (
    hyperparameters,
    instruction_frame,
    log,
    show_training_progress,
    work_dir,
)

SFT_DATASET = "flywheel-after-sft"
DPO_DATASET = "flywheel-after-dpo"


def run() -> dict[str, Any] | None:
    work = work_dir()
    if not (work / "feedback.json").exists():
        print(f"SKIP: {work / 'feedback.json'} not found (stage 2, bench_flywheel_feedback.py, writes it)")
        return None

    from llmops_fine_tuning.adapters.training_loop import flush_subnormal_floats

    flush_subnormal_floats()  # as the service does, before torch starts its threads

    import pandas as pd
    import torch

    from llmops_events.v1.training import TrainingTask
    from llmops_fine_tuning.offline import train_offline
    from llmops_models.snapshots import INSTRUCTIONS, PREFERENCE_COLUMNS, write_snapshot
    from llmops_storage import ArtifactStore

    began = time.monotonic()
    show_training_progress()
    threads = int(os.environ.get("LLMOPS_BENCH_THREADS", "2"))
    torch.set_num_threads(threads)
    plan = json.loads((work / "plan.json").read_text())
    feedback = json.loads((work / "feedback.json").read_text())
    store = ArtifactStore(str(work / "store"))

    known = instruction_frame(
        [(row, "train") for row in plan["known_train"]] + [(row, "validation") for row in plan["known_validation"]],
        source="banking77",
    )
    held_out = instruction_frame(
        [(row, "test") for row in plan["known_test"] + plan["shifted_test"]], source="banking77"
    )
    corrections = pd.DataFrame(feedback["examples"], columns=list(known.columns))
    frame = pd.concat([known, corrections, held_out], ignore_index=True)
    pairs = pd.DataFrame(feedback["pairs"], columns=list(PREFERENCE_COLUMNS))
    write_snapshot(store, frame, dataset_id=SFT_DATASET, content=INSTRUCTIONS)
    write_snapshot(store, frame, dataset_id=DPO_DATASET, content=INSTRUCTIONS, preferences=pairs)
    log(
        f"retraining snapshot: {len(known)} known conversations + {len(corrections)} corrections, "
        f"{len(held_out)} held-out prompts; {len(pairs)} preference pairs (with DPO only)"
    )

    summary: dict[str, Any] = {"stage": "after", "retraining_rows": len(known) + len(corrections)}
    for label, dataset_id in (("sft", SFT_DATASET), ("dpo", DPO_DATASET)):
        log(f"training on {dataset_id}")
        started = time.monotonic()
        completed = asyncio.run(
            train_offline(
                store,
                model_name=plan["model_name"],
                dataset_id=dataset_id,
                hyperparameters=hyperparameters(),
                work_dir=work / "training",
                task=TrainingTask.CAUSAL_LM,
            )
        )
        seconds = time.monotonic() - started
        metrics = completed.metrics
        log(f"version {completed.model_version} ({label}) trained in {seconds:.0f}s: {metrics}")
        summary |= {
            f"{label}_version": completed.model_version,
            f"{label}_train_seconds": round(seconds, 1),
            f"{label}_validation_exact_match": metrics.get("exact_match"),
            f"{label}_dpo_pairs": int(metrics.get("dpo_pairs", 0)),
        }
        if label == "dpo":
            summary |= {
                "dpo_steps": int(metrics.get("dpo_steps", 0)),
                "dpo_phase_seconds": round(metrics.get("dpo_train_seconds", 0.0), 1),
                "dpo_train_logp_margin_before": metrics.get("dpo_train_logp_margin_before"),
                "dpo_train_logp_margin_after": metrics.get("dpo_train_logp_margin_after"),
                "dpo_train_chosen_logp_before": metrics.get("dpo_train_chosen_logp_before"),
                "dpo_train_chosen_logp_after": metrics.get("dpo_train_chosen_logp_after"),
                # DPO's guard: the validation exact match before (SFT) and after DPO, and whether
                # the DPO-tuned adapter was kept or the SFT adapter restored.
                "dpo_guard_sft_exact_match": metrics.get("sft_exact_match"),
                "dpo_guard_dpo_exact_match": metrics.get("dpo_exact_match"),
                "dpo_kept": metrics.get("dpo_kept"),
            }
    summary["dpo_training_pairs_used"] = summary["dpo_dpo_pairs"]
    summary["before_version"] = json.loads((work / "served.json").read_text())["model_version"]
    summary["after_stage_seconds"] = round(time.monotonic() - began, 1)
    (work / "after.json").write_text(json.dumps(summary, indent=2))  # the versions, for stage 4
    return summary


if __name__ == "__main__":
    result = run()
    if result is not None:
        print(json.dumps(result, indent=2))

"""BANKING77 benchmark of the fine-tuning trainer (``make bench``).

Trains on the full BANKING77 training set (10,003 examples, 77 intents) with the service's trainer
and defaults (``deploy/training/defaults.yaml``), or with the full fine-tuning recipe
(``LLMOPS_BENCH_RECIPE=full``: the defaults with trainer ``method: full``, learning rate 5e-5 and 4
epochs), evaluates on the official test set (3,080) and prints one JSON object: test accuracy and
macro-F1, training wall time, examples/s, peak RSS, and the distance to the published anchor
(Casanueva et al. 2020, arXiv 2003.04807: 93.66%).
Target (issue 21): >= 0.937 test accuracy (past the anchor) within 10 minutes of training on a 2-core
CPU; the compass goal is 0.94 in 5 minutes.

Environment:
  LLMOPS_SHARED_DATA     folder holding ``banking77/{train,test}.csv`` (default: ../shared/data
                         relative to the repository root)
  LLMOPS_BENCH_RECIPE    ``defaults`` (LoRA, the service's defaults) or ``full`` (FULL_TRAINER, FULL_HYPERPARAMETERS)
  LLMOPS_BENCH_EPOCHS    override the recipe's epochs
  LLMOPS_BENCH_THREADS   torch threads (default: 2)
  LLMOPS_BENCH_LIMIT     train on the first N examples only (smoke runs)

The test set is scored once, after training; nothing is selected on it. The full recipe was chosen
on a dev split of the training set (10% of each intent, seeded; 1,001 examples): 3 epochs at 5e-5
or 1e-4 0.9432, 4 epochs 0.9462, a head learning rate of 2e-3 0.9352; LoRA's defaults 0.9412.
"""

from __future__ import annotations

import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[3]
ANCHOR_ACCURACY = 0.9366
TARGET_ACCURACY = 0.937
TARGET_TRAIN_SECONDS = 600.0
RECIPES = ("defaults", "full")
FULL_TRAINER = {"method": "full"}
"""The full recipe's trainer policy: every encoder weight trains."""
FULL_HYPERPARAMETERS = {"learning_rate": 5e-5, "epochs": 4.0}
"""The full recipe's request: a rate for the whole encoder, and the epochs a dev split chose."""


def data_dir() -> Path:
    return Path(os.environ.get("LLMOPS_SHARED_DATA", REPO_ROOT / ".." / "shared" / "data")).resolve() / "banking77"


def run() -> dict[str, Any] | None:
    folder = data_dir()
    if not (folder / "train.csv").exists() or not (folder / "test.csv").exists():
        print(f"SKIP: BANKING77 not found at {folder} (set LLMOPS_SHARED_DATA to the folder holding banking77/)")
        return None

    import pandas as pd

    from llmops_events.v1.training import Hyperparameters, TrainingRequested
    from llmops_fine_tuning.adapters.defaults import load_defaults
    from llmops_fine_tuning.adapters.trainer import LoraSequenceClassificationTrainer
    from llmops_fine_tuning.domain.ports import LabelledTexts, TrainingData, TrainingProgress
    from llmops_fine_tuning.domain.request import resolve_job
    from llmops_fine_tuning.settings import FineTuningSettings

    train = pd.read_csv(folder / "train.csv")
    test = pd.read_csv(folder / "test.csv")
    if limit := int(os.environ.get("LLMOPS_BENCH_LIMIT", "0")):
        train = train.head(limit)
    labels = sorted(set(train["category"]) | set(test["category"]))
    data = TrainingData(
        train=LabelledTexts(train["text"].tolist(), train["category"].tolist()),
        validation=LabelledTexts(test["text"].tolist(), test["category"].tolist()),
        labels=labels,
    )
    settings = FineTuningSettings()
    defaults = load_defaults(settings.defaults_file)
    recipe = os.environ.get("LLMOPS_BENCH_RECIPE", "defaults")
    if recipe not in RECIPES:
        raise SystemExit(f"LLMOPS_BENCH_RECIPE={recipe!r}: one of {', '.join(RECIPES)}")
    hyperparameters: dict[str, Any] = {}
    if recipe == "full":
        defaults = defaults.model_copy(update={"trainer": defaults.trainer.model_copy(update=FULL_TRAINER)})
        hyperparameters = dict(FULL_HYPERPARAMETERS)
    if epochs := os.environ.get("LLMOPS_BENCH_EPOCHS"):
        hyperparameters["epochs"] = float(epochs)
    request = TrainingRequested(
        model_name="banking77-bench", dataset_id="banking77", hyperparameters=Hyperparameters(**hyperparameters)
    )
    job = resolve_job(request, request_id="bench", correlation_id=None, defaults=defaults)
    threads = int(os.environ.get("LLMOPS_BENCH_THREADS", "2"))

    def report(progress: TrainingProgress) -> None:
        print(
            f"step {progress.step}/{progress.total_steps} epoch {progress.epoch:.2f} loss {progress.loss:.4f} "
            f"{progress.examples_per_second:.1f} ex/s eta {progress.eta_seconds:.0f}s",
            file=sys.stderr,
            flush=True,
        )

    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="bench-banking77-") as scratch:
        result = LoraSequenceClassificationTrainer(num_threads=threads, progress_interval_s=30).train(
            job, data, Path(scratch) / "model", on_progress=report
        )
    total_seconds = time.monotonic() - started
    metrics = result.metrics
    accuracy = metrics["accuracy"]
    summary: dict[str, Any] = {
        "dataset": "BANKING77",
        "recipe": recipe,
        "train_examples": len(train),
        "test_examples": len(test),
        "base_model": job.base_model,
        "hyperparameters": job.hyperparameters.model_dump(mode="json"),
        "trainer": job.trainer.model_dump(mode="json"),
        "threads": threads,
        "test_accuracy": round(accuracy, 4),
        "test_macro_f1": round(metrics["macro_f1"], 4),
        "train_wall_seconds": round(metrics["train_seconds"], 1),
        "total_wall_seconds": round(total_seconds, 1),
        "train_examples_per_second": round(metrics["train_examples_per_second"], 1),
        "epochs": job.hyperparameters.epochs,
        "minutes_per_epoch": round(metrics["train_seconds"] / job.hyperparameters.epochs / 60, 2),
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "trainable_parameter_share": round(result.trainable_parameter_share, 4),
        "anchor_accuracy": ANCHOR_ACCURACY,
        "gap_to_anchor_points": round((accuracy - ANCHOR_ACCURACY) * 100, 2),
        "meets_target": accuracy >= TARGET_ACCURACY and metrics["train_seconds"] <= TARGET_TRAIN_SECONDS,
    }
    print(json.dumps(summary, indent=2))
    print(
        f"BANKING77 test accuracy {accuracy:.4f} (macro-F1 {metrics['macro_f1']:.4f}) after "
        f"{metrics['train_seconds']:.0f}s of training; {summary['gap_to_anchor_points']:+.2f} points from the "
        f"93.66% anchor (Casanueva et al. 2020); target >= {TARGET_ACCURACY} in {TARGET_TRAIN_SECONDS:.0f}s: "
        f"{'met' if summary['meets_target'] else 'NOT met'}"
    )
    return summary


if __name__ == "__main__":
    run()

"""BANKING77 fine-tuning benchmark (the MiniLM classifier): runs ``services/fine_tuning/bench/bench_banking77.py`` (the
fine-tuning service's own benchmark) as a subprocess under a time limit, once with the service's
defaults (LoRA) and once with its full fine-tuning recipe, and turns the JSON objects it prints
into rows. Issue 21's target (>= 0.937 within 600 s of training) applies to each recipe.

Environment: ``LLMOPS_BENCH_FINE_TUNING_TIMEOUT`` (seconds, default 1500),
``LLMOPS_BENCH_FINE_TUNING_SCRIPT`` (another script printing the same JSON; for tests), and the
script's own ``LLMOPS_BENCH_EPOCHS`` / ``LLMOPS_BENCH_THREADS`` / ``LLMOPS_BENCH_LIMIT`` (both runs).
"""

from __future__ import annotations

import os
from pathlib import Path

from bench.framework import BenchContext, Benchmark, Unmeasurable
from bench.results import Anchor, BenchResult, Figure, Target
from bench.script import rows_from_summary, run_script

NAME = "fine_tuning"
SCRIPT = Path("services") / "fine_tuning" / "bench" / "bench_banking77.py"
SCRIPT_ENV = "LLMOPS_BENCH_FINE_TUNING_SCRIPT"
TIMEOUT_ENV = "LLMOPS_BENCH_FINE_TUNING_TIMEOUT"
DEFAULT_TIMEOUT_S = 1500.0

ANCHOR = Anchor(value=0.9366, unit="", source="Casanueva et al. 2020, arXiv 2003.04807")
PAST_THE_ANCHOR = Target(comparison=">=", threshold=0.937)  # issue 21: past BERT-large
WITHIN_TEN_MINUTES = Target(comparison="<=", threshold=600)


def _figures(recipe: str) -> dict[Figure, str]:
    """The rows of one recipe, each with its key of the script's JSON."""
    return {
        Figure(
            benchmark=NAME,
            name=f"BANKING77 test accuracy ({recipe})",
            unit="",
            target=PAST_THE_ANCHOR,
            anchor=ANCHOR,
        ): "test_accuracy",
        Figure(benchmark=NAME, name=f"BANKING77 test macro-F1 ({recipe})", unit=""): "test_macro_f1",
        Figure(
            benchmark=NAME,
            name=f"BANKING77 training wall time ({recipe})",
            unit="s",
            target=WITHIN_TEN_MINUTES,
        ): "train_wall_seconds",
        Figure(
            benchmark=NAME, name=f"BANKING77 training throughput ({recipe})", unit="examples/s"
        ): "train_examples_per_second",
        Figure(benchmark=NAME, name=f"BANKING77 training time per epoch ({recipe})", unit="min"): "minutes_per_epoch",
        Figure(benchmark=NAME, name=f"BANKING77 training peak RSS ({recipe})", unit="MiB"): "peak_rss_mib",
    }


KEYS = _figures("LoRA, the default")
FULL_KEYS = _figures("full fine-tuning")
RECIPES = {"defaults": KEYS, "full": FULL_KEYS}
"""``LLMOPS_BENCH_RECIPE`` of each run → its rows."""
ACCURACY, _, TRAIN_TIME, _, _, _ = KEYS
FULL_ACCURACY, _, FULL_TRAIN_TIME, _, _, _ = FULL_KEYS
FIGURES = (*KEYS, *FULL_KEYS)


async def run(context: BenchContext) -> list[BenchResult]:
    script = Path(os.environ.get(SCRIPT_ENV, context.repo_root / SCRIPT))
    if SCRIPT_ENV not in os.environ:
        context.require_shared("banking77/train.csv")
        context.require_shared("banking77/test.csv")
    rows: list[BenchResult] = []
    for recipe, keys in RECIPES.items():
        context.reporter.step(f"  recipe: {recipe}")
        try:
            summary = await run_script(context, script, timeout_s=_timeout_s(), env={"LLMOPS_BENCH_RECIPE": recipe})
        except Unmeasurable as error:
            rows += [figure.unmeasured(str(error)) for figure in keys]
            continue
        rows += rows_from_summary(summary, keys)
    return rows


def _timeout_s() -> float:
    return float(os.environ.get(TIMEOUT_ENV, DEFAULT_TIMEOUT_S))


BENCHMARK = Benchmark(
    name=NAME,
    title="LoRA and full fine-tuning on BANKING77 (services/fine_tuning/bench/bench_banking77.py)",
    figures=FIGURES,
    run=run,
    time_limit_s=len(RECIPES) * _timeout_s() + 60,
)

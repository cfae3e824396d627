"""BANKING77 fine-tuning benchmark (the MiniLM classifier): runs ``services/fine_tuning/bench/bench_banking77.py`` (the
fine-tuning service's own benchmark) as a subprocess under a time limit and turns the JSON object
it prints into rows.

Environment: ``LLMOPS_BENCH_FINE_TUNING_TIMEOUT`` (seconds, default 1500),
``LLMOPS_BENCH_FINE_TUNING_SCRIPT`` (another script printing the same JSON; for tests), and the
script's own ``LLMOPS_BENCH_EPOCHS`` / ``LLMOPS_BENCH_THREADS`` / ``LLMOPS_BENCH_LIMIT``.
"""

from __future__ import annotations

import os
from pathlib import Path

from bench.framework import BenchContext, Benchmark
from bench.results import Anchor, BenchResult, Figure, Target
from bench.script import rows_from_summary, run_script

NAME = "fine_tuning"
SCRIPT = Path("services") / "fine_tuning" / "bench" / "bench_banking77.py"
SCRIPT_ENV = "LLMOPS_BENCH_FINE_TUNING_SCRIPT"
TIMEOUT_ENV = "LLMOPS_BENCH_FINE_TUNING_TIMEOUT"
DEFAULT_TIMEOUT_S = 1500.0

ACCURACY = Figure(
    benchmark=NAME,
    name="BANKING77 test accuracy (LoRA)",
    unit="",
    target=Target(comparison=">=", threshold=0.937),  # issue 21: past BERT-large
    anchor=Anchor(value=0.9366, unit="", source="Casanueva et al. 2020, arXiv 2003.04807"),
)
MACRO_F1 = Figure(benchmark=NAME, name="BANKING77 test macro-F1 (LoRA)", unit="")
TRAIN_TIME = Figure(
    benchmark=NAME, name="BANKING77 training wall time", unit="s", target=Target(comparison="<=", threshold=600)
)
EXAMPLES_PER_S = Figure(benchmark=NAME, name="BANKING77 training throughput", unit="examples/s")
MINUTES_PER_EPOCH = Figure(benchmark=NAME, name="BANKING77 training time per epoch", unit="min")
PEAK_RSS = Figure(benchmark=NAME, name="BANKING77 training peak RSS", unit="MiB")
FIGURES = (ACCURACY, MACRO_F1, TRAIN_TIME, EXAMPLES_PER_S, MINUTES_PER_EPOCH, PEAK_RSS)

KEYS = {  # figure → key of the script's JSON
    ACCURACY: "test_accuracy",
    MACRO_F1: "test_macro_f1",
    TRAIN_TIME: "train_wall_seconds",
    EXAMPLES_PER_S: "train_examples_per_second",
    MINUTES_PER_EPOCH: "minutes_per_epoch",
    PEAK_RSS: "peak_rss_mib",
}


async def run(context: BenchContext) -> list[BenchResult]:
    script = Path(os.environ.get(SCRIPT_ENV, context.repo_root / SCRIPT))
    if SCRIPT_ENV not in os.environ:
        context.require_shared("banking77/train.csv")
        context.require_shared("banking77/test.csv")
    summary = await run_script(context, script, timeout_s=float(os.environ.get(TIMEOUT_ENV, DEFAULT_TIMEOUT_S)))
    return rows_from_summary(summary, KEYS)


BENCHMARK = Benchmark(
    name=NAME,
    title="LoRA fine-tuning on BANKING77 (services/fine_tuning/bench/bench_banking77.py)",
    figures=FIGURES,
    run=run,
    time_limit_s=float(os.environ.get(TIMEOUT_ENV, DEFAULT_TIMEOUT_S)) + 60,
)

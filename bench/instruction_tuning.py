"""BANKING77 as instruction following (issue 14): runs
``services/fine_tuning/bench/bench_banking77_instructions.py`` as a subprocess under a time limit
and turns its JSON into rows. The fine-tuned exact match is shown next to the MiniLM classifier's
accuracy on the same test set, from the ``fine_tuning`` benchmark of this run (or of the last
results file when only this benchmark runs).

Environment: ``LLMOPS_BENCH_INSTRUCTION_TUNING_TIMEOUT`` (seconds, default 2400),
``LLMOPS_BENCH_INSTRUCTION_TUNING_SCRIPT`` (another script printing the same JSON; for tests), and
the script's own ``LLMOPS_BENCH_EPOCHS`` / ``LLMOPS_BENCH_THREADS`` / ``LLMOPS_BENCH_LIMIT`` /
``LLMOPS_BENCH_ZERO_SHOT_PER_INTENT``.
"""

from __future__ import annotations

import os
from pathlib import Path

from bench import fine_tuning
from bench.framework import BenchContext, Benchmark
from bench.results import Anchor, BenchResult, Figure, Target
from bench.script import rows_from_summary, run_script

NAME = "instruction_tuning"
SCRIPT = Path("services") / "fine_tuning" / "bench" / "bench_banking77_instructions.py"
SCRIPT_ENV = "LLMOPS_BENCH_INSTRUCTION_TUNING_SCRIPT"
TIMEOUT_ENV = "LLMOPS_BENCH_INSTRUCTION_TUNING_TIMEOUT"
DEFAULT_TIMEOUT_S = 2400.0

EXACT_MATCH = Figure(
    benchmark=NAME,
    name="BANKING77 exact match, SmolLM2-135M + LoRA answering the intent name (full test set)",
    unit="",
    target=Target(comparison=">=", threshold=0.85),
    anchor=Anchor(value=0.9366, unit="", source="BERT-large classifier, Casanueva et al. 2020, arXiv 2003.04807"),
    reference_name="MiniLM classifier accuracy (fine_tuning)",
)
ZERO_SHOT = Figure(
    benchmark=NAME,
    name="BANKING77 exact match, SmolLM2-135M zero-shot, 77 intents in the system prompt (3 per intent)",
    unit="",
)
LABEL_SET = Figure(benchmark=NAME, name="answers that are one of the 77 intent names (fine-tuned)", unit="")
TRAIN_TIME = Figure(
    benchmark=NAME,
    name="instruction tuning wall time (10,003 conversations)",
    unit="s",
    target=Target(comparison="<=", threshold=1200),
)
EXAMPLES_PER_S = Figure(
    benchmark=NAME,
    name="instruction tuning throughput",
    unit="examples/s",
    target=Target(comparison=">=", threshold=8),
)
TOKENS_PER_S = Figure(benchmark=NAME, name="instruction tuning throughput (tokens)", unit="tokens/s")
GENERATION = Figure(
    benchmark=NAME, name="generation throughput, greedy, batches of 64 (fine-tuned, merged)", unit="tokens/s"
)
ADAPTER = Figure(benchmark=NAME, name="adapter size (LoRA weights only)", unit="MiB")
PEAK_RSS = Figure(benchmark=NAME, name="instruction tuning peak RSS", unit="MiB")
FIGURES = (EXACT_MATCH, ZERO_SHOT, LABEL_SET, TRAIN_TIME, EXAMPLES_PER_S, TOKENS_PER_S, GENERATION, ADAPTER, PEAK_RSS)

KEYS = {  # figure → key of the script's JSON
    EXACT_MATCH: "test_exact_match",
    ZERO_SHOT: "zero_shot_exact_match",
    LABEL_SET: "test_in_label_set",
    TRAIN_TIME: "train_wall_seconds",
    EXAMPLES_PER_S: "train_examples_per_second",
    TOKENS_PER_S: "train_tokens_per_second",
    GENERATION: "generation_tokens_per_second",
    ADAPTER: "adapter_mib",
    PEAK_RSS: "peak_rss_mib",
}


def classifier_accuracy(context: BenchContext) -> float | None:
    """The MiniLM classifier's BANKING77 test accuracy measured by ``fine_tuning``, if any."""
    row = context.measured.get(fine_tuning.ACCURACY.name)
    return row.value if row is not None and row.measured else None


async def run(context: BenchContext) -> list[BenchResult]:
    script = Path(os.environ.get(SCRIPT_ENV, context.repo_root / SCRIPT))
    if SCRIPT_ENV not in os.environ:
        context.require_shared("banking77/train.csv")
        context.require_shared("banking77/test.csv")
    summary = await run_script(context, script, timeout_s=float(os.environ.get(TIMEOUT_ENV, DEFAULT_TIMEOUT_S)))
    return rows_from_summary(summary, KEYS, {EXACT_MATCH: classifier_accuracy(context)})


BENCHMARK = Benchmark(
    name=NAME,
    title="BANKING77 as instruction following (services/fine_tuning/bench/bench_banking77_instructions.py)",
    figures=FIGURES,
    run=run,
    time_limit_s=float(os.environ.get(TIMEOUT_ENV, DEFAULT_TIMEOUT_S)) + 60,
)

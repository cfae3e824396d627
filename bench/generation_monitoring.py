"""Monitoring of generations (issue 16): report time for a 1k-generation window, false alarms over
20 in-distribution windows, detection delay of a generative quality drop. Runs
``services/monitoring/bench/bench_generation_monitoring.py`` as a subprocess under a time limit and
turns its JSON into rows; the method is in that script's docstring. The generations are synthetic
(recorded-style: BANKING77 prompts answered with intent names, then other-domain prompts with
refusing, off-format or wrong answers and thumbs-down feedback): no LLM runs, the figures are the
monitoring's own.

Environment: ``LLMOPS_BENCH_GENERATION_WINDOW`` (generations per window, default 1,000) and
``LLMOPS_BENCH_GENERATION_IN_DISTRIBUTION_WINDOWS`` (default 20), read by the script;
``LLMOPS_BENCH_GENERATION_MONITORING_TIMEOUT`` (seconds, default 1,200),
``LLMOPS_BENCH_GENERATION_MONITORING_SCRIPT`` (another script printing the same JSON; for tests).
"""

from __future__ import annotations

import os
from pathlib import Path

from bench.framework import BenchContext, Benchmark
from bench.results import BenchResult, Figure, Target
from bench.script import rows_from_summary, run_script

NAME = "generation_monitoring"
SCRIPT = Path("services") / "monitoring" / "bench" / "bench_generation_monitoring.py"
SCRIPT_ENV = "LLMOPS_BENCH_GENERATION_MONITORING_SCRIPT"
TIMEOUT_ENV = "LLMOPS_BENCH_GENERATION_MONITORING_TIMEOUT"
DEFAULT_TIMEOUT_S = 1200.0
IN_DISTRIBUTION_WINDOWS = 20  # the script's default; part of a row's name

REPORT_1K = Figure(
    benchmark=NAME,
    name="report time, 1k-generation window (synthetic outputs)",
    unit="s",
    target=Target(comparison="<", threshold=10),
)
EMBED_1K = Figure(
    benchmark=NAME, name="embedding a 1k-generation window's prompts while it fills (1,000 texts)", unit="s"
)
DELAY_WINDOWS = Figure(
    benchmark=NAME,
    name="detection delay of a generative quality drop (synthetic outputs)",
    unit="windows",
    target=Target(comparison="<=", threshold=2),
)
FALSE_ALARMS = Figure(
    benchmark=NAME,
    name=f"false alarms over {IN_DISTRIBUTION_WINDOWS} in-distribution generation windows (synthetic outputs)",
    unit="requests",
    target=Target(comparison="<=", threshold=0),
)
FIGURES = (REPORT_1K, EMBED_1K, DELAY_WINDOWS, FALSE_ALARMS)

KEYS = {  # figure → key of the script's JSON
    REPORT_1K: "report_1k_seconds",
    EMBED_1K: "embed_1k_seconds",
    DELAY_WINDOWS: "detection_delay_windows",
    FALSE_ALARMS: "false_alarms",
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
    title="monitoring of generations: report time, false alarms, detection delay of a quality drop",
    figures=FIGURES,
    run=run,
    time_limit_s=float(os.environ.get(TIMEOUT_ENV, DEFAULT_TIMEOUT_S)) + 60,
)

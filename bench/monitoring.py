"""Monitoring: report time per window, detection delay of a 50% shift, false alarms in-distribution
(issue 7). Runs ``services/monitoring/bench/bench_drift.py`` as a subprocess under a time limit and
turns its JSON into rows; the method is in that script's docstring.

The figures need the service's insides (the stand-in served model injected as the reference's
predictor; the pure analysis of a fixed window), so the measurement lives with the service and
this harness imports no service package.

Environment: ``LLMOPS_BENCH_MONITORING_WINDOW`` (events per window, default 1,000; read by the
script), ``LLMOPS_BENCH_MONITORING_TIMEOUT`` (seconds, default 1,440),
``LLMOPS_BENCH_MONITORING_SCRIPT`` (another script printing the same JSON; for tests).
"""

from __future__ import annotations

import os
from pathlib import Path

from bench.framework import BenchContext, Benchmark
from bench.results import BenchResult, Figure, Target
from bench.script import rows_from_summary, run_script

NAME = "monitoring"
SCRIPT = Path("services") / "monitoring" / "bench" / "bench_drift.py"
SCRIPT_ENV = "LLMOPS_BENCH_MONITORING_SCRIPT"
TIMEOUT_ENV = "LLMOPS_BENCH_MONITORING_TIMEOUT"
DEFAULT_TIMEOUT_S = 1440.0
IN_DISTRIBUTION_WINDOWS = 20  # the script's; part of a row's name

REPORT_1K = Figure(benchmark=NAME, name="report time, 1k-event window", unit="s")
EMBED_10K = Figure(benchmark=NAME, name="embedding a 10k-event window's sample while it fills (1,000 texts)", unit="s")
REPORT_10K = Figure(
    benchmark=NAME,
    name="report time, 10k-event window",
    unit="s",
    target=Target(comparison="<", threshold=10),
)
DELAY_WINDOWS = Figure(
    benchmark=NAME,
    name="detection delay of a 50% shift",
    unit="windows",
    target=Target(comparison="<=", threshold=2),
)
DELAY_EVENTS = Figure(benchmark=NAME, name="detection delay of a 50% shift (events)", unit="events")
FALSE_ALARMS = Figure(
    benchmark=NAME,
    name=f"false alarms over {IN_DISTRIBUTION_WINDOWS} in-distribution windows",
    unit="requests",
    target=Target(comparison="<=", threshold=0),
)
FIGURES = (REPORT_1K, REPORT_10K, EMBED_10K, DELAY_WINDOWS, DELAY_EVENTS, FALSE_ALARMS)

KEYS = {  # figure → key of the script's JSON
    REPORT_1K: "report_1k_seconds",
    REPORT_10K: "report_10k_seconds",
    EMBED_10K: "embed_10k_seconds",
    DELAY_WINDOWS: "delay_windows",
    DELAY_EVENTS: "delay_events",
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
    title="report time per window, detection delay of a 50% shift, false alarms in-distribution",
    figures=FIGURES,
    run=run,
    time_limit_s=float(os.environ.get(TIMEOUT_ENV, DEFAULT_TIMEOUT_S)) + 60,
)

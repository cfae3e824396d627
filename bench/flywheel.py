"""The feedback flywheel for generation (issue 16): does retraining on users' corrections teach the
assistant what it answered wrongly, and does DPO on the preference pairs add to SFT alone?

Four service scripts run in turn as subprocesses, sharing a work folder (an artifact store and
the JSON hand-offs between them; ``LLMOPS_BENCH_FLYWHEEL_DIR``, a scratch folder of this run):

1. ``services/fine_tuning/bench/bench_flywheel_before.py``: an SFT adapter on a set of *known*
   BANKING77 intents (version 1), which then answers prompts of *shifted* intents it never learned;
2. ``services/ingestion/bench/bench_flywheel_feedback.py``: users thumb the wrong answers down and
   correct them; ingestion's domain code makes corrected instruction examples (``source=feedback``)
   and preference pairs (``source=correction``);
3. ``services/fine_tuning/bench/bench_flywheel_after.py``: retraining from the base on known +
   corrected examples, SFT only (version 2) and SFT + DPO on the pairs (version 3);
4. ``services/evaluation/bench/bench_flywheel_evaluate.py``: the evaluation service's metrics on
   held-out prompts (exact match before -> after, shifted and known intents) and the win rate of
   version 3 against version 2 on the held-out preference pairs.

The method and what differs from the running services are in each script's docstring. Sizes and
seeds: the environment variables of stage 1 (``LLMOPS_BENCH_FLYWHEEL_*``); the time limit of the
four together: ``LLMOPS_BENCH_FLYWHEEL_TIMEOUT`` (seconds, default 1,500).
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bench.framework import BenchContext, Benchmark, Unmeasurable
from bench.results import BenchResult, Figure, Target
from bench.script import rows_from_summary, run_script

NAME = "flywheel"
DIR_ENV = "LLMOPS_BENCH_FLYWHEEL_DIR"
TIMEOUT_ENV = "LLMOPS_BENCH_FLYWHEEL_TIMEOUT"
DEFAULT_TIMEOUT_S = 1500.0
STAGES = (
    Path("services") / "fine_tuning" / "bench" / "bench_flywheel_before.py",
    Path("services") / "ingestion" / "bench" / "bench_flywheel_feedback.py",
    Path("services") / "fine_tuning" / "bench" / "bench_flywheel_after.py",
    Path("services") / "evaluation" / "bench" / "bench_flywheel_evaluate.py",
)
UPLIFT_TARGET = 0.3

BEFORE = "before: adapter of the known intents"
SHIFTED_AFTER_SFT = Figure(
    benchmark=NAME,
    name="flywheel: exact match on held-out shifted prompts, after SFT on the corrections",
    unit="",
    reference_name=BEFORE,
)
UPLIFT = Figure(
    benchmark=NAME,
    name="flywheel: exact match on held-out shifted prompts, uplift before → after retraining (SFT + DPO, the default)",
    unit="",
    target=Target(comparison=">=", threshold=UPLIFT_TARGET),
)
"""What the platform's retraining buys: with at least ``dpo_min_pairs`` pairs it runs SFT then DPO."""
SHIFTED_AFTER_DPO = Figure(
    benchmark=NAME,
    name="flywheel: exact match on held-out shifted prompts, after SFT + DPO",
    unit="",
    reference_name="after SFT alone",
)
WIN_RATE = Figure(
    benchmark=NAME,
    name="flywheel: win rate of SFT + DPO over SFT alone on held-out preference pairs",
    unit="",
    target=Target(comparison=">=", threshold=0.5),
)
PREFERENCE_ACCURACY = Figure(
    benchmark=NAME,
    name="flywheel: preference accuracy on held-out pairs, SFT + DPO",
    unit="",
    reference_name="SFT alone",
)
TRAINING_PAIRS = Figure(benchmark=NAME, name="flywheel: preference pairs DPO trained on", unit="pairs")
HELD_OUT_PAIRS = Figure(benchmark=NAME, name="flywheel: held-out preference pairs judged", unit="pairs")
KNOWN_AFTER_SFT = Figure(
    benchmark=NAME,
    name="flywheel: exact match on held-out known prompts after SFT (no regression; report only)",
    unit="",
    reference_name=BEFORE,
)
WALL = Figure(benchmark=NAME, name="flywheel: wall time (train, feedback, retrain twice, evaluate)", unit="s")
FIGURES = (
    SHIFTED_AFTER_SFT,
    UPLIFT,
    SHIFTED_AFTER_DPO,
    WIN_RATE,
    PREFERENCE_ACCURACY,
    TRAINING_PAIRS,
    HELD_OUT_PAIRS,
    KNOWN_AFTER_SFT,
    WALL,
)

KEYS = {  # figure → key of the stages' merged JSON
    SHIFTED_AFTER_SFT: "shifted_exact_match_sft",
    UPLIFT: "shifted_exact_match_uplift_dpo",
    SHIFTED_AFTER_DPO: "shifted_exact_match_dpo",
    WIN_RATE: "win_rate_dpo_vs_sft",
    PREFERENCE_ACCURACY: "preference_accuracy_dpo",
    TRAINING_PAIRS: "dpo_training_pairs_used",
    HELD_OUT_PAIRS: "held_out_pairs",
    KNOWN_AFTER_SFT: "known_exact_match_sft",
    WALL: "wall_seconds",
}


@contextlib.contextmanager
def _shared_work_dir(folder: Path) -> Iterator[None]:
    """The stages find their work folder in the environment they inherit (``run_script`` passes
    this process's); an operator's own ``LLMOPS_BENCH_FLYWHEEL_DIR`` is kept (to inspect the
    models and snapshots afterwards)."""
    if DIR_ENV in os.environ:
        yield
        return
    os.environ[DIR_ENV] = str(folder)
    try:
        yield
    finally:
        os.environ.pop(DIR_ENV, None)


def result_rows(summary: dict[str, Any]) -> list[BenchResult]:
    """Rows from the merged JSON of the four stages. The win rate and preference accuracy are
    unmeasured when DPO did not run (too few training pairs for the policy): version 3 is then
    version 2 and the comparison would be a tie by construction."""
    if not summary.get("dpo_training_pairs_used"):
        reason = (
            f"DPO did not run: {summary.get('training_pairs', 0)} training pairs, fewer than the causal-lm "
            "trainer policy's dpo_min_pairs (deploy/training/defaults.yaml)"
        )
        dropped = (KEYS[WIN_RATE], KEYS[PREFERENCE_ACCURACY])
        unmeasured = {**dict(summary.get("unmeasured") or {}), **dict.fromkeys(dropped, reason)}
        summary = {key: value for key, value in summary.items() if key not in dropped} | {"unmeasured": unmeasured}
    return rows_from_summary(
        summary,
        KEYS,
        {
            SHIFTED_AFTER_SFT: summary.get("shifted_exact_match_before"),
            SHIFTED_AFTER_DPO: summary.get("shifted_exact_match_sft"),
            PREFERENCE_ACCURACY: summary.get("preference_accuracy_sft"),
            KNOWN_AFTER_SFT: summary.get("known_exact_match_before"),
        },
    )


async def run(context: BenchContext) -> list[BenchResult]:
    context.require_shared("banking77/train.csv")
    context.require_shared("banking77/test.csv")
    limit = float(os.environ.get(TIMEOUT_ENV, DEFAULT_TIMEOUT_S))
    began = time.monotonic()
    summary: dict[str, Any] = {}
    with _shared_work_dir(context.scratch(NAME)):
        for script in STAGES:
            left = limit - (time.monotonic() - began)
            if left <= 0:
                raise Unmeasurable(f"the four stages did not finish within {limit:g} s")
            summary |= await run_script(context, context.repo_root / script, timeout_s=left)
    summary["wall_seconds"] = round(time.monotonic() - began, 1)
    return result_rows(summary)


BENCHMARK = Benchmark(
    name=NAME,
    title="the feedback flywheel: corrections and preference pairs, SFT and DPO (services/*/bench/bench_flywheel_*)",
    figures=FIGURES,
    run=run,
    time_limit_s=float(os.environ.get(TIMEOUT_ENV, DEFAULT_TIMEOUT_S)) + 60,
)

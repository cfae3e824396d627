"""BANKING77 fine-tuning benchmark: runs ``services/fine_tuning/bench/bench_banking77.py`` (the
fine-tuning service's own benchmark) as a subprocess under a time limit and turns the JSON object
it prints into rows.

Environment: ``LLMOPS_BENCH_FINE_TUNING_TIMEOUT`` (seconds, default 1500),
``LLMOPS_BENCH_FINE_TUNING_SCRIPT`` (another script printing the same JSON; for tests), and the
script's own ``LLMOPS_BENCH_EPOCHS`` / ``LLMOPS_BENCH_THREADS`` / ``LLMOPS_BENCH_LIMIT``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
from collections import deque
from pathlib import Path
from typing import Any

from bench.framework import BenchContext, Benchmark, Unmeasurable
from bench.results import Anchor, BenchResult, Figure, Target

NAME = "fine_tuning"
SCRIPT = Path("services") / "fine_tuning" / "bench" / "bench_banking77.py"
SCRIPT_ENV = "LLMOPS_BENCH_FINE_TUNING_SCRIPT"
TIMEOUT_ENV = "LLMOPS_BENCH_FINE_TUNING_TIMEOUT"
DEFAULT_TIMEOUT_S = 1500.0

ACCURACY = Figure(
    benchmark=NAME,
    name="BANKING77 test accuracy (LoRA)",
    unit="",
    target=Target(comparison=">=", threshold=0.92),
    anchor=Anchor(value=0.9366, unit="", source="Casanueva et al. 2020, arXiv 2003.04807"),
)
MACRO_F1 = Figure(benchmark=NAME, name="BANKING77 test macro-F1 (LoRA)", unit="")
TRAIN_TIME = Figure(
    benchmark=NAME, name="BANKING77 training wall time", unit="s", target=Target(comparison="<=", threshold=600)
)
EXAMPLES_PER_S = Figure(benchmark=NAME, name="BANKING77 training throughput", unit="examples/s")
PEAK_RSS = Figure(benchmark=NAME, name="BANKING77 training peak RSS", unit="MiB")
FIGURES = (ACCURACY, MACRO_F1, TRAIN_TIME, EXAMPLES_PER_S, PEAK_RSS)

# figure → key of the script's JSON
KEYS = {
    ACCURACY.name: "test_accuracy",
    MACRO_F1.name: "test_macro_f1",
    TRAIN_TIME.name: "train_wall_seconds",
    EXAMPLES_PER_S.name: "train_examples_per_second",
    PEAK_RSS.name: "peak_rss_mib",
}


def parse_summary(stdout: str) -> dict[str, Any]:
    """The JSON object the script prints (pretty-printed, followed by a summary line)."""
    if stdout.lstrip().startswith("SKIP"):
        raise Unmeasurable(stdout.strip().splitlines()[0].removeprefix("SKIP:").strip())
    decoder = json.JSONDecoder()
    position = stdout.find("{")
    while position >= 0:
        try:
            summary, _ = decoder.raw_decode(stdout, position)
        except json.JSONDecodeError:
            position = stdout.find("{", position + 1)
            continue
        if isinstance(summary, dict):
            return summary
        position = stdout.find("{", position + 1)
    raise ValueError("the script printed no JSON object")


def rows_from_summary(summary: dict[str, Any]) -> list[BenchResult]:
    rows = []
    for figure in FIGURES:
        value = summary.get(KEYS[figure.name])
        if isinstance(value, int | float) and not isinstance(value, bool):
            rows.append(figure.measured(float(value)))
        else:
            rows.append(figure.unmeasured(f"the script's JSON has no numeric {KEYS[figure.name]!r}"))
    return rows


async def run(context: BenchContext) -> list[BenchResult]:
    script = Path(os.environ.get(SCRIPT_ENV, context.repo_root / SCRIPT))
    if not script.exists():
        raise Unmeasurable(f"benchmark script not found at {script}")
    if SCRIPT_ENV not in os.environ:
        context.require_shared("banking77/train.csv")
        context.require_shared("banking77/test.csv")
    timeout = float(os.environ.get(TIMEOUT_ENV, DEFAULT_TIMEOUT_S))
    context.reporter.step(f"  running {script} (limit {timeout:.0f}s; progress lines below)")
    process = await asyncio.create_subprocess_exec(
        context.python,
        str(script),
        cwd=context.repo_root,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    tail: deque[str] = deque(maxlen=20)
    started = time.monotonic()

    async def follow_stderr() -> None:
        assert process.stderr is not None
        async for raw in process.stderr:
            line = raw.decode(errors="replace").rstrip()
            if line:
                tail.append(line)
                context.reporter.status(f"{time.monotonic() - started:.0f}s {line[-120:]}")

    try:
        assert process.stdout is not None
        async with asyncio.timeout(timeout):
            stdout, _ = await asyncio.gather(process.stdout.read(), follow_stderr())
            await process.wait()
    except TimeoutError:
        raise Unmeasurable(f"bench_banking77.py did not finish within {timeout:g} s") from None
    finally:
        if process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await process.wait()
    text = stdout.decode(errors="replace")
    if process.returncode != 0:
        last = tail[-1] if tail else "no output on stderr"
        raise Unmeasurable(f"bench_banking77.py exited with {process.returncode}: {last}")
    summary = parse_summary(text)
    context.reporter.step(f"  script summary: {json.dumps(summary)[:400]}")
    return rows_from_summary(summary)


BENCHMARK = Benchmark(
    name=NAME,
    title="LoRA fine-tuning on BANKING77 (services/fine_tuning/bench/bench_banking77.py)",
    figures=FIGURES,
    run=run,
    time_limit_s=float(os.environ.get(TIMEOUT_ENV, DEFAULT_TIMEOUT_S)) + 60,
)

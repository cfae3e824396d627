"""Benchmarks that run a service's own benchmark script (``services/*/bench/*.py``) as a
subprocess under a time limit: the script prints progress on stderr and one JSON object on
stdout (or ``SKIP: reason``); each figure is read from one key of that object."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
from collections import deque
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from bench.framework import BenchContext, Unmeasurable
from bench.results import BenchResult, Figure


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


def rows_from_summary(
    summary: Mapping[str, Any],
    keys: Mapping[Figure, str],
    references: Mapping[Figure, float | None] | None = None,
) -> list[BenchResult]:
    """One row per figure from its key of ``summary``; ``references`` gives a figure's reference
    value, if any. A key without a number is an unmeasured row, with the script's reason when its
    ``"unmeasured"`` object has one under that key, else saying which key is missing."""
    reasons = summary.get("unmeasured")
    rows = []
    for figure, key in keys.items():
        value = summary.get(key)
        if isinstance(value, int | float) and not isinstance(value, bool):
            reference = (references or {}).get(figure)
            rows.append(figure.measured(float(value), reference_value=reference))
        elif isinstance(reasons, Mapping) and isinstance(reasons.get(key), str):
            rows.append(figure.unmeasured(reasons[key]))
        else:
            rows.append(figure.unmeasured(f"the script's JSON has no numeric {key!r}"))
    return rows


async def run_script(
    context: BenchContext, script: Path, *, timeout_s: float, env: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """Run ``script`` with the benchmark's Python, relaying its stderr lines as status; its JSON
    summary, or ``Unmeasurable`` (missing, timed out, failed, skipped). ``env`` is added to this
    process's environment."""
    if not script.exists():
        raise Unmeasurable(f"benchmark script not found at {script}")
    context.reporter.step(f"  running {script} (limit {timeout_s:.0f}s; progress lines below)")
    process = await asyncio.create_subprocess_exec(
        context.python,
        str(script),
        cwd=context.repo_root,
        env={**os.environ, **(env or {}), "PYTHONUNBUFFERED": "1"},
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
        async with asyncio.timeout(timeout_s):
            stdout, _ = await asyncio.gather(process.stdout.read(), follow_stderr())
            await process.wait()
    except TimeoutError:
        raise Unmeasurable(f"{script.name} did not finish within {timeout_s:g} s") from None
    finally:
        if process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await process.wait()
    text = stdout.decode(errors="replace")
    if process.returncode != 0:
        last = tail[-1] if tail else "no output on stderr"
        raise Unmeasurable(f"{script.name} exited with {process.returncode}: {last}")
    summary = parse_summary(text)
    context.reporter.step(f"  script summary: {json.dumps(summary)[:400]}")
    return summary

"""Redaction cost per record: typical texts, and digit-heavy texts up to the longest accepted.

Method (issue 20, item 9):

1. One ``Redactor`` as ingestion builds it (regions US, GB, DE, FR; names on), untimed.
2. **Typical**: BANKING77's training texts (the small generator's when the shared data is absent),
   each redacted once, after one untimed pass; the figure is the mean time per record.
3. **Digit-heavy**: a seeded mix of card-like runs (failing the Luhn check, so they reach the phone
   matcher), phone-like runs, dash-separated numbers and random digits, spaces and dashes
   (``digit_heavy_text``), of 1,000, 2,000 and 8,000 characters (8,000 is
   ``LLMOPS_INGESTION_MAX_TEXT_LENGTH``'s default; the shorter texts are prefixes of the longer);
   each is redacted ``REPEATS`` times and the figure is the median. The phone matcher is the
   expensive recogniser on such text; the Redactor bounds what it examines per text.
4. **Linearity**: the 8,000-character time against 8 times the 1,000-character time. A ratio
   near 1 is linear cost; well above 1 is super-linear; below 1 means a bound took over.

The 8,000-character target comes from the consumer: a batch holds up to 2,000 records and must be
done well within Kafka's ``max.poll.interval.ms`` (300 s, i.e. 150 ms a record for everything),
so redaction may take at most a third of it, 50 ms. ``LLMOPS_BENCH_REDACTION_REPEATS`` sets the
repeats (default 15).
"""

from __future__ import annotations

import asyncio
import os
import random
import statistics
import time
from collections.abc import Callable
from typing import Any

from bench.framework import BenchContext, Benchmark
from bench.results import BenchResult, Figure, Target

NAME = "redaction"
REPEATS_ENV = "LLMOPS_BENCH_REDACTION_REPEATS"
DEFAULT_REPEATS = 15
SEED = 20
MAX_TEXT_LENGTH = 8000

TYPICAL = Figure(benchmark=NAME, name="redaction time, typical record (BANKING77 text)", unit="ms/record")
HEAVY_2K = Figure(benchmark=NAME, name="redaction time, 2,000-char digit-heavy record", unit="ms/record")
HEAVY_8K = Figure(
    benchmark=NAME,
    name="redaction time, 8,000-char digit-heavy record",
    unit="ms/record",
    target=Target(comparison="<=", threshold=50),
)
LINEARITY = Figure(
    benchmark=NAME,
    name="redaction time, 8,000-char digit-heavy record vs 8x a 1,000-char one",
    unit="ms/record",
    reference_name="8x the 1,000-char prefix",
    target=Target(comparison="<=", threshold=1.5, subject="ratio"),
)


def digit_heavy_text(length: int, seed: int = SEED) -> str:
    """``length`` characters of mostly digits: card-like and phone-like runs, dash-separated
    numbers, random digits with spaces and dashes. Deterministic; a shorter text of the same seed
    is a prefix of a longer one."""
    rng = random.Random(seed)

    def digits(count: int) -> str:
        return "".join(rng.choice("0123456789") for _ in range(count))

    parts: list[str] = []
    size = 0
    while size < length:
        kind = rng.random()
        if kind < 0.3:
            part = " ".join(digits(4) for _ in range(4))  # card-like (Luhn fails for ~90%)
        elif kind < 0.6:
            part = f"+{rng.randint(1, 49)} {rng.randint(10, 999)} {digits(4)} {digits(4)}"  # phone-like
        elif kind < 0.8:
            part = "-".join(digits(rng.randint(1, 3)) for _ in range(rng.randint(2, 6)))
        else:
            part = "".join(rng.choice("0123456789 -") for _ in range(rng.randint(5, 30)))
        parts.append(part)
        size += len(part) + 1
    return " ".join(parts)[:length]


def median_ms(redact: Callable[[str], Any], text: str, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        redact(text)
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1000


def measure(texts: list[str], repeats: int) -> dict[str, float]:
    from llmops_privacy.redaction import Redactor

    redactor = Redactor()
    for text in texts:  # untimed: first-use caches of phonenumbers and Presidio
        redactor.redact(text)
    started = time.perf_counter()
    for text in texts:
        redactor.redact(text)
    typical = (time.perf_counter() - started) * 1000 / len(texts)
    heavy = digit_heavy_text(MAX_TEXT_LENGTH)
    redactor.redact(heavy)
    return {
        "typical": typical,
        **{str(size): median_ms(redactor.redact, heavy[:size], repeats) for size in (1000, 2000, MAX_TEXT_LENGTH)},
    }


async def run(context: BenchContext) -> list[BenchResult]:
    from bench.ingestion import load_texts

    repeats = int(os.environ.get(REPEATS_ENV, DEFAULT_REPEATS))
    rows, origin = load_texts(context)
    texts = [text for text, _ in rows]
    context.reporter.status(f"redacting {len(texts):,} texts of {origin} and digit-heavy texts")
    ms = await asyncio.to_thread(measure, texts, repeats)
    context.reporter.step(
        f"  {len(texts):,} texts of {origin}: {ms['typical']:.4f} ms/record; digit-heavy (median of {repeats}): "
        f"1,000 chars {ms['1000']:.2f} ms, 2,000 chars {ms['2000']:.2f} ms, 8,000 chars {ms['8000']:.2f} ms"
    )
    return [
        TYPICAL.measured(ms["typical"]),
        HEAVY_2K.measured(ms["2000"]),
        HEAVY_8K.measured(ms["8000"]),
        LINEARITY.measured(ms["8000"], reference_value=8 * ms["1000"]),
    ]


BENCHMARK = Benchmark(
    name=NAME,
    title="redaction cost per record: typical and digit-heavy texts, and its linearity",
    figures=(TYPICAL, HEAVY_2K, HEAVY_8K, LINEARITY),
    run=run,
    time_limit_s=300,
)

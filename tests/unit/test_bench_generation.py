"""The generation benchmark's arithmetic (rows, ratios, the ceiling fraction, percentiles) and its
scripts' SKIP answers, without Triton or a model."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from bench import generation
from bench.framework import REPO_ROOT, Unmeasurable
from bench.generation import Load, Stream, combine, result_rows
from bench.script import parse_summary


def _load(ttfts_s: list[float], tokens: int, seconds: float, errors: int = 0) -> Load:
    each = tokens // len(ttfts_s)
    streams = tuple(Stream(t, t + 1.0, each, "length", (0.05, 0.05)) for t in ttfts_s)
    return Load(streams, errors, seconds, "boom" if errors else "")


REFERENCE = {
    "flops_per_token": 0.27e9,
    "gemm_flops_per_second": 300e9,
    "reference_batch_tokens_per_second": 200.0,
    "reference_single_tokens_per_second": 40.0,
    "base_weights_mib": 256.0,
}
MEASURED = {
    "c1": _load([0.1, 0.2, 0.3, 0.4], tokens=400, seconds=10.0),  # 40 tokens/s
    "c16": _load([0.2] * 15 + [0.9], tokens=3200, seconds=20.0),  # 160 tokens/s
    "mixed": _load([0.3] * 16, tokens=2400, seconds=20.0),  # 120 tokens/s
    "adapters": {"memory_mib": 19.0, "load_ms": 350.0, "stall_ms": 400.0, "median_pause_ms": 25.0},
}


def test_rows_carry_the_ratios_the_targets_judge() -> None:
    rows = {row.name: row for row in result_rows(REFERENCE, MEASURED, "SKIP: not installed (make bench-setup)")}
    complete = generation.BENCHMARK.complete(list(rows.values()))
    assert [row.name for row in complete] == [figure.name for figure in generation.FIGURES]

    c16 = rows[generation.C16.name]
    assert c16.value == 160.0 and c16.ratio == pytest.approx(4.0) and c16.met
    plain = rows[generation.VS_PLAIN.name]
    assert plain.ratio == pytest.approx(0.8) and plain.met
    ceiling = rows[generation.CEILING.name]
    assert ceiling.value == pytest.approx(160 * 0.27e9 / 300e9)
    assert ceiling.reference_value == pytest.approx(200 * 0.27e9 / 300e9)
    assert rows[generation.GEMM.name].value == pytest.approx(300.0)
    memory = rows[generation.ADAPTER_MEMORY.name]
    assert memory.ratio == pytest.approx(19 / 256) and not memory.met  # 7.4 % of the base: above 5 %
    assert rows[generation.TTFT_C16_P99.name].value == pytest.approx(900.0)
    assert rows[generation.TTFT_C1_P50.name].value == pytest.approx(300.0)
    for figure in generation.LLAMA_FIGURES:
        assert not rows[figure.name].measured and "make bench-setup" in (rows[figure.name].reason or "")


def test_llama_rows_compare_the_gateway_with_llama_cpp() -> None:
    llama = {"llama_single_tokens_per_second": 100.0, "llama_parallel_tokens_per_second": 320.0}
    rows = {row.name: row for row in result_rows(REFERENCE, MEASURED, llama)}
    assert rows[generation.VS_LLAMA_SINGLE.name].ratio == pytest.approx(0.4)
    assert rows[generation.VS_LLAMA_PARALLEL.name].ratio == pytest.approx(0.5)


def test_rounds_combine_into_one_load() -> None:
    one, two = _load([0.1, 0.2], tokens=100, seconds=5.0), _load([0.3, 0.4], tokens=300, seconds=5.0, errors=1)
    both = combine([one, two])
    assert (both.tokens, both.seconds, both.errors, both.first_error) == (400, 10.0, 1, "boom")
    assert both.tokens_per_s == pytest.approx(40.0)
    assert both.ttft_ms(0.5) == pytest.approx(300.0) and both.ttft_ms(0.99) == pytest.approx(400.0)


@pytest.mark.parametrize("script", [generation.REFERENCE_SCRIPT, generation.LLAMA_SCRIPT])
def test_the_scripts_skip_with_a_reason_outside_the_benchmark(script: object) -> None:
    env = {key: value for key, value in os.environ.items() if key != generation.PLAN_ENV}
    answer = subprocess.run(
        [sys.executable, str(REPO_ROOT / str(script))], env=env, capture_output=True, text=True, timeout=60, check=True
    )
    with pytest.raises(Unmeasurable) as skipped:
        parse_summary(answer.stdout)
    assert str(skipped.value)

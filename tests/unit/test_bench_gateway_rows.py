"""The gateway benchmark's rows from its rounds (issue 21): paired runs at concurrency 32 as min,
median and max, the median judged against its target (pure logic)."""

from __future__ import annotations

import pytest

from bench import gateway
from bench.gateway import Load


def _load(count: int, seconds: float, p50_ms: float) -> Load:
    return Load(count=count, errors=0, seconds=seconds, latencies_ms=(p50_ms,) * 3)


def test_five_paired_runs_become_min_median_max_rows_with_the_median_judged() -> None:
    direct = [_load(1000, 10, 100.0) for _ in range(5)]  # 100 requests/s, p50 100 ms in every run
    through = [_load(n, 10, p50) for n, p50 in ((950, 104.0), (850, 118.0), (920, 108.0), (990, 101.0), (900, 112.0))]
    rounds = {
        "direct c1": [_load(50, 1, 8.0)],
        "gateway c1": [_load(50, 1, 9.5)],
        "direct c32": direct,
        "gateway c32": through,
        "unbatched c32": [_load(400, 10, 500.0) for _ in range(5)],
    }
    rows = {row.name: row for row in gateway.results(rounds, gateway_cpu_s=2.3)}
    assert [row.name for row in gateway.results(rounds, gateway_cpu_s=2.3)] == [f.name for f in gateway.FIGURES]
    assert rows[gateway.RATIO_MIN.name].value == pytest.approx(0.85)
    assert rows[gateway.RATIO_MEDIAN.name].value == pytest.approx(0.92) and rows[gateway.RATIO_MEDIAN.name].met
    assert rows[gateway.RATIO_MAX.name].value == pytest.approx(0.99)
    assert rows[gateway.RATIO_MIN.name].target.startswith("informational")
    # p50: the run at the median of the margin to 1.1x direct + 1 ms (108 ms vs 111 ms allowed)
    median_p50 = rows[gateway.P50_C32_MEDIAN.name]
    assert (median_p50.value, median_p50.reference_value, median_p50.met) == (108.0, 100.0, True)
    assert rows[gateway.P50_C32_MAX.name].value == 118.0 and rows[gateway.P50_C32_MIN.name].value == 101.0
    assert rows[gateway.P50.name].met is True  # 9.5 <= 1.1 x 8 + 1
    assert rows[gateway.CPU_PER_REQUEST.name].value == pytest.approx(2.3e6 / 4610)
    assert rows[gateway.BATCHING.name].ratio == pytest.approx(2.5)


def test_a_median_below_the_target_is_not_met() -> None:
    direct = [_load(1000, 10, 100.0) for _ in range(3)]
    through = [_load(700, 10, 150.0) for _ in range(3)]
    rounds = {
        "direct c1": [_load(50, 1, 8.0)],
        "gateway c1": [_load(50, 1, 12.0)],
        "direct c32": direct,
        "gateway c32": through,
        "unbatched c32": direct,
    }
    rows = {row.name: row for row in gateway.results(rounds, gateway_cpu_s=0.0)}
    assert not rows[gateway.RATIO_MEDIAN.name].met
    assert not rows[gateway.P50_C32_MEDIAN.name].met and not rows[gateway.P50.name].met

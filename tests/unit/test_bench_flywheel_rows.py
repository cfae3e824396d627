"""The flywheel benchmark's rows from its stages' merged JSON, and its scripts' SKIP answers when
what they start from is missing (no model, no data: fast)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench import flywheel
from bench.framework import REPO_ROOT, Unmeasurable
from bench.script import parse_summary

SUMMARY = {
    "shifted_exact_match_before": 0.0,
    "shifted_exact_match_sft": 0.5,
    "shifted_exact_match_uplift_sft": 0.5,
    "shifted_exact_match_dpo": 0.625,
    "shifted_exact_match_uplift_dpo": 0.625,
    "known_exact_match_before": 0.8,
    "known_exact_match_sft": 0.79,
    "win_rate_dpo_vs_sft": 0.6,
    "preference_accuracy_sft": 0.7,
    "preference_accuracy_dpo": 0.9,
    "training_pairs": 48,
    "dpo_training_pairs_used": 48,
    "held_out_pairs": 32,
    "wall_seconds": 600.0,
}


def test_every_figure_has_its_row_and_reference() -> None:
    rows = {row.name: row for row in flywheel.BENCHMARK.complete(flywheel.result_rows(dict(SUMMARY)))}
    assert list(rows) == [figure.name for figure in flywheel.FIGURES]
    assert all(row.measured for row in rows.values())
    after = rows[flywheel.SHIFTED_AFTER_SFT.name]
    assert after.value == 0.5 and after.reference_value == 0.0 and after.ratio is None  # before was 0
    assert rows[flywheel.UPLIFT.name].met  # 0.625 >= 0.3 (before -> after SFT + DPO)
    dpo = rows[flywheel.SHIFTED_AFTER_DPO.name]
    assert dpo.reference_value == 0.5 and dpo.ratio == pytest.approx(1.25)
    assert rows[flywheel.WIN_RATE.name].met and rows[flywheel.PREFERENCE_ACCURACY.name].reference_value == 0.7
    assert rows[flywheel.KNOWN_AFTER_SFT.name].reference_value == 0.8
    assert rows[flywheel.TRAINING_PAIRS.name].value == 48 and rows[flywheel.HELD_OUT_PAIRS.name].value == 32


def test_an_uplift_below_the_target_and_a_losing_dpo_are_not_met() -> None:
    summary = {**SUMMARY, "shifted_exact_match_uplift_dpo": 0.25, "win_rate_dpo_vs_sft": 0.45}
    rows = {row.name: row for row in flywheel.result_rows(summary)}
    assert not rows[flywheel.UPLIFT.name].met and not rows[flywheel.WIN_RATE.name].met


def test_without_dpo_the_win_rate_is_unmeasured_with_the_reason() -> None:
    summary = {**SUMMARY, "training_pairs": 9, "dpo_training_pairs_used": 0}
    rows = {row.name: row for row in flywheel.result_rows(summary)}
    for figure in (flywheel.WIN_RATE, flywheel.PREFERENCE_ACCURACY):
        row = rows[figure.name]
        assert not row.measured and not row.met
        assert "DPO did not run: 9 training pairs" in (row.reason or "") and "dpo_min_pairs" in (row.reason or "")
    assert rows[flywheel.TRAINING_PAIRS.name].value == 0  # measured: no pair was used
    assert rows[flywheel.UPLIFT.name].measured


@pytest.mark.parametrize("script", flywheel.STAGES, ids=lambda path: path.stem)
def test_each_stage_skips_with_a_reason_when_what_it_starts_from_is_missing(script: Path, tmp_path: Path) -> None:
    env = {
        **os.environ,
        "LLMOPS_SHARED_DATA": str(tmp_path / "no-data"),
        flywheel.DIR_ENV: str(tmp_path / "work"),
    }
    answer = subprocess.run(
        [sys.executable, str(REPO_ROOT / script)], env=env, capture_output=True, text=True, timeout=60, check=True
    )
    assert answer.stdout.startswith("SKIP: "), answer.stdout + answer.stderr
    with pytest.raises(Unmeasurable, match=r"not found|lacks"):
        parse_summary(answer.stdout)

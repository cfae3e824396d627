"""Smoke test of the ``flywheel`` benchmark: its four service scripts, run by the benchmark itself
as subprocesses, at tiny sizes (two known and two shifted BANKING77 intents, a rank-4 LoRA, one SFT
step, DPO's minimum of pairs), so that a change to a service the scripts use cannot leave the
benchmark broken until the next ``make bench``. The numbers at these sizes mean nothing; the test
checks that every figure is measured and that the hand-offs between the stages hold."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from bench import flywheel
from bench.framework import BenchContext, Reporter
from llmops_models.layout import model_file
from llmops_storage import ArtifactStore

pytestmark = pytest.mark.integration

TINY = {
    "LLMOPS_BENCH_FLYWHEEL_KNOWN_INTENTS": "2",
    "LLMOPS_BENCH_FLYWHEEL_SHIFTED_INTENTS": "2",
    "LLMOPS_BENCH_FLYWHEEL_TRAIN_PER_INTENT": "4",
    "LLMOPS_BENCH_FLYWHEEL_VALIDATION_PER_INTENT": "1",
    # 18 shifted prompts, nearly all answered wrongly: at least the trainer policy's dpo_min_pairs (16)
    "LLMOPS_BENCH_FLYWHEEL_CORRECTIONS_PER_INTENT": "9",
    "LLMOPS_BENCH_FLYWHEEL_HELD_OUT_PER_INTENT": "2",
    "LLMOPS_BENCH_FLYWHEEL_TINY": "1",
    "LLMOPS_BENCH_THREADS": "1",
}
TIMEOUT_S = "540"  # within pytest's 600 s (about two minutes on two quiet cores); the environment's, if set


async def test_the_flywheel_benchmark_runs_its_four_stages_at_tiny_sizes(
    shared_data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in TINY.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv(flywheel.TIMEOUT_ENV, os.environ.get(flywheel.TIMEOUT_ENV, TIMEOUT_S))
    monkeypatch.setenv("LLMOPS_SHARED_DATA", str(shared_data_dir))
    monkeypatch.setenv(flywheel.DIR_ENV, str(tmp_path / "flywheel"))
    context = BenchContext(reporter=Reporter(total=1), python=sys.executable, _work_dir=tmp_path / "scratch")
    try:
        rows = {row.name: row for row in flywheel.BENCHMARK.complete(await flywheel.run(context))}
    finally:
        await context.close()

    assert list(rows) == [figure.name for figure in flywheel.FIGURES]
    unmeasured = {name: row.reason for name, row in rows.items() if not row.measured}
    assert not unmeasured, unmeasured
    for figure in (flywheel.SHIFTED_AFTER_SFT, flywheel.SHIFTED_AFTER_DPO, flywheel.KNOWN_AFTER_SFT):
        row = rows[figure.name]
        assert row.value is not None and 0 <= row.value <= 1 and row.reference_value is not None
    uplift, sft = rows[flywheel.UPLIFT.name], rows[flywheel.SHIFTED_AFTER_SFT.name]
    after = rows[flywheel.SHIFTED_AFTER_DPO.name].value
    assert after is not None and sft.reference_value is not None
    assert uplift.value == pytest.approx(after - sft.reference_value)  # before -> after SFT + DPO
    win_rate = rows[flywheel.WIN_RATE.name].value
    assert win_rate is not None and 0 <= win_rate <= 1

    work = tmp_path / "flywheel"
    feedback = json.loads((work / "feedback.json").read_text())
    training_pairs = [pair for pair in feedback["pairs"] if pair["split"] == "train"]
    assert rows[flywheel.TRAINING_PAIRS.name].value == len(training_pairs) >= 16
    assert rows[flywheel.HELD_OUT_PAIRS.name].value == len(feedback["pairs"]) - len(training_pairs)
    assert {pair["source"] for pair in feedback["pairs"]} == {"correction"}
    assert {example["source"] for example in feedback["examples"]} == {"feedback"}
    assert len(feedback["examples"]) == len(training_pairs)  # one corrected example per thumbs-down answer
    # Version 3 ran DPO on those pairs after the same SFT as version 2, which ran none.
    store = ArtifactStore(str(work / "store"))
    dpo = store.read_json(model_file("flywheel", 3, "training_config.json"))["dpo"]
    assert dpo["ran"] and dpo["pairs"] == len(training_pairs)
    assert not store.read_json(model_file("flywheel", 2, "training_config.json"))["dpo"]["ran"]

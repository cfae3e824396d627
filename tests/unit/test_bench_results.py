"""The benchmark result model: ``met`` is computed from the target, never typed in, and the
writers produce the documented JSON list and Markdown table. Pure and fast (no broker)."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from pathlib import Path

import pytest
from pydantic import ValidationError

from bench import instruction_tuning
from bench.fine_tuning import ACCURACY, FULL_ACCURACY, FULL_KEYS, FULL_TRAIN_TIME, KEYS, TRAIN_TIME
from bench.framework import BenchContext, Benchmark, Reporter, Unmeasurable
from bench.results import (
    INFORMATIONAL,
    BenchResult,
    Figure,
    Machine,
    Target,
    detect_machine,
    load_results,
    merge_results,
    render_markdown,
    splice_into,
    write_results,
)
from bench.script import parse_summary, rows_from_summary

FIELDS = ["name", "value", "unit", "reference_name", "reference_value", "ratio", "target", "met", "anchor", "reason"]
MACHINE = Machine(cores=2, memory_gib=23.4, cpu_model="Test CPU @ 2.0GHz")
WHEN = datetime(2026, 1, 2, 3, 4, tzinfo=UTC)

VS_BARE = Figure(
    benchmark="ingestion",
    name="vs bare",
    unit="records/s",
    reference_name="bare consumer",
    target=Target(comparison=">=", threshold=0.5, subject="ratio"),
)
ABSOLUTE = Figure(
    benchmark="ingestion", name="absolute", unit="records/s", target=Target(comparison=">=", threshold=5000)
)


@pytest.mark.parametrize(
    ("comparison", "threshold", "value", "expected"),
    [
        (">=", 5000, 5000, True),
        (">=", 5000, 4999.9, False),
        (">", 5000, 5000, False),
        ("<=", 600, 600, True),
        ("<=", 600, 600.1, False),
        ("<", 600, 599, True),
    ],
)
def test_met_follows_the_comparison_on_the_value(
    comparison: str, threshold: float, value: float, expected: bool
) -> None:
    figure = Figure(benchmark="b", name="x", unit="u", target=Target(comparison=comparison, threshold=threshold))
    assert figure.measured(value).met is expected


def test_a_ratio_target_judges_value_over_the_reference_of_the_same_run() -> None:
    assert VS_BARE.measured(6000, reference_value=10_000).ratio == pytest.approx(0.6)
    assert VS_BARE.measured(6000, reference_value=10_000).met is True
    assert VS_BARE.measured(4000, reference_value=10_000).met is False
    # no reference measured: no ratio, so a ratio target cannot be met
    assert VS_BARE.measured(6000).ratio is None
    assert VS_BARE.measured(6000).met is False
    assert VS_BARE.measured(6000, reference_value=0).met is False


def test_without_a_reference_the_ratio_is_to_the_anchor() -> None:
    row = ACCURACY.measured(0.9370)
    assert row.ratio == pytest.approx(0.937 / 0.9366)
    assert row.met is True  # issue 21: past BERT-large's 0.9366
    assert ACCURACY.measured(0.9369).met is False


def test_an_unmeasured_figure_is_a_row_with_met_false_and_its_reason() -> None:
    row = ABSOLUTE.unmeasured("shared data not found at /x")
    assert row.value is None and row.ratio is None and row.met is False
    assert row.reason == "shared data not found at /x"
    assert row.as_row()["target"] == "≥ 5,000 records/s"
    assert Figure(benchmark="b", name="info", unit="s").unmeasured("boom").met is False


def test_non_finite_values_never_meet_a_target() -> None:
    assert ABSOLUTE.measured(math.nan).met is False
    assert (
        Figure(benchmark="b", name="x", unit="s", target=Target(comparison="<=", threshold=1)).measured(math.inf).met
        is False
    )


def test_informational_figures_are_met_when_measured() -> None:
    row = Figure(benchmark="b", name="peak RSS", unit="MiB").measured(900)
    assert row.target == INFORMATIONAL and row.met is True


def test_met_cannot_be_typed_in() -> None:
    # a "met" (or "ratio"/"target") key in the input is ignored: it is recomputed from the rule
    row = BenchResult.model_validate(
        {
            "benchmark": "b",
            "name": "x",
            "value": 1.0,
            "unit": "records/s",
            "rule": {"comparison": ">=", "threshold": 5000},
            "met": True,
            "ratio": 99,
            "target": "anything",
        }
    )
    assert row.met is False and row.ratio is None and row.target == "≥ 5,000 records/s"
    with pytest.raises(ValidationError):  # frozen: nothing is assigned after the fact
        row.met = True  # type: ignore[misc]


def test_target_texts() -> None:
    assert VS_BARE.measured(1, reference_value=2).target == "≥ 0.5x bare consumer"
    assert TRAIN_TIME.measured(1).target == "≤ 600 s"
    assert Target(comparison=">=", threshold=0.92).text("") == "≥ 0.92"


def test_an_affine_target_judges_the_value_against_the_reference_times_threshold_plus_offset(tmp_path: Path) -> None:
    rule = Target(comparison="<=", threshold=1.1, subject="ratio", offset=1.0)
    figure = Figure(benchmark="b", name="p50", unit="ms", reference_name="direct p50", target=rule)
    assert figure.measured(12.0, reference_value=10.0).met is True  # 12 <= 1.1 x 10 + 1
    assert figure.measured(12.5, reference_value=10.0).met is False
    assert figure.measured(12.0).met is False  # no reference, nothing to judge against
    assert figure.measured(12.0, reference_value=10.0).target == "≤ 1.10x direct p50 + 1 ms"
    json_path, _ = write_results([figure.measured(12.0, reference_value=10.0)], tmp_path, machine=MACHINE, when=WHEN)
    assert json.loads(json_path.read_text())[0]["rule"] == {
        "comparison": "<=",
        "threshold": 1.1,
        "subject": "ratio",
        "offset": 1.0,
    }
    assert [row.met for row in load_results(json_path)] == [True]
    with pytest.raises(ValidationError):  # an offset needs a reference to be added to
        Target(comparison="<=", threshold=1.0, offset=1.0)


def test_json_is_a_list_of_rows_with_the_documented_fields_and_round_trips(tmp_path: Path) -> None:
    rows = [
        VS_BARE.measured(6000, reference_value=10_000),
        ABSOLUTE.measured(6000),
        ABSOLUTE.unmeasured("broker did not start"),
        ACCURACY.measured(0.93),
    ]
    json_path, md_path = write_results(rows, tmp_path / "bench", machine=MACHINE, when=WHEN)
    written = json.loads(json_path.read_text())
    assert isinstance(written, list) and len(written) == 4
    for row in written:
        assert list(row)[: len(FIELDS)] == FIELDS
        assert isinstance(row["met"], bool)
    assert written[0]["ratio"] == 0.6 and written[0]["reference_value"] == 10_000 and written[0]["met"] is True
    assert written[2] == written[2] | {"value": None, "met": False, "reason": "broker did not start"}
    assert written[3]["anchor"] == {"value": 0.9366, "unit": "", "source": "Casanueva et al. 2020, arXiv 2003.04807"}
    # recomputing from the written rule gives the written verdicts
    assert [row.met for row in load_results(json_path)] == [row["met"] for row in written]
    assert md_path.exists()


def test_markdown_table_has_the_date_machine_and_one_line_per_figure() -> None:
    rows = [VS_BARE.measured(6000, reference_value=10_000), ABSOLUTE.unmeasured("no | pipes\nhere")]
    text = render_markdown(rows, machine=MACHINE, when=WHEN)
    lines = text.splitlines()
    assert lines[0].startswith("#### ") and "2026-01-02 03:04 UTC" in lines[0]
    assert "2 cores" in lines[0] and "23.4 GiB" in lines[0] and "Test CPU @ 2.0GHz" in lines[0]
    table = [line for line in lines if line.startswith("|")]
    assert len(table) == 2 + len(rows)
    assert "| vs bare | 6,000 records/s | bare consumer: 10,000 records/s | 0.6x |" in table[2]
    assert "| yes |" in table[2]
    assert "not measured: no \\| pipes here" in table[3] and "**no**" in table[3]
    assert all(line.count(" | ") == 6 for line in [table[0], *table[2:]])
    assert "1 of 2 figures met" in text


def test_detect_machine_reads_proc_files(tmp_path: Path) -> None:
    (tmp_path / "cpuinfo").write_text("processor\t: 0\nmodel name\t: Fancy   CPU  9000\n\nprocessor\t: 1\n")
    (tmp_path / "meminfo").write_text("MemTotal:       24576000 kB\nMemFree: 1 kB\n")
    machine = detect_machine(tmp_path / "cpuinfo", tmp_path / "meminfo", cores=2)
    assert (machine.cores, machine.cpu_model) == (2, "Fancy CPU 9000")
    assert machine.memory_gib == pytest.approx(23.4375)
    missing = detect_machine(tmp_path / "none", tmp_path / "none", cores=1)
    assert missing.cpu_model == "unknown CPU" and missing.memory_gib == 0


def test_merge_keeps_rows_of_benchmarks_not_rerun() -> None:
    old_ingestion = ABSOLUTE.measured(1000)
    old_ft = ACCURACY.measured(0.9)
    fresh = [ABSOLUTE.measured(7000)]
    merged = merge_results([old_ingestion, old_ft], fresh, ["ingestion"])
    assert merged == [old_ft, fresh[0]]


def test_splice_into_replaces_between_markers_only() -> None:
    document = "intro\n<!-- bench:start -->\nold\n<!-- bench:end -->\noutro\n"
    assert splice_into(document, "NEW\n") == "intro\n<!-- bench:start -->\nNEW\n<!-- bench:end -->\noutro\n"
    assert splice_into("no markers", "NEW") is None


def test_a_benchmark_owes_one_row_per_figure() -> None:
    async def nothing(_: object) -> list[BenchResult]:
        return []

    benchmark = Benchmark(name="ingestion", title="t", figures=(VS_BARE, ABSOLUTE), run=nothing, time_limit_s=1)
    rows = benchmark.complete([ABSOLUTE.measured(6000)])
    assert [row.name for row in rows] == ["vs bare", "absolute"]
    assert rows[0].met is False and rows[0].reason and rows[1].met is True
    assert all(row.reason == "timeout" for row in benchmark.unmeasured("timeout"))


SCRIPT_OUTPUT = """{
  "dataset": "BANKING77",
  "test_accuracy": 0.9308,
  "test_macro_f1": 0.9301,
  "train_wall_seconds": 571.2,
  "train_examples_per_second": 35.0,
  "minutes_per_epoch": 4.76,
  "peak_rss_mib": 1843.5,
  "hyperparameters": {"epochs": 2.0}
}
BANKING77 test accuracy 0.9308 (macro-F1 0.9301) after 571s of training; -0.58 points from the anchor
"""


def test_fine_tuning_rows_from_the_scripts_json() -> None:
    """Issue 21's targets apply to each recipe, LoRA (the default) and full fine-tuning."""
    rows = rows_from_summary(parse_summary(SCRIPT_OUTPUT), FULL_KEYS)
    by_name = {row.name: row for row in rows}
    assert [row.value for row in rows] == [0.9308, 0.9301, 571.2, 35.0, 4.76, 1843.5]
    assert by_name[FULL_ACCURACY.name].met is False  # below 0.937
    assert by_name[FULL_ACCURACY.name].ratio == pytest.approx(0.9308 / 0.9366)
    assert by_name[FULL_TRAIN_TIME.name].met is True
    slow = rows_from_summary({"test_accuracy": 0.91, "train_wall_seconds": 700}, FULL_KEYS)
    assert [row.met for row in slow] == [False, False, False, False, False, False]
    assert slow[1].reason == "the script's JSON has no numeric 'test_macro_f1'"

    lora = {row.name: row for row in rows_from_summary(parse_summary(SCRIPT_OUTPUT), KEYS)}
    assert lora[ACCURACY.name].met is False and lora[TRAIN_TIME.name].met is True
    assert {f.name for f in KEYS}.isdisjoint(f.name for f in FULL_KEYS)


def test_fine_tuning_skip_line_becomes_the_reason() -> None:
    with pytest.raises(Unmeasurable, match="BANKING77 not found at /x"):
        parse_summary("SKIP: BANKING77 not found at /x (set LLMOPS_SHARED_DATA ...)\n")
    with pytest.raises(ValueError):
        parse_summary("Traceback ...\n")


def test_instruction_tuning_compares_with_the_classifier_of_the_same_results() -> None:
    summary = {
        "test_exact_match": 0.88,
        "zero_shot_exact_match": 0.05,
        "test_in_label_set": 0.99,
        "train_wall_seconds": 1100.0,
        "train_examples_per_second": 9.1,
        "train_tokens_per_second": 460.0,
        "generation_tokens_per_second": 250.0,
        "adapter_mib": 18.6,
        "peak_rss_mib": 3000.0,
    }
    context = BenchContext(reporter=Reporter(total=1), measured={ACCURACY.name: ACCURACY.measured(0.934)})
    reference = instruction_tuning.classifier_accuracy(context)
    rows = {
        row.name: row
        for row in rows_from_summary(summary, instruction_tuning.KEYS, {instruction_tuning.EXACT_MATCH: reference})
    }
    exact = rows[instruction_tuning.EXACT_MATCH.name]
    assert exact.reference_value == 0.934 and exact.ratio == pytest.approx(0.88 / 0.934) and exact.met
    assert rows[instruction_tuning.EXAMPLES_PER_S.name].met and rows[instruction_tuning.TRAIN_TIME.name].met
    slow = rows_from_summary({**summary, "train_examples_per_second": 5.0}, instruction_tuning.KEYS)
    assert [row.met for row in slow if row.name == instruction_tuning.EXAMPLES_PER_S.name] == [False]
    # Without a classifier row the ratio is to the published anchor.
    alone = BenchContext(reporter=Reporter(total=1))
    assert instruction_tuning.classifier_accuracy(alone) is None
    anchored = rows_from_summary(summary, instruction_tuning.KEYS, {instruction_tuning.EXACT_MATCH: None})[0]
    assert anchored.ratio == pytest.approx(0.88 / 0.9366)


def test_rows_of_benchmarks_that_did_not_run_are_kept_from_the_readme() -> None:
    from bench.results import kept_rows

    earlier = (
        "intro\n<!-- bench:start -->\n#### Benchmark results: 2026-11-28 17:20 UTC, 2 cores\n\n"
        "| Figure | Value | Reference (same run) | Ratio | Target | Met | Anchor |\n|---|---:|---|---:|---|:---:|---|\n"
        "| old ingestion | 1 records/s |  |  | ≥ 5 records/s | **no** |  |\n"
        "| accuracy | 0.93 |  | 0.99x | ≥ 0.92 | yes | 0.94 (paper) |\n"
        "| p50 | 25 ms |  |  | informational (no target) | yes |  |\n\n"
        "2 of 3 figures met their target (`make bench`, `var/bench/results.json`).\n<!-- bench:end -->\noutro\n"
    )
    rows, heading = kept_rows(earlier, ["accuracy", "p50"])
    assert heading == "Benchmark results: 2026-11-28 17:20 UTC, 2 cores"
    assert [row.split("|")[1].strip() for row in rows] == ["accuracy", "p50"]

    fresh = BenchResult(benchmark="ingestion", name="old ingestion", value=9.0, unit="records/s")
    table = render_markdown([fresh], machine=MACHINE, when=WHEN)
    merged = render_markdown([fresh], machine=MACHINE, when=WHEN, kept=rows, kept_from=heading)
    assert "| old ingestion | 9 records/s |" in merged and rows[0] in merged and rows[1] in merged
    assert "kept from the README's previous table, headed “Benchmark results: 2026-11-28 17:20 UTC, 2 cores”" in merged
    assert merged.endswith("3 of 3 figures met their target (`make bench`, `var/bench/results.json`).\n")
    assert "kept from" not in table and table.endswith(
        "1 of 1 figures met their target (`make bench`, `var/bench/results.json`).\n"
    )
    assert kept_rows("no markers", ["accuracy"]) == ([], None)

"""The benchmark result model and its writers (``var/bench/results.json`` and ``results.md``).

One row per figure. Whether a figure meets its target is never typed in: every figure carries a
machine-readable ``Target`` (comparison, threshold, and whether it applies to the value or to the
ratio against the reference measured in the same run), and ``met``, ``ratio`` and the target's
text are computed from it. The rule itself is written to the JSON as ``rule`` so anyone can
recompute ``met`` from the file alone.

A figure without a target is informational (``target`` reads "informational"); it counts as met
when it was measured. A figure that could not be measured is still a row: ``value`` null,
``met`` false and the ``reason``.
"""

from __future__ import annotations

import json
import math
import operator
import os
import re
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, computed_field, model_validator

Comparison = Literal[">=", "<=", ">", "<"]

_COMPARE: dict[str, Callable[[float, float], bool]] = {
    ">=": operator.ge,
    "<=": operator.le,
    ">": operator.gt,
    "<": operator.lt,
}
_SYMBOL = {">=": "≥", "<=": "≤", ">": ">", "<": "<"}
INFORMATIONAL = "informational (no target)"


def format_number(value: float) -> str:
    """Human-readable: thousands separators for big numbers, up to 4 significant digits for small ones."""
    if not math.isfinite(value):
        return str(value)
    if value == int(value) and abs(value) >= 1:
        return f"{int(value):,}"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 1:
        return f"{value:,.2f}"
    return f"{value:.4g}"


class Target(BaseModel):
    """A machine-readable target: ``<subject> <comparison> <threshold>``.

    ``subject="value"`` judges the figure itself (e.g. ``>= 5000`` records/s); ``subject="ratio"``
    judges the figure divided by its reference (e.g. ``>= 0.5`` times the bare consumer). With an
    ``offset`` (ratio only, in the figure's unit) the rule is affine in the reference:
    ``value <comparison> threshold x reference + offset`` (e.g. a latency ``<= 1.1x`` the direct
    path's ``+ 1`` ms).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    comparison: Comparison
    threshold: float
    subject: Literal["value", "ratio"] = "value"
    offset: float | None = None

    @model_validator(mode="after")
    def _offset_needs_a_reference(self) -> Target:
        if self.offset is not None and self.subject != "ratio":
            raise ValueError("offset applies to a ratio target only (threshold x reference + offset)")
        return self

    def holds(self, value: float | None, ratio: float | None, reference: float | None = None) -> bool:
        if self.offset is not None:
            if value is None or reference is None or not (math.isfinite(value) and math.isfinite(reference)):
                return False
            return _COMPARE[self.comparison](value, self.threshold * reference + self.offset)
        observed = value if self.subject == "value" else ratio
        if observed is None or not math.isfinite(observed):
            return False
        return _COMPARE[self.comparison](observed, self.threshold)

    def text(self, unit: str, reference_name: str | None = None) -> str:
        symbol = _SYMBOL[self.comparison]
        if self.subject == "ratio":
            text = f"{symbol} {format_number(self.threshold)}x {reference_name or 'the reference'}"
            if self.offset is not None:
                sign = "-" if self.offset < 0 else "+"
                text += f" {sign} {format_number(abs(self.offset))} {unit}".rstrip()
            return text
        return f"{symbol} {format_number(self.threshold)} {unit}".rstrip()


class Anchor(BaseModel):
    """A published figure the result is judged against, with where it was published."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    value: float
    unit: str
    source: str


class BenchResult(BaseModel):
    """One figure of one benchmark. ``ratio``, ``target`` (text) and ``met`` are computed."""

    model_config = ConfigDict(frozen=True, extra="ignore")  # computed keys of a written row are ignored on load

    benchmark: str = Field(min_length=1)
    name: str = Field(min_length=1)
    value: float | None
    unit: str
    reference_name: str | None = None
    reference_value: float | None = None
    anchor: Anchor | None = None
    rule: Target | None = None
    reason: str | None = None

    @property
    def measured(self) -> bool:
        return self.value is not None and math.isfinite(self.value) and self.reason is None

    @computed_field  # type: ignore[prop-decorator]
    @property
    def ratio(self) -> float | None:
        """Value over the reference measured in the same run; without one, over the anchor."""
        if not self.measured or self.value is None:
            return None
        base = self.reference_value
        if base is None and self.anchor is not None:
            base = self.anchor.value
        if base is None or base == 0 or not math.isfinite(base):
            return None
        return self.value / base

    @computed_field  # type: ignore[prop-decorator]
    @property
    def target(self) -> str:
        if self.rule is None:
            return INFORMATIONAL
        return self.rule.text(self.unit, self.reference_name)

    @computed_field  # type: ignore[prop-decorator]
    @property
    def met(self) -> bool:
        if not self.measured:
            return False
        if self.rule is None:
            return True
        return self.rule.holds(self.value, self.ratio, self.reference_value)

    def as_row(self) -> dict[str, Any]:
        """The JSON object of this figure, keys in the documented order."""
        ratio = self.ratio
        return {
            "name": self.name,
            "value": self.value,
            "unit": self.unit,
            "reference_name": self.reference_name,
            "reference_value": self.reference_value,
            "ratio": None if ratio is None else round(ratio, 4),
            "target": self.target,
            "met": self.met,
            "anchor": None if self.anchor is None else self.anchor.model_dump(),
            "reason": self.reason,
            "benchmark": self.benchmark,
            "rule": None if self.rule is None else self.rule.model_dump(exclude_none=True),
        }


class Figure(BaseModel):
    """What a benchmark promises to measure, fixed before it runs: name, unit, target, anchor.

    ``measured`` and ``unmeasured`` turn it into a row, so a benchmark that fails still yields
    one row per figure it owes.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    benchmark: str
    name: str
    unit: str
    target: Target | None = None
    anchor: Anchor | None = None
    reference_name: str | None = None

    def measured(self, value: float, *, reference_value: float | None = None) -> BenchResult:
        return BenchResult(
            benchmark=self.benchmark,
            name=self.name,
            value=float(value),
            unit=self.unit,
            reference_name=self.reference_name,
            reference_value=reference_value,
            anchor=self.anchor,
            rule=self.target,
        )

    def unmeasured(self, reason: str) -> BenchResult:
        return BenchResult(
            benchmark=self.benchmark,
            name=self.name,
            value=None,
            unit=self.unit,
            reference_name=self.reference_name,
            anchor=self.anchor,
            rule=self.target,
            reason=reason or "unknown error",
        )


class Machine(BaseModel):
    model_config = ConfigDict(frozen=True)

    cores: int
    memory_gib: float
    cpu_model: str

    def describe(self) -> str:
        return f"{self.cores} cores, {self.memory_gib:.1f} GiB memory, {self.cpu_model}"


def detect_machine(
    cpuinfo: Path = Path("/proc/cpuinfo"), meminfo: Path = Path("/proc/meminfo"), cores: int | None = None
) -> Machine:
    """Cores usable by this process, total memory and the CPU model (Linux ``/proc``)."""
    if cores is None:
        try:
            cores = len(os.sched_getaffinity(0))
        except (AttributeError, OSError):
            cores = os.cpu_count() or 0
    model = "unknown CPU"
    try:
        match = re.search(r"^model name\s*:\s*(.+)$", cpuinfo.read_text(errors="replace"), re.MULTILINE)
        if match:
            model = " ".join(match.group(1).split())
    except OSError:
        pass
    memory_gib = 0.0
    try:
        match = re.search(r"^MemTotal:\s*(\d+)\s*kB", meminfo.read_text(errors="replace"), re.MULTILINE)
        if match:
            memory_gib = int(match.group(1)) / 1024 / 1024
    except OSError:
        pass
    return Machine(cores=cores, memory_gib=memory_gib, cpu_model=model)


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render_markdown(
    results: Sequence[BenchResult],
    *,
    machine: Machine,
    when: datetime,
    kept: Sequence[str] = (),
    kept_from: str | None = None,
) -> str:
    """The results as a Markdown table under a heading line with the date and the machine.

    ``kept``: table lines of an earlier table (``kept_rows``) appended after the results, said
    to come from the table headed ``kept_from``, and counted with them."""
    lines = [
        f"#### Benchmark results: {when.astimezone(UTC):%Y-%m-%d %H:%M} UTC, {_cell(machine.describe())}",
        "",
        "| Figure | Value | Reference (same run) | Ratio | Target | Met | Anchor |",
        "|---|---:|---|---:|---|:---:|---|",
    ]
    for result in results:
        if result.measured and result.value is not None:
            value = f"{format_number(result.value)} {result.unit}".rstrip()
        else:
            value = f"not measured: {result.reason}"
        reference = ""
        if result.reference_name:
            shown = "—" if result.reference_value is None else format_number(result.reference_value)
            reference = f"{result.reference_name}: {shown} {result.unit}".rstrip()
        ratio = "" if result.ratio is None else f"{format_number(result.ratio)}x"
        anchor = ""
        if result.anchor is not None:
            shown = f"{format_number(result.anchor.value)} {result.anchor.unit}".rstrip()
            anchor = f"{shown} ({result.anchor.source})"
        met = "yes" if result.met else "**no**"
        cells = [result.name, value, reference, ratio, result.target, met, anchor]
        lines.append("| " + " | ".join(_cell(cell) for cell in cells) + " |")
    lines += kept
    if kept:
        origin = f", headed “{kept_from}”" if kept_from else ""
        lines += [
            "",
            f"The last {len(kept)} rows were kept from the README's previous table{origin}: "
            "their benchmarks did not run this time.",
        ]
    met_count = sum(result.met for result in results) + sum(_cells(line)[5] == "yes" for line in kept)
    total = len(results) + len(kept)
    lines += ["", f"{met_count} of {total} figures met their target (`make bench`, `var/bench/results.json`)."]
    return "\n".join(lines) + "\n"


def _write_atomically(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    scratch = path.with_name(f".{path.name}.tmp")
    scratch.write_text(text, encoding="utf-8")
    os.replace(scratch, path)


def write_results(
    results: Sequence[BenchResult], out_dir: Path, *, machine: Machine, when: datetime | None = None
) -> tuple[Path, Path]:
    """Write ``results.json`` (a JSON list, one object per figure) and ``results.md``."""
    when = when or datetime.now(UTC)
    json_path, md_path = out_dir / "results.json", out_dir / "results.md"
    _write_atomically(
        json_path,
        json.dumps([result.as_row() for result in results], indent=2, ensure_ascii=False, allow_nan=False) + "\n",
    )
    _write_atomically(md_path, render_markdown(results, machine=machine, when=when))
    return json_path, md_path


_ROWS = TypeAdapter(list[BenchResult])


def load_results(path: Path) -> list[BenchResult]:
    """Rows of an earlier ``results.json`` (``met``/``ratio``/``target`` are recomputed)."""
    return _ROWS.validate_json(path.read_bytes())


def merge_results(
    previous: Iterable[BenchResult], fresh: Sequence[BenchResult], rerun: Iterable[str]
) -> list[BenchResult]:
    """Earlier rows of benchmarks not run this time, then this run's rows (``--only``)."""
    replaced = set(rerun) | {result.benchmark for result in fresh}
    return [result for result in previous if result.benchmark not in replaced] + list(fresh)


README_START = "<!-- bench:start -->"
README_END = "<!-- bench:end -->"


def splice_into(document: str, table: str) -> str | None:
    """``document`` with the text between the bench markers replaced by ``table``; None without markers."""
    start, end = document.find(README_START), document.find(README_END)
    if start < 0 or end < start:
        return None
    return f"{document[: start + len(README_START)]}\n{table}{document[end:]}"


def _cells(line: str) -> list[str]:
    """The cells of a table line (Figure, Value, Reference, Ratio, Target, Met, Anchor)."""
    return [cell.strip() for cell in line.strip().strip("|").split("|")]


def kept_rows(document: str, figure_names: Iterable[str]) -> tuple[list[str], str | None]:
    """The table lines of ``document``'s bench block whose figure is one of ``figure_names``,
    verbatim, and that block's heading (its date and machine).

    For ``--only`` without an earlier ``results.json`` (a fresh checkout): the rows of the
    benchmarks not re-run stay as they were measured instead of vanishing from the README
    (``render_markdown(kept=...)``).
    """
    start, end = document.find(README_START), document.find(README_END)
    if start < 0 or end < start:
        return [], None
    names = set(figure_names)
    block = document[start + len(README_START) : end].splitlines()
    heading = next((line.removeprefix("#### ").strip() for line in block if line.startswith("#### ")), None)
    rows = [line for line in block if line.startswith("| ") and _cells(line)[0] in names]
    return rows, heading

"""Run every registered benchmark in one go: ``python -m bench.run [--only NAME ...]``.

Each benchmark runs under its own time limit; a failure is caught and becomes met:false rows
with the reason, so the results always hold one row per figure. The Kafka broker (and anything
else a benchmark needs) is started here, on free ports with a temporary var dir, and stopped at
the end. Results: ``var/bench/results.json`` and ``var/bench/results.md``.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import time
import traceback
from datetime import UTC, datetime
from pathlib import Path

if __package__ in (None, ""):  # ``python bench/run.py``
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.framework import REPO_ROOT, BenchContext, Benchmark, Reporter, Unmeasurable
from bench.results import (
    BenchResult,
    detect_machine,
    format_number,
    kept_rows,
    load_results,
    merge_results,
    render_markdown,
    splice_into,
    write_results,
)


def registry() -> list[Benchmark]:
    """Every benchmark of the service issues, in the order they run."""
    from bench import (
        fine_tuning,
        flywheel,
        gateway,
        generation,
        generation_monitoring,
        ingestion,
        ingestion_scale,
        instruction_tuning,
        monitoring,
        redaction,
        serving,
    )

    return [
        ingestion.BENCHMARK,
        ingestion_scale.BENCHMARK,
        redaction.BENCHMARK,
        fine_tuning.BENCHMARK,
        instruction_tuning.BENCHMARK,
        gateway.BENCHMARK,
        serving.BENCHMARK,
        monitoring.BENCHMARK,
        generation.BENCHMARK,
        generation_monitoring.BENCHMARK,
        flywheel.BENCHMARK,
    ]


async def run_one(benchmark: Benchmark, context: BenchContext) -> list[BenchResult]:
    reporter = context.reporter
    reporter.begin(f"{benchmark.name}: {benchmark.title}")
    started = time.monotonic()
    try:
        async with asyncio.timeout(benchmark.time_limit_s):
            rows = benchmark.complete(await benchmark.run(context))
    except Unmeasurable as error:
        rows = benchmark.unmeasured(str(error))
    except TimeoutError:
        rows = benchmark.unmeasured(f"did not finish within its time limit of {benchmark.time_limit_s:.0f} s")
    except Exception as error:
        reporter.step("".join(traceback.format_exception(error)).rstrip())
        rows = benchmark.unmeasured(f"failed: {type(error).__name__}: {error}")
    elapsed = time.monotonic() - started
    for row in rows:
        if row.measured and row.value is not None:
            ratio = "" if row.ratio is None else f" ({format_number(row.ratio)}x)"
            shown = f"{format_number(row.value)} {row.unit}{ratio}"
        else:
            shown = f"not measured: {row.reason}"
        reporter.step(f"    {'✓' if row.met else '✗'} {row.name}: {shown}; target {row.target}")
    reporter.end(benchmark.name, f"{sum(row.met for row in rows)}/{len(rows)} met in {elapsed:.0f}s")
    return rows


async def run_all(
    benchmarks: list[Benchmark], reporter: Reporter, earlier: list[BenchResult] | None = None
) -> list[BenchResult]:
    context = BenchContext(reporter=reporter, measured={row.name: row for row in earlier or []})
    rows: list[BenchResult] = []
    try:
        for benchmark in benchmarks:
            fresh = await run_one(benchmark, context)
            context.measured.update({row.name: row for row in fresh})
            rows += fresh
    finally:
        await context.close()
    return rows


def main(argv: list[str] | None = None) -> int:
    known = registry()
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--only",
        nargs="+",
        metavar="NAME",
        choices=[b.name for b in known],
        help="run only these benchmarks (their rows replace the earlier ones in the results)",
    )
    parser.add_argument("--list", action="store_true", help="list the benchmarks and their figures, then exit")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "var" / "bench", help="results folder")
    parser.add_argument(
        "--readme",
        type=Path,
        default=None,
        help="also put the Markdown table between <!-- bench:start --> and <!-- bench:end --> here",
    )
    parser.add_argument("--strict", action="store_true", help="exit 1 when any figure missed its target")
    args = parser.parse_args(argv)

    if args.list:
        for benchmark in known:
            print(f"{benchmark.name}: {benchmark.title} (limit {benchmark.time_limit_s:.0f} s)")
            for figure in benchmark.figures:
                print(f"  - {figure.name} [{figure.unit}]")
        return 0

    selected = [b for b in known if not args.only or b.name in args.only]
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    # aiokafka logs transient start-up states (coordinator not yet available) as errors; it retries.
    logging.getLogger("aiokafka.consumer.group_coordinator").setLevel(logging.CRITICAL)
    json_path = args.out / "results.json"
    earlier: list[BenchResult] = []
    if json_path.exists():
        try:
            earlier = load_results(json_path)
        except ValueError as error:
            print(f"earlier {json_path} unreadable ({error}); writing this run's rows only", file=sys.stderr)
    with Reporter(total=len(selected)) as reporter:
        rows = asyncio.run(run_all(selected, reporter, earlier))
    if args.only:
        rows = merge_results(earlier, rows, [b.name for b in selected])
    machine, when = detect_machine(), datetime.now(UTC)
    json_path, md_path = write_results(rows, args.out, machine=machine, when=when)
    table = md_path.read_text(encoding="utf-8")
    if args.readme is not None:
        document = args.readme.read_text(encoding="utf-8")
        shown = {row.benchmark for row in rows}
        missing = [figure.name for b in known if b.name not in shown for figure in b.figures]
        kept_lines, heading = kept_rows(document, missing)
        readme_table = render_markdown(rows, machine=machine, when=when, kept=kept_lines, kept_from=heading)
        spliced = splice_into(document, readme_table)
        if spliced is None:
            print(
                f"{args.readme} has no <!-- bench:start --> / <!-- bench:end --> markers; left as is", file=sys.stderr
            )
        else:
            args.readme.write_text(spliced, encoding="utf-8")
    print(table)
    print(f"wrote {json_path} and {md_path}")
    return 1 if args.strict and not all(row.met for row in rows) else 0


if __name__ == "__main__":
    sys.exit(main())

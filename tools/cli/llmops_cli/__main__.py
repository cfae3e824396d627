"""``llmops``: the command behind every make target (``python -m llmops_cli`` works too)."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from rich.status import Status

from llmops_cli.keys import keys_app
from llmops_cli.state import state_app
from llmops_config import PlatformSettings

app = typer.Typer(help="Operate the llmops platform.", no_args_is_help=True, add_completion=False)
stack_app = typer.Typer(help="The local stack: Kafka (KRaft) and Triton as background processes.", no_args_is_help=True)
topics_app = typer.Typer(help="Kafka topics of the platform.", no_args_is_help=True)
dlq_app = typer.Typer(help="The dead-letter queue.", no_args_is_help=True)
app.add_typer(stack_app, name="stack")
app.add_typer(topics_app, name="topics")
app.add_typer(dlq_app, name="dlq")
events_app = typer.Typer(help="Events on the bus, across topics.", no_args_is_help=True)
app.add_typer(events_app, name="events")
app.add_typer(keys_app, name="keys")
app.add_typer(state_app, name="state")

T = TypeVar("T")


class ConsoleProgress:
    """Stack progress for people: a spinner on a terminal, a line every few seconds otherwise (make, CI)."""

    def __init__(self, console: Console, quiet_interval: float = 5.0) -> None:
        self.console = console
        self.quiet_interval = quiet_interval
        self._status: Status | None = None
        self._last_plain = time.monotonic()  # plain output: report a wait only once it lasts

    def step(self, message: str) -> None:
        self.console.print(escape(message), highlight=False)
        self._last_plain = time.monotonic()

    def waiting(self, message: str) -> None:
        if self._status is not None:
            self._status.update(escape(message))
        elif time.monotonic() - self._last_plain >= self.quiet_interval:
            self.step(message)

    @contextmanager
    def active(self) -> Iterator[ConsoleProgress]:
        """Show the spinner (terminals only) while the block runs."""
        if not self.console.is_terminal:
            yield self
            return
        with self.console.status("starting…") as status:
            self._status = status
            try:
                yield self
            finally:
                self._status = None


def _console() -> Console:
    return Console(highlight=False, soft_wrap=True)  # operators copy paths from these lines: never wrap


def _settings() -> PlatformSettings:
    return PlatformSettings()


def _guard(action: Callable[[], T]) -> T:
    """Run ``action``; turn the stack's expected failures into a readable message and exit code 1."""
    from llmops_cli.ops import OpsUnavailable
    from llmops_stack import RepositoryNotFoundError, StackError, TopicCreationError

    try:
        return action()
    except (StackError, RepositoryNotFoundError, TopicCreationError, OpsUnavailable, ValueError) as error:
        Console(stderr=True, highlight=False, soft_wrap=True).print(f"[red]error:[/red] {escape(str(error))}")
        raise typer.Exit(1) from None


def _print_statuses(console: Console, statuses: list[Any]) -> bool:
    """One aligned line per component; True if all are healthy."""
    for entry in statuses:
        state = "[green]healthy[/green] " if entry.healthy else "[red]down[/red]    "
        console.print(f"{entry.name:<12} {state} {escape(entry.detail)}")
    return all(entry.healthy for entry in statuses)


# -- stack --------------------------------------------------------------------------------------------
@stack_app.command("up")
def stack_up() -> None:
    """Start Kafka, create the topics, start Triton; wait until all are healthy (idempotent)."""
    from llmops_cli import stack

    console = _console()
    progress = ConsoleProgress(console)
    started = time.monotonic()
    with progress.active():
        statuses = _guard(lambda: stack.up(_settings(), progress=progress))
    healthy = _print_statuses(console, statuses)
    console.print(f"stack up in {time.monotonic() - started:.1f}s" if healthy else "[red]stack is not healthy[/red]")
    if not healthy:
        raise typer.Exit(1)


@stack_app.command("down")
def stack_down() -> None:
    """Stop what `llmops stack up` started (by pid file); data under var/ is kept."""
    from llmops_cli import stack

    console = _console()
    progress = ConsoleProgress(console)
    with progress.active():
        stopped = _guard(lambda: stack.down(_settings(), progress=progress))
    console.print(f"stopped: {', '.join(stopped)}" if stopped else "nothing was running")


@stack_app.command("status")
def stack_status() -> None:
    """One line per component, healthy or not and why; exit code 1 if any is down."""
    from llmops_cli import ops, stack

    console = _console()
    healthy = _print_statuses(console, _guard(lambda: stack.status(_settings())))
    try:
        models = ops.models_status(_settings())
    except (ops.OpsUnavailable, ValueError) as error:
        console.print(f"models: unknown ({escape(str(error))})")
    else:
        console.print("models:" if models else "models: none deployed yet")
        for model in models:
            console.print(f"  {escape(ops.describe(model))}")
    if not healthy:
        raise typer.Exit(1)


@stack_app.command("build-triton-backend")
def stack_build_triton_backend() -> None:
    """Create build/triton/backends/python: symlinks to the wheel's Python backend and its stub."""
    from llmops_stack import build_backend_dir, inspect_runtime, repo_paths

    def build() -> Path:
        paths = repo_paths()
        return build_backend_dir(inspect_runtime(paths.triton_venv), paths.triton_backend_dir)

    folder = _guard(build)
    _console().print(f"backend folder {folder}: " + ", ".join(sorted(p.name for p in folder.iterdir())))


@stack_app.command("logs")
def stack_logs(
    follow: Annotated[bool, typer.Option("--follow/--no-follow", "-f", help="Keep printing new lines.")] = True,
    lines: Annotated[int, typer.Option("--lines", "-n", help="Lines of history per log.")] = 20,
    service: Annotated[
        str | None, typer.Option(help="Only this component's log (e.g. gateway, kafka, triton, jaeger).")
    ] = None,
) -> None:
    """Show (and follow) the logs of everything `llmops stack up` started (var/logs/<name>.log,
    rotated by size into <name>.log.1, ...; `tail -F` follows the rotation)."""
    log_dir = _settings().var_dir / "logs"
    logs = sorted(str(path) for path in log_dir.glob("*.log"))
    if not logs:
        _console().print(f"no logs under {log_dir}")
        raise typer.Exit(0)
    if service is not None:
        wanted = log_dir / f"{service}.log"
        if str(wanted) not in logs:
            names = ", ".join(Path(path).stem for path in logs)
            Console(stderr=True, highlight=False, soft_wrap=True).print(
                f"[red]error:[/red] no log {escape(str(wanted))}; the logs are: {escape(names)}"
            )
            raise typer.Exit(2)
        logs = [str(wanted)]
    os.execvp("tail", ["tail", f"-n{lines}", *(["-F"] if follow else []), *logs])


# -- topics -------------------------------------------------------------------------------------------
@topics_app.command("create")
def topics_create(
    replication_factor: Annotated[
        int, typer.Option(help="Replicas per partition (0: LLMOPS_KAFKA_REPLICATION_FACTOR, 1 on the embedded broker).")
    ] = 0,
) -> None:
    """Create every platform topic the broker lacks (existing topics are left as they are)."""
    from llmops_events.topics import TOPICS
    from llmops_stack import ensure_topics

    settings = _settings()
    console = _console()

    def create() -> Any:
        from aiokafka.errors import KafkaError

        from llmops_config.kafka import kafka_client_options
        from llmops_stack import StackError
        from llmops_stack.kafka import parse_address
        from llmops_stack.processes import port_open

        # Checked first: aiokafka would also log its own connection errors to stderr.
        if not port_open(*parse_address(settings.kafka_bootstrap_servers)):
            raise StackError(
                f"{settings.kafka_bootstrap_servers} is not reachable (is the broker up? `llmops stack status`)"
            )
        try:
            return asyncio.run(
                ensure_topics(
                    kafka_client_options(settings, service="topics"),
                    TOPICS,
                    replication_factor=replication_factor or settings.kafka.replication_factor,
                    min_insync_replicas=settings.kafka.min_insync_replicas,
                )
            )
        except (OSError, TimeoutError, KafkaError) as error:
            raise StackError(
                f"{settings.kafka_bootstrap_servers}: {error!r} (is the broker up? `llmops stack status`)"
            ) from error

    report = _guard(create)
    for name in report.created:
        console.print(f"created  {name}")
    for name in report.existing:
        console.print(f"exists   {name}")
    for line in report.drift:
        console.print(f"[yellow]drift[/yellow]    {escape(line)}")


# -- other runbooks -----------------------------------------------------------------------------------
@app.command("generate")
def generate(
    check: Annotated[
        bool, typer.Option("--check", help="Write nothing; fail if contracts/ differs from what the models generate.")
    ] = False,
) -> None:
    """Regenerate gen/python (protobuf and gRPC stubs), contracts/ (JSON Schemas, AsyncAPI, protos) and the
    Helm chart's topics and Kafka users (deploy/helm/llmops/files)."""
    from llmops_cli.chart import check_generated as check_chart_files
    from llmops_cli.chart import write_generated as write_chart_files
    from llmops_cli.codegen import check_contracts, generate_contracts, generate_protobuf
    from llmops_stack import repo_paths

    root = _guard(repo_paths).root
    console = _console()
    if check:
        problems = check_contracts(root / "contracts", root / "proto") + check_chart_files(root)
        if problems:
            console.print("contracts/ or the chart's generated files are out of date with the code:", highlight=False)
            for problem in problems:
                console.print(f"  {escape(problem)}", highlight=False)
            console.print(
                "regenerate and commit them: make generate && git add contracts deploy/helm/llmops/files",
                highlight=False,
            )
            raise typer.Exit(1)
        console.print("contracts/ and deploy/helm/llmops/files match the models, protos, topics and ACLs")
        return
    stubs = generate_protobuf(root / "proto", root / "gen" / "python")
    contracts = generate_contracts(root / "contracts", root / "proto")
    chart_files = write_chart_files(root)
    console.print(
        f"generated {len(stubs)} stub modules in gen/python, {len(contracts)} contract files in contracts/,"
        f" {len(chart_files)} files in deploy/helm/llmops/files"
    )


@app.command("chart-check")
def chart_check() -> None:
    """Lint and render the Helm chart (deploy/helm/llmops) with build/go/bin/helm, default and production
    values, and validate every object against the Kubernetes and the vendored CRD schemas (make lint)."""
    from llmops_cli.chart import ChartCheckError, check_chart
    from llmops_stack import repo_paths

    root = _guard(repo_paths).root
    console = _console()
    try:
        lines = check_chart(root, root / "build" / "go" / "bin" / "helm")
    except ChartCheckError as error:
        Console(stderr=True, highlight=False, soft_wrap=True).print(f"[red]error:[/red] {escape(str(error))}")
        raise typer.Exit(1) from error
    for line in lines:
        console.print(f"chart: {escape(line)}")


@dlq_app.command("replay")
def dlq_replay(
    topic: Annotated[str | None, typer.Option(help="Only entries that came from this topic.")] = None,
    reason: Annotated[str | None, typer.Option(help="Only entries with this error.reason.")] = None,
) -> None:
    """Send each dead-lettered message back to its original topic, once."""
    from llmops_cli.dlq import replay_dead_letters

    summary = asyncio.run(replay_dead_letters(_settings(), topic=topic, reason=reason))
    console = _console()
    total = sum(summary.replayed.values())
    console.print(f"replayed {total} message(s)" + "".join(f"\n  {k or '?'}: {v}" for k, v in summary.replayed.items()))
    console.print(
        f"skipped: {summary.skipped_already_replayed} already replayed, {summary.skipped_by_filter} filtered out"
    )


@dlq_app.command("list")
def dlq_list(
    topic: Annotated[str | None, typer.Option(help="Only entries that came from this topic.")] = None,
    reason: Annotated[str | None, typer.Option(help="Only entries with this error.reason.")] = None,
) -> None:
    """Dead-lettered messages by origin topic and reason: how many, the newest, and its detail."""
    from llmops_cli.bus import list_dead_letters

    groups = _guard(lambda: asyncio.run(list_dead_letters(_settings(), topic=topic, reason=reason)))
    console = _console()
    if not groups:
        console.print("the DLQ is empty" + (" for this filter" if topic or reason else ""))
        return
    console.print(f"{'topic':<28} {'reason':<24} {'stage':<10} {'count':>6}  newest")
    for group in groups:
        console.print(
            f"{group.topic:<28} {group.reason:<24} {group.stage:<10} {group.count:>6}  {group.newest}"
            f"\n    {escape(group.detail[:200])}"
        )
    console.print(
        f"{sum(group.count for group in groups)} message(s); replay with `make dlq-replay [TOPIC=] [REASON=]`"
    )


@events_app.command("tail")
def events_tail(
    correlation: Annotated[str, typer.Option(help="The correlation id to follow (CloudEvents correlationid).")],
    since_minutes: Annotated[
        float, typer.Option(help="Start this many minutes ago (0: from the beginning of every topic).")
    ] = 24 * 60,
    follow: Annotated[
        float, typer.Option(help="Then keep printing new events for this many seconds (0: stop at the end).")
    ] = 0.0,
    topic: Annotated[
        list[str] | None, typer.Option(help="Only these topics (repeat the option; default: every platform topic).")
    ] = None,
) -> None:
    """Every event that carries one correlation id, on every platform topic (the DLQ included)."""
    from llmops_cli.bus import tail_correlation

    console = _console()

    async def tail() -> int:
        seen = 0
        since_s = since_minutes * 60 if since_minutes > 0 else None
        async for event in tail_correlation(
            _settings(), correlation, since_s=since_s, follow_s=follow, topics=topic or None
        ):
            seen += 1
            subject = f" subject={event.subject}" if event.subject else ""
            console.print(
                f"{event.time}  {event.topic}[{event.partition}]@{event.offset}  {event.type}  id={event.id}{subject}"
            )
        return seen

    seen = _guard(lambda: asyncio.run(tail()))
    console.print(f"{seen} event(s) with correlation id {escape(correlation)}")


@app.command("lag")
def lag_command(
    group: Annotated[str | None, typer.Option(help="Only this consumer group (default: every group).")] = None,
) -> None:
    """Consumer lag per group and partition (end offset - committed offset), from the Admin API."""
    from llmops_cli.bus import group_lag

    rows = _guard(lambda: asyncio.run(group_lag(_settings(), group=group)))
    console = _console()
    if not rows:
        console.print("no consumer group has committed offsets" + (f" (group {escape(group)})" if group else ""))
        return
    console.print(f"{'group':<36} {'topic':<28} {'partition':>9} {'committed':>10} {'end':>10} {'lag':>8}")
    for row in rows:
        committed = "-" if row.committed is None else str(row.committed)
        console.print(f"{row.group:<36} {row.topic:<28} {row.partition:>9} {committed:>10} {row.end:>10} {row.lag:>8}")


@app.command("dashboard")
def dashboard_command() -> None:
    """Regenerate the Grafana dashboard deploy/grafana/llmops.json from its builder (`make generate`)."""
    from llmops_cli import dashboard
    from llmops_stack import repo_paths

    path = dashboard.write(_guard(repo_paths).root)
    _console().print(f"wrote {path} ({len(dashboard.llmops_dashboard().queries())} queries)")


@app.command("demo")
def demo(
    model: Annotated[str, typer.Option(help="Model name to train and evaluate.")] = "banking-intents",
    labels: Annotated[int, typer.Option(help="Number of intents in the demo data.")] = 20,
    per_label: Annotated[int, typer.Option(help="Labelled records per intent.")] = 60,
    epochs: Annotated[float, typer.Option(help="Training epochs.")] = 3.0,
    data_dir: Annotated[
        Path | None, typer.Option(help="Folder holding banking77/ (default: $LLMOPS_SHARED_DATA or ../shared/data).")
    ] = None,
    kind: Annotated[
        str, typer.Option(help="all (the classifier's loop, then the generative one), classifier or generative.")
    ] = "all",
) -> None:
    """The lifecycle on the embedded default, as a timeline (the stack must be up: `make demo` does it)."""
    from llmops_cli.demo import DemoOptions, run_demo
    from llmops_cli.demo_generative import GenerativeDemoOptions, run_generative_demo
    from llmops_stack import repo_paths

    if kind not in {"all", "classifier", "generative"}:
        raise typer.BadParameter("one of all, classifier, generative", param_hint="--kind")
    if data_dir is None:
        configured = os.environ.get("LLMOPS_SHARED_DATA")
        data_dir = Path(configured) if configured else _guard(repo_paths).root.parent / "shared" / "data"
    code = 0
    if kind in {"all", "classifier"}:
        options = DemoOptions(model_name=model, labels=labels, per_label=per_label, epochs=epochs, data_dir=data_dir)
        code = asyncio.run(run_demo(_settings(), options))
    if code == 0 and kind in {"all", "generative"}:
        print("\nthe generative loop: a support assistant (SmolLM2-135M + LoRA) learns from its users\n")
        code = asyncio.run(run_generative_demo(_settings(), GenerativeDemoOptions(data_dir=data_dir)))
    raise typer.Exit(code)


@app.command("snapshot")
def snapshot(
    content: Annotated[
        str | None, typer.Option(help="Only this series: records or instructions (default: both).")
    ] = None,
) -> None:
    """Cut dataset snapshots now: of every labelled record and of every instruction example ingested
    so far (a series with nothing in it is skipped)."""
    from llmops_events.v1 import DatasetContent
    from llmops_ingestion import cut_snapshots

    if content is not None and content not in set(DatasetContent):
        raise typer.BadParameter(f"one of {', '.join(DatasetContent)}", param_hint="--content")
    contents = [DatasetContent(content)] if content else list(DatasetContent)
    for event in asyncio.run(cut_snapshots(contents=contents)):
        _console().print(
            f"snapshot {event.dataset_id} ({event.content}): {event.row_count} rows, splits {event.split_counts}"
            f"\n  {event.uri}"
        )


@app.command("retrain")
def retrain(
    model: Annotated[str, typer.Option(help="Model name.")],
    dataset: Annotated[str | None, typer.Option(help="Dataset id (default: the latest snapshot).")] = None,
    task: Annotated[
        str,
        typer.Option(
            help="sequence-classification (a classifier, on records snapshots) or causal-lm "
            "(a LoRA adapter of the causal LM, on instructions snapshots)."
        ),
    ] = "sequence-classification",
) -> None:
    """Publish a manual training request; the fine-tuning service picks it up."""
    from llmops_events.v1.training import TrainingTask
    from llmops_fine_tuning import FineTuningSettings, request_training

    try:
        kind = TrainingTask(task)
    except ValueError:
        raise typer.BadParameter(
            f"{task!r} is not one of {', '.join(t.value for t in TrainingTask)}", param_hint="--task"
        ) from None
    envelope = asyncio.run(request_training(FineTuningSettings(), model, dataset, task=kind))
    _console().print(
        f"requested {kind.value} training of {model} on {dataset or 'the latest snapshot'} (request {envelope.id})"
    )


@app.command("train")
def train_command(
    model: Annotated[str, typer.Option(help="Model name.")],
    dataset: Annotated[str | None, typer.Option(help="Dataset id (default: the latest snapshot).")] = None,
    epochs: Annotated[float | None, typer.Option(help="Epochs (default: deploy/training/defaults.yaml).")] = None,
) -> None:
    """Train one version here, without the bus (no fine-tuning service needed); it is published to the
    artifact store like any other, and evaluated when deployed through the loop."""
    import tempfile

    from llmops_cli.training import train_on_snapshot
    from llmops_events.v1.training import Hyperparameters
    from llmops_models.snapshots import SnapshotReader
    from llmops_storage import open_store

    store = open_store(_settings().resolved_artifact_store_uri)
    dataset_id = dataset or SnapshotReader(store).latest_dataset_id()
    if dataset_id is None:
        raise typer.BadParameter("no dataset snapshot exists yet: run `make snapshot` first", param_hint="--dataset")
    with tempfile.TemporaryDirectory(prefix="llmops-train-") as work_dir:
        completed = _guard(
            lambda: asyncio.run(
                train_on_snapshot(
                    store,
                    model_name=model,
                    dataset_id=dataset_id,
                    hyperparameters=Hyperparameters(epochs=epochs),
                    work_dir=Path(work_dir),
                )
            )
        )
    metrics = ", ".join(f"{name} {value:.4f}" for name, value in sorted(completed.metrics.items()))
    console = _console()
    console.print(f"{model} v{completed.model_version} trained on {dataset_id}: {metrics}")
    console.print(f"  {completed.artifact_uri}")


@app.command("evaluate")
def evaluate_command(
    model: Annotated[str, typer.Option(help="Model name.")],
    version: Annotated[int, typer.Option(help="Model version to (re-)evaluate.")],
) -> None:
    """Re-run the evaluation gate on a version (e.g. after a policy change) and publish the decision."""
    from llmops_evaluation import evaluate_by_hand

    completed = asyncio.run(evaluate_by_hand(model, version))
    console = _console()
    console.print(f"{model} v{version}: {completed.decision.value}")
    for reason in completed.reasons:
        console.print(f"  {reason.rule}: {escape(reason.message)}")
    if completed.report_uri:
        console.print(f"  report {completed.report_uri}")


@app.command("promote")
def promote_command(
    model: Annotated[str, typer.Option(help="Model name.")],
    version: Annotated[int, typer.Option(help="Version to make champion (0: the current canary).")] = 0,
    reason: Annotated[str, typer.Option(help="Why (kept in the deployment event).")] = "",
    override_reason: Annotated[
        str,
        typer.Option(help="Promote a version the evaluation gate rejected, saying why (admin role; audited)."),
    ] = "",
) -> None:
    """Make the canary (or a version with artifacts) the champion, through the ops API (mutual TLS)."""
    from llmops_cli import ops

    status = _guard(lambda: ops.promote(_settings(), model, version, reason, override_reason))
    _console().print(escape(ops.describe(status)))


@app.command("rollback")
def rollback_command(
    model: Annotated[str, typer.Option(help="Model name.")],
    version: Annotated[
        int, typer.Option(help="Version to restore (0: end the canary, else the previous champion).")
    ] = 0,
    reason: Annotated[str, typer.Option(help="Why (kept in the deployment event).")] = "",
) -> None:
    """Stop the canary, or restore an earlier version that still has artifacts, through the ops API."""
    from llmops_cli import ops

    status = _guard(lambda: ops.rollback(_settings(), model, version, reason))
    _console().print(escape(ops.describe(status)))


@app.command("drift-report")
def drift_report(
    model: Annotated[str, typer.Option(help="Model name.")],
    last: Annotated[int, typer.Option(help="How many of the model's latest inference events to report on.")] = 1000,
    version: Annotated[int | None, typer.Option(help="Only this model version (default: every version seen).")] = None,
) -> None:
    """Write a drift/quality report now from the model's latest traffic on the inference topic (publishes nothing)."""
    from llmops_monitoring import drift_report_by_hand

    reports = asyncio.run(drift_report_by_hand(model, last=last, version=version))
    console = _console()
    if not reports:
        console.print(f"no inference events of {model} among the latest messages of the inference topic")
        raise typer.Exit(1)
    for report in reports:
        summary = report.summary
        breached = [name for name, item in summary["signals"].items() if item["breached"]]
        console.print(
            f"{model} v{summary['model_version']}: {summary['window']['size']} events, "
            f"decision {report.decision.action.value}: {escape(report.decision.explanation)}"
        )
        console.print(f"  signals above threshold: {', '.join(breached) or 'none'}")
        console.print(f"  report {report.html_uri}\n  json   {report.json_uri}")


# -- lineage and erasure ------------------------------------------------------------------------------
@app.command("lineage")
def lineage_command(
    model: Annotated[str, typer.Option(help="Model name.")],
    version: Annotated[
        int | None, typer.Option(help="Version (default: the champion, else the latest published version).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the lineage as JSON.")] = False,
    bus: Annotated[
        bool, typer.Option("--bus/--no-bus", help="Read the training, evaluation, deployment and audit topics.")
    ] = True,
    verify: Annotated[bool, typer.Option(help="Download the version and check every file's hash.")] = False,
) -> None:
    """Where a model version came from: artifact hashes, training request, snapshot and the Kafka
    offset ranges of its records, evaluation decision, canary verdict, erasures."""
    from llmops_cli.lineage import lineage_of, render
    from llmops_models import ArtifactMissing
    from llmops_storage import open_store

    settings = _settings()
    store = open_store(settings.resolved_artifact_store_uri)
    try:
        lineage = asyncio.run(lineage_of(settings, store, model=model, version=version, read_bus=bus, verify=verify))
    except (ArtifactMissing, ValueError) as error:
        Console(stderr=True, highlight=False, soft_wrap=True).print(f"[red]error:[/red] {escape(str(error))}")
        raise typer.Exit(1) from None
    if as_json:
        print(lineage.model_dump_json(indent=2))
    else:
        _console().print(escape(render(lineage)), highlight=False)


@app.command("erase")
def erase_command(
    tenant: Annotated[str, typer.Option(help="The tenant whose records are erased.")],
    subject: Annotated[
        list[str] | None,
        typer.Option(help="Only these record ids (a data subject's; repeat it or separate with commas)."),
    ] = None,
    reason: Annotated[str, typer.Option(help="Why (kept in the audit trail).")] = "",
    requested_by: Annotated[
        str | None, typer.Option("--by", help="Operator name for the audit trail (default: the OS user).")
    ] = None,
    wait: Annotated[float, typer.Option(help="Seconds to wait for ingestion's confirmation (0: do not wait).")] = 60.0,
) -> None:
    """Erase a tenant's curated records (or a data subject's, by record id) from Feast and from every
    later snapshot; model versions trained on them are marked in their lineage; audited."""
    from aiokafka.errors import KafkaError

    from llmops_cli.erase import request_erasure
    from llmops_config.kafka import KafkaConfigurationError

    subjects = [part.strip() for entry in subject or [] for part in entry.split(",") if part.strip()]
    try:
        outcome = asyncio.run(
            request_erasure(
                _settings(), tenant=tenant, subjects=subjects, requested_by=requested_by, reason=reason, wait_s=wait
            )
        )
    except (KafkaError, KafkaConfigurationError, OSError, ValueError) as error:  # bad input, no broker/credentials
        Console(stderr=True, highlight=False, soft_wrap=True).print(f"[red]error:[/red] {escape(str(error))}")
        raise typer.Exit(1) from None
    console = _console()
    what = f"{len(subjects)} record id(s) of tenant {tenant}" if subjects else f"every record of tenant {tenant}"
    console.print(f"erasure {outcome.request.id} requested: {escape(what)}")
    confirmation = outcome.confirmation
    if confirmation is not None:
        details = confirmation.details
        console.print(
            f"  done: {details.get('records_erased', '?')} record(s) erased; snapshots holding them: "
            f"{escape(details.get('datasets') or 'none')}; model versions trained on them: "
            f"{escape(details.get('model_versions') or 'none')}"
        )
    elif wait > 0:
        console.print(f"  not confirmed within {wait:g}s: ingestion applies it when it runs (`make status`)")
        raise typer.Exit(1)


# -- audit ---------------------------------------------------------------------------------------------
@app.command("audit")
def audit_command(
    model: Annotated[str | None, typer.Option(help="Only this model's records (default: every record).")] = None,
    tenant: Annotated[str | None, typer.Option(help="Only this tenant's records (key use, erasure).")] = None,
    action: Annotated[
        str | None,
        typer.Option(help="Only this action: promotion, rollback, canary_verdict, override, policy_change, ..."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the records as a JSON array.")] = False,
    timeout: Annotated[float, typer.Option(help="Seconds to read the audit topic for at most.")] = 60.0,
) -> None:
    """The audit trail (never compacted): promotions, rollbacks, canary verdicts, overrides, policy
    changes, denied keys and erasures, each with the verified principal, oldest first."""
    from llmops_cli.audit import as_json as audit_json
    from llmops_cli.audit import read_audit, table

    settings = _settings()

    def read() -> Any:
        try:
            return asyncio.run(read_audit(settings, model=model, tenant=tenant, action=action, timeout_s=timeout))
        except (OSError, TimeoutError) as error:
            raise ValueError(f"cannot read the audit topic at {settings.kafka_bootstrap_servers}: {error!r}") from error

    records = _guard(read)
    if as_json:
        print(audit_json(records))
        return
    about = " ".join(
        f"{name}={value}" for name, value in (("model", model), ("tenant", tenant), ("action", action)) if value
    )
    _console().print(table(records, title=f"audit trail{' of ' + about if about else ''}: {len(records)} records"))


# -- console ------------------------------------------------------------------------------------------
@app.command("ui")
def ui_command() -> None:
    """Evidently's UI on the platform's Evidently workspace: a project per model, its monitoring windows
    and evaluations as reports, dashboards of drift and quality over time (Ctrl-C stops it)."""
    from llmops_cli import ui

    console = _console()
    try:
        status = ui.serve(_settings(), say=lambda line: console.print(escape(line), highlight=False))
    except ui.UiError as error:
        Console(stderr=True, highlight=False, soft_wrap=True).print(f"[red]error:[/red] {escape(str(error))}")
        raise typer.Exit(1) from None
    raise typer.Exit(status)


def main() -> None:
    """Entry point of the ``llmops`` console script."""
    app()


if __name__ == "__main__":
    main()

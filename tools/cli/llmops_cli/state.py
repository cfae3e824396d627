"""``llmops state migrate``: copy a service's SQLite state into the shared PostgreSQL store named by
``LLMOPS_STATE_STORE_URL`` (``llmops_storage.migrate``), before its replicas start on PostgreSQL.

Stop the service first; run it again as often as you like (a second run copies nothing twice). It
refuses, and copies nothing, when the SQLite file is missing or is not the service's, or when
PostgreSQL already holds different rows under the same keys."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.markup import escape

if TYPE_CHECKING:
    from llmops_storage.migrate import PostgresTwin

state_app = typer.Typer(
    help="The services' state (SQLite under var/state, or the shared PostgreSQL).", no_args_is_help=True
)


class StatefulService(StrEnum):
    """The services whose state has a PostgreSQL twin."""

    INGESTION = "ingestion"
    MONITORING = "monitoring"


def _twin_and_default_path(service: StatefulService) -> tuple[PostgresTwin, Path]:
    """The service's PostgreSQL twin and where its SQLite state is by default (its settings)."""
    if service is StatefulService.INGESTION:
        from llmops_ingestion import IngestionSettings, postgres_state_twin

        return postgres_state_twin(), IngestionSettings().state_db
    from llmops_monitoring import MonitoringSettings
    from llmops_monitoring import postgres_state_twin as monitoring_twin

    return monitoring_twin(), MonitoringSettings().state_db


def _where(url: str) -> str:
    """The target for people: host, port and database, never the password."""
    from psycopg.conninfo import conninfo_to_dict

    parts = conninfo_to_dict(url)
    return f"{parts.get('host', 'localhost')}:{parts.get('port', 5432)}/{parts.get('dbname', '')}"


@state_app.command("migrate")
def migrate(
    service: Annotated[StatefulService, typer.Option(help="Whose state to copy.")],
    sqlite: Annotated[
        Path | None,
        typer.Option(help="The service's SQLite file (default: the one its settings name, under var/state)."),
    ] = None,
) -> None:
    """Copy a service's SQLite state into the PostgreSQL store of LLMOPS_STATE_STORE_URL (the service
    stopped). Idempotent; refuses when the target holds other data under the same keys. Limits:
    LLMOPS_STATE_STORE_CONNECT_TIMEOUT_S, LLMOPS_STATE_STORE_STATEMENT_TIMEOUT_S (one table's copy
    is one statement: raise it for a large file)."""
    from llmops_storage.migrate import MigrationRefused, TableCopy, migrate_sqlite_state
    from llmops_storage.state_store import StateStoreSettings, StateStoreUnavailable

    console = Console(highlight=False, soft_wrap=True)
    errors = Console(stderr=True, highlight=False, soft_wrap=True)
    twin, default_path = _twin_and_default_path(service)
    source = sqlite or default_path
    settings = StateStoreSettings()

    def progress(table: TableCopy) -> None:
        console.print(
            f"{table.table:<28} {table.source_rows:>10,} rows: {table.copied:>10,} copied,"
            f" {table.already_there:>10,} already there"
        )

    try:
        if settings.shared:
            console.print(f"copying {escape(str(source))} ({service}) into {escape(_where(settings.url))}")
        report = migrate_sqlite_state(source, settings, twin, on_table=progress)
    except (MigrationRefused, StateStoreUnavailable) as error:
        errors.print(f"[red]error:[/red] {escape(str(error))}")
        raise typer.Exit(1) from None
    console.print(
        f"done: {report.copied:,} rows copied, {report.already_there:,} already there,"
        f" in {len(report.tables)} tables (one transaction)"
    )
    if report.not_in_source:
        console.print(f"not in the SQLite file (an older version): {', '.join(report.not_in_source)}")
    if report.left_in_sqlite:
        console.print(f"left in SQLite (no PostgreSQL twin, per replica): {', '.join(report.left_in_sqlite)}")

"""Copying a service's SQLite state into the shared PostgreSQL store (``llmops state migrate``), for a
deployment that sets ``LLMOPS_STATE_STORE_URL`` after it ran on SQLite (docs/scale-out.md).

The service creates its tables in PostgreSQL with its own code (``PostgresTwin.create_tables``);
then, in one transaction holding the service's write lock, each table of the SQLite file is
streamed into a temporary twin of the target table (``COPY``; columns the file lacks, from an older
version, take the target's defaults, as the service's own ``ALTER TABLE`` gives them), compared
with what PostgreSQL holds under the same primary keys, and the rows it lacks are inserted. So a
second run copies nothing twice; a target that holds *different* rows under the same keys (the
service already ran on PostgreSQL) is refused, and nothing at all is copied, since the transaction
is rolled back. Identity columns (``seq``) keep their values, and their sequences are moved past
them, so new rows never reuse a number a snapshot already covers.

Run it with the service stopped: its SQLite file is read in one read transaction (a consistent
copy), but what a running service writes afterwards is not copied.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llmops_storage.state_store import PostgresSql, StateStoreSettings

if TYPE_CHECKING:
    import psycopg


class MigrationRefused(ValueError):
    """The migration cannot go on (the source is missing or the wrong file, or the target holds other
    data under the same keys); nothing was copied."""


@dataclass(frozen=True, slots=True)
class PostgresTwin:
    """The part of a service's SQLite state that has a PostgreSQL twin."""

    service: str
    tables: tuple[str, ...]
    """The tables to copy, in this order."""
    create_tables: Callable[[StateStoreSettings], None]
    """Creates the tables in PostgreSQL as the service itself does (and writes no row)."""
    write_lock: str
    """The advisory lock the service's writers hold: held for the whole copy."""


@dataclass(frozen=True, slots=True)
class TableCopy:
    table: str
    source_rows: int
    copied: int

    @property
    def already_there(self) -> int:
        """Rows of the SQLite file PostgreSQL held already, identical."""
        return self.source_rows - self.copied


@dataclass(slots=True)
class MigrationReport:
    source: Path
    tables: list[TableCopy] = field(default_factory=list)
    not_in_source: list[str] = field(default_factory=list)
    """Tables of the twin the SQLite file does not have (an older version): nothing to copy."""
    left_in_sqlite: list[str] = field(default_factory=list)
    """Tables of the SQLite file without a PostgreSQL twin (they stay per replica)."""

    @property
    def copied(self) -> int:
        return sum(table.copied for table in self.tables)

    @property
    def already_there(self) -> int:
        return sum(table.already_there for table in self.tables)


_CONFLICT_EXAMPLES = 3  # keys named in a refusal


def migrate_sqlite_state(
    source: Path,
    settings: StateStoreSettings,
    twin: PostgresTwin,
    *,
    on_table: Callable[[TableCopy], None] | None = None,
) -> MigrationReport:
    """Copy ``twin``'s tables from the SQLite file ``source`` into the PostgreSQL store of ``settings``
    (module docstring); ``on_table`` is told of each table once it is copied (progress)."""
    if not settings.shared:
        raise MigrationRefused("no PostgreSQL store to migrate into: set LLMOPS_STATE_STORE_URL")
    if not source.is_file():
        raise MigrationRefused(f"{source}: no such file (the {twin.service} service's SQLite state)")
    # Read-only: a wrong path must never create or change a database.
    reader = sqlite3.connect(f"{source.resolve().as_uri()}?mode=ro", uri=True)
    try:
        return _migrate(reader, source, settings, twin, on_table)
    finally:
        reader.close()


def _migrate(
    reader: sqlite3.Connection,
    source: Path,
    settings: StateStoreSettings,
    twin: PostgresTwin,
    on_table: Callable[[TableCopy], None] | None,
) -> MigrationReport:
    reader.execute("BEGIN")  # one read transaction: every table as of one moment
    try:
        present = {
            row[0]
            for row in reader.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
            )
        }
    except sqlite3.DatabaseError as error:
        raise MigrationRefused(f"{source}: not a SQLite database ({error})") from error
    report = MigrationReport(
        source=source,
        not_in_source=[table for table in twin.tables if table not in present],
        left_in_sqlite=sorted(present - set(twin.tables)),
    )
    tables = [table for table in twin.tables if table in present]
    if not tables:
        raise MigrationRefused(
            f"{source} holds none of the {twin.service} service's tables ({', '.join(twin.tables)}): is it its state?"
        )
    twin.create_tables(settings)
    target = PostgresSql(settings)
    try:
        with target.transaction(advisory_lock=twin.write_lock) as statements:
            for table in tables:
                copied = _copy_table(reader, statements.connection, table)
                report.tables.append(copied)
                if on_table is not None:
                    on_table(copied)
    finally:
        target.close()
        reader.rollback()
    return report


def _copy_table(reader: sqlite3.Connection, connection: psycopg.Connection[Any], table: str) -> TableCopy:
    """Stream one table into a temporary twin of the target, refuse rows that differ from the target's
    under the same key, insert the others; in the caller's transaction."""
    from psycopg import errors, sql

    source_columns = [row[1] for row in reader.execute(f'PRAGMA table_info("{table}")')]
    target_types = dict(
        connection.execute(
            "SELECT column_name, data_type FROM information_schema.columns"
            " WHERE table_schema = current_schema() AND table_name = %s",
            (table,),
        ).fetchall()
    )
    key = [
        row[0]
        for row in connection.execute(
            "SELECT a.attname FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid"
            " AND a.attnum = ANY(i.indkey) WHERE i.indrelid = %s::regclass AND i.indisprimary ORDER BY a.attnum",
            (table,),
        )
    ]
    unknown = [column for column in source_columns if column not in target_types]
    if unknown or not key:
        raise MigrationRefused(
            f"table {table}: the PostgreSQL twin lacks the columns {unknown} or a primary key:"
            " is the CLI older than the service that wrote the file?"
        )
    staging = f"llmops_migrate_{table}"
    name, staged = sql.Identifier(table), sql.Identifier(staging)
    columns = sql.SQL(", ").join(map(sql.Identifier, source_columns))
    every = [sql.Identifier(column) for column in target_types]
    connection.execute(
        sql.SQL("CREATE TEMPORARY TABLE {} (LIKE {} INCLUDING DEFAULTS) ON COMMIT DROP").format(staged, name)
    )
    as_bytes = [target_types[column] == "bytea" for column in source_columns]
    source_rows = 0
    with connection.cursor() as cursor, cursor.copy(sql.SQL("COPY {} ({}) FROM STDIN").format(staged, columns)) as copy:
        quoted = ", ".join(f'"{column}"' for column in source_columns)
        for row in reader.execute(f'SELECT {quoted} FROM "{table}"'):
            # SQLite keeps whatever it was given; a BLOB column of an old file may hold text.
            copy.write_row([v.encode() if b and isinstance(v, str) else v for v, b in zip(row, as_bytes, strict=True)])
            source_rows += 1
    same_key = sql.SQL(" AND ").join(
        sql.SQL("s.{column} = t.{column}").format(column=sql.Identifier(column)) for column in key
    )
    differ = sql.SQL("ROW({}) IS DISTINCT FROM ROW({})").format(
        sql.SQL(", ").join(sql.SQL("s.{}").format(column) for column in every),
        sql.SQL(", ").join(sql.SQL("t.{}").format(column) for column in every),
    )
    key_list = sql.SQL(", ").join(sql.SQL("s.{}").format(sql.Identifier(column)) for column in key)
    conflicts = connection.execute(
        sql.SQL("SELECT {} FROM {} AS s JOIN {} AS t ON {} WHERE {} LIMIT {}").format(
            key_list, staged, name, same_key, differ, sql.Literal(_CONFLICT_EXAMPLES)
        )
    ).fetchall()
    if conflicts:
        examples = "; ".join(", ".join(f"{k}={v!r}" for k, v in zip(key, row, strict=True)) for row in conflicts)
        raise MigrationRefused(
            f"table {table}: PostgreSQL already holds different rows under the same keys as the SQLite file"
            f" (e.g. {examples}): the target has state of its own; nothing was copied"
        )
    try:
        copied = connection.execute(
            sql.SQL("INSERT INTO {} ({}) SELECT {} FROM {} ON CONFLICT ({}) DO NOTHING").format(
                name, columns, columns, staged, sql.SQL(", ").join(map(sql.Identifier, key))
            )
        ).rowcount
    except errors.UniqueViolation as error:  # same record id or text under another key: other state
        raise MigrationRefused(
            f"table {table}: a row of the SQLite file clashes with a different row PostgreSQL holds"
            f" ({error.diag.message_detail or error}); nothing was copied"
        ) from error
    _move_identities_past(connection, table, source_columns)
    return TableCopy(table=table, source_rows=source_rows, copied=copied)


def _move_identities_past(connection: psycopg.Connection[Any], table: str, columns: Sequence[str]) -> None:
    """Set the identity sequences of ``table`` past the largest value now stored (never back)."""
    from psycopg import sql

    identities = [
        row[0]
        for row in connection.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_schema = current_schema()"
            " AND table_name = %s AND is_identity = 'YES'",
            (table,),
        )
        if row[0] in columns
    ]
    for column in identities:
        row = connection.execute(
            sql.SQL("SELECT max({}) FROM {}").format(sql.Identifier(column), sql.Identifier(table))
        ).fetchone()
        largest = None if row is None else row[0]
        if largest is None:  # (an empty table)
            continue
        connection.execute(
            "SELECT setval(pg_get_serial_sequence(%s, %s),"
            " greatest(%s, coalesce(pg_sequence_last_value(pg_get_serial_sequence(%s, %s)::regclass), 0)))",
            (table, column, largest, table, column),
        )

"""Where a service keeps the state that must outlive the replica holding it (docs/scale-out.md).

The embedded default is each service's own SQLite file under ``var/state`` (replicas on one host
may share it: SQLite locks the file across processes). When replicas run on several machines, the
state they share or a takeover must find (monitoring's cooldowns and request caps; all of
ingestion's state and processed events) goes to a shared PostgreSQL instead, selected by
``LLMOPS_STATE_STORE_URL``. Statements are written once for both (``SqlConnection``: ``?``
placeholders, ``ON CONFLICT``); ``PostgresSql`` and ``postgres_ddl`` carry them to PostgreSQL.
Nothing here is home-made clustering: PostgreSQL is the store a user already runs (a managed
instance, or the chart's).
"""

from __future__ import annotations

import functools
import logging
import re
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Protocol

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

if TYPE_CHECKING:
    import psycopg

logger = logging.getLogger(__name__)

POSTGRES_SCHEMES = ("postgresql://", "postgres://")


class StateStoreSettings(BaseSettings):
    """The shared state store, from ``LLMOPS_STATE_STORE_*``."""

    model_config = SettingsConfigDict(env_prefix="LLMOPS_STATE_STORE_", extra="ignore", use_attribute_docstrings=True)

    url: str = Field(default="", repr=False)
    """Empty: the service's own SQLite file (the embedded default). ``postgresql://user:password@host:5432/db``
    (a libpq URL; ``?sslmode=verify-full`` and the like pass through): the shared PostgreSQL store."""

    connect_timeout_s: float = Field(default=10.0, gt=0, le=300)
    """Longest wait for one attempt at a PostgreSQL connection (at start-up, and when a broken
    connection is replaced)."""

    connect_attempts: int = Field(default=2, ge=1, le=10)
    """Attempts at a connection before the start-up, or the operation that needed a new connection,
    fails. Few: the consumer's retry policy redelivers a failed batch anyway, and the attempts block
    the caller (at most ``connect_attempts * (connect_timeout_s + connect_retry_delay_s)``)."""

    connect_retry_delay_s: float = Field(default=0.5, ge=0, le=30)
    """Wait between two attempts at a connection."""

    statement_timeout_s: float = Field(default=30.0, gt=0, le=3600)
    """Longest a single statement may run on PostgreSQL (a hung lock fails the handler, which the
    consumer's retry policy retries, instead of stalling it)."""

    idle_in_transaction_timeout_s: float = Field(default=60.0, gt=0, le=3600)
    """Longest a transaction may sit idle between two statements before the server ends its session.
    A replica whose connection broke in a transaction (network lost, host gone) would otherwise hold
    ingestion's write lock, and block every other replica, until the server's TCP keepalive noticed."""

    @field_validator("url")
    @classmethod
    def _known_scheme(cls, value: str) -> str:
        if value and not value.startswith(POSTGRES_SCHEMES):
            raise ValueError(
                "LLMOPS_STATE_STORE_URL must be empty (SQLite under var/state) or a postgresql:// URL, "
                f"not {value.split('://')[0]}://…"
            )
        return value

    @property
    def shared(self) -> bool:
        """Whether state goes to the shared PostgreSQL store."""
        return bool(self.url)


class StateStoreUnavailable(ConnectionError):
    """The shared PostgreSQL store could not be reached, or the connection broke during an operation.

    The operation did not take effect: the server rolls back a transaction whose connection is lost.
    The one exception is a connection that broke during ``COMMIT``, whose outcome the client cannot
    know; the services' writes are idempotent (a handler's effect and its processed-event mark commit
    together; the rest are upserts), so retrying is safe either way. The next operation opens a new
    connection; the consumer's retry policy redelivers the batch that failed."""


def connect_postgres(settings: StateStoreSettings) -> psycopg.Connection[Any]:
    """An autocommit connection to the shared store: the one place connections are made, with
    ``connect_attempts`` attempts of at most ``connect_timeout_s`` each; ``StateStoreUnavailable``
    when none succeeds."""
    import psycopg

    if not settings.shared:
        raise ValueError("no shared state store is configured (LLMOPS_STATE_STORE_URL is empty)")
    options = (
        f"-c statement_timeout={int(settings.statement_timeout_s * 1000)}"
        f" -c idle_in_transaction_session_timeout={int(settings.idle_in_transaction_timeout_s * 1000)}"
    )
    for attempt in range(1, settings.connect_attempts + 1):
        try:
            return psycopg.connect(
                settings.url,
                autocommit=True,
                connect_timeout=max(1, round(settings.connect_timeout_s)),
                options=options,
                application_name="llmops",
            )
        except psycopg.OperationalError as error:
            if attempt == settings.connect_attempts:
                raise StateStoreUnavailable(
                    f"the shared state store is unreachable after {attempt} attempt(s) of at most"
                    f" {settings.connect_timeout_s:g} s: {error}"
                ) from error
            logger.warning(
                "connecting to the shared state store failed; trying again",
                extra={"attempt": attempt, "error": str(error)},
            )
            time.sleep(settings.connect_retry_delay_s)
    raise AssertionError("unreachable")  # (the loop returns or raises)


class SqlCursor(Protocol):
    """What the state adapters read of a cursor (``sqlite3.Cursor`` and ``psycopg.Cursor`` alike)."""

    @property
    def rowcount(self) -> int: ...

    def fetchone(self) -> Any: ...

    def fetchall(self) -> list[Any]: ...

    def __iter__(self) -> Iterator[Any]: ...


class SqlConnection(Protocol):
    """What the state adapters use of a connection: a ``sqlite3.Connection`` as it is, or
    ``PostgresSql``. Statements are written once, with ``?`` placeholders and the SQL both
    databases speak (``INSERT ... ON CONFLICT``, ``RETURNING``, the quoted ``"offset"``)."""

    def execute(self, sql: str, parameters: Any = ..., /) -> SqlCursor: ...

    def executemany(self, sql: str, parameters: Iterable[Any], /) -> SqlCursor: ...


# What became of the work when the connection broke (StateStoreUnavailable's message).
_AUTOCOMMIT = "the statement may or may not have been applied"
_IN_TRANSACTION = "the server rolls the transaction back"
_IN_COMMIT = "during COMMIT: the transaction may or may not have committed"


class _PostgresStatements:
    """Statements written for SQLite's ``?`` placeholders, run on ``_current()``'s connection; an error
    that leaves the connection closed (psycopg's ``OperationalError``/``InterfaceError`` on a server
    that restarted or a network that dropped) becomes ``StateStoreUnavailable``."""

    _outcome = _AUTOCOMMIT

    def _current(self) -> psycopg.Connection[Any]:
        raise NotImplementedError

    def execute(self, sql: str, parameters: Any = (), /) -> psycopg.Cursor[Any]:
        connection = self._current()
        try:
            if not parameters:  # (no placeholders to translate, and a ``%`` stays itself)
                return connection.execute(sql)
            return connection.execute(_postgres_placeholders(sql), parameters)
        except Exception as error:
            _raise_if_broken(connection, error, self._outcome)
            raise

    def executemany(self, sql: str, parameters: Iterable[Any], /) -> psycopg.Cursor[Any]:
        connection = self._current()
        try:
            cursor = connection.cursor()
            cursor.executemany(_postgres_placeholders(sql), parameters)
        except Exception as error:
            _raise_if_broken(connection, error, self._outcome)
            raise
        return cursor


class PostgresSql(_PostgresStatements):
    """A connection to the shared store that takes the statements written for SQLite's ``?``
    placeholders and outlives a broken connection: once psycopg finds its connection closed (the
    server restarted, the network dropped), the operation in progress fails with
    ``StateStoreUnavailable`` and the next one opens a new connection (``connect_postgres``, bounded
    by ``connect_attempts`` and ``connect_timeout_s``). Never while a transaction is open: its
    statements must not go on in another session, outside it. Thread-safe as a psycopg connection is."""

    def __init__(self, settings: StateStoreSettings) -> None:
        self._settings = settings
        self._guard = threading.Lock()  # the swap of a broken connection, and the open transactions
        self._open_transactions = 0
        self._connection = connect_postgres(settings)

    @property
    def connection(self) -> psycopg.Connection[Any]:
        """The connection statements run on now (a new one if the last one broke)."""
        return self._current()

    def _current(self) -> psycopg.Connection[Any]:
        with self._guard:
            if self._connection.closed and not self._open_transactions:
                logger.warning("the shared state store's connection was lost; opening a new one")
                self._connection = connect_postgres(self._settings)
            return self._connection

    @contextmanager
    def transaction(self, *, advisory_lock: str | None = None) -> Iterator[PostgresTransaction]:
        """One transaction (``BEGIN`` … ``COMMIT``), rolled back when the block raises, holding the
        transaction-scoped advisory lock ``advisory_lock`` from its start; the block's statements go
        to the object it yields (this transaction's connection, whatever happens to the store's).

        A connection found broken at ``BEGIN`` (the server restarted while it sat idle) is replaced
        and the transaction begun once more: nothing of the block has run yet. One that breaks later
        fails the block with ``StateStoreUnavailable`` (see there for a broken ``COMMIT``)."""
        connection = self._begin(advisory_lock)
        try:
            try:
                yield PostgresTransaction(connection)
            except BaseException:
                if not connection.closed:
                    try:
                        connection.execute("ROLLBACK")
                    except Exception:
                        logger.exception("rolling back a failed transaction on the shared state store failed")
                raise
            try:
                connection.execute("COMMIT")
            except Exception as error:
                _raise_if_broken(connection, error, _IN_COMMIT)
                raise
        finally:
            with self._guard:
                self._open_transactions -= 1

    def _begin(self, advisory_lock: str | None) -> psycopg.Connection[Any]:
        """``BEGIN`` (and the advisory lock) on a live connection; counts the transaction as open."""
        for attempt in (1, 2):
            with self._guard:
                if self._connection.closed and not self._open_transactions:
                    self._connection = connect_postgres(self._settings)
                connection = self._connection
                self._open_transactions += 1
            try:
                connection.execute("BEGIN")
                if advisory_lock is not None:
                    connection.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (advisory_lock,))
                return connection
            except BaseException as error:
                with self._guard:
                    self._open_transactions -= 1
                if connection.closed and attempt == 1 and isinstance(error, Exception):
                    logger.warning("the shared state store's connection was lost; beginning on a new one")
                    continue
                if not connection.closed:  # (a timeout waiting for the lock: the session is fine)
                    try:
                        connection.execute("ROLLBACK")
                    except Exception:
                        logger.exception("rolling back a transaction that failed to begin failed")
                if isinstance(error, Exception):
                    _raise_if_broken(connection, error, _IN_TRANSACTION)
                raise
        raise AssertionError("unreachable")  # (the loop returns or raises)

    def close(self) -> None:
        with self._guard:
            self._connection.close()


class PostgresTransaction(_PostgresStatements):
    """The statements of one open transaction: always on its own connection."""

    _outcome = _IN_TRANSACTION

    def __init__(self, connection: psycopg.Connection[Any]) -> None:
        self._connection = connection

    @property
    def connection(self) -> psycopg.Connection[Any]:
        """The transaction's psycopg connection (for what only PostgreSQL speaks: ``COPY``, ``psycopg.sql``)."""
        return self._connection

    def _current(self) -> psycopg.Connection[Any]:
        return self._connection


def _raise_if_broken(connection: psycopg.Connection[Any], error: Exception, outcome: str) -> None:
    """Raise ``StateStoreUnavailable`` from ``error`` when it left the connection closed, saying what
    became of the work (``outcome``). A statement timeout, a constraint and the like leave the
    connection open: those errors stay themselves."""
    if connection.closed and not isinstance(error, StateStoreUnavailable):
        raise StateStoreUnavailable(
            f"the connection to the shared state store broke ({type(error).__name__}: {error}); {outcome};"
            " the next operation opens a new connection"
        ) from error


@functools.lru_cache(maxsize=1024)
def _postgres_placeholders(sql: str) -> str:
    """``?`` → ``%s`` (the statements hold no ``?`` or ``%`` of their own in literals)."""
    return sql.replace("%", "%%").replace("?", "%s")


_DDL_TYPES = (
    (re.compile(r"\bINTEGER PRIMARY KEY AUTOINCREMENT\b"), "BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY"),
    (re.compile(r"\s+WITHOUT ROWID\b"), ""),
    (re.compile(r"\bINTEGER\b"), "BIGINT"),  # SQLite's INTEGER is 64-bit (offsets, sequence numbers)
    (re.compile(r"\bREAL\b"), "DOUBLE PRECISION"),  # SQLite's REAL is 8 bytes, PostgreSQL's 4
    (re.compile(r"\bBLOB\b"), "BYTEA"),
)


def postgres_ddl(statement: str) -> str:
    """A SQLite ``CREATE``/``ALTER`` statement of the services' state in PostgreSQL's types."""
    for pattern, replacement in _DDL_TYPES:
        statement = pattern.sub(replacement, statement)
    return statement


def ddl_statements(script: str) -> list[str]:
    """The statements of a schema script: ``--`` comment lines dropped, split at ``;`` (which the
    statements themselves do not hold)."""
    code = "\n".join(line for line in script.splitlines() if not line.lstrip().startswith("--"))
    return [statement.strip() for statement in code.split(";") if statement.strip()]

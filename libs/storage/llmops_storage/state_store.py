"""Where a service keeps the state that must outlive the replica holding it (docs/scale-out.md).

The embedded default is each service's own SQLite file under ``var/state`` (replicas on one host
may share it: SQLite locks the file across processes). When replicas run on several machines, the
state that a takeover must find (monitoring's cooldowns and request caps) goes to a shared
PostgreSQL instead, selected by ``LLMOPS_STATE_STORE_URL``. Nothing here is home-made clustering:
PostgreSQL is the store a user already runs (a managed instance, or the chart's).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

if TYPE_CHECKING:
    import psycopg

POSTGRES_SCHEMES = ("postgresql://", "postgres://")


class StateStoreSettings(BaseSettings):
    """The shared state store, from ``LLMOPS_STATE_STORE_*``."""

    model_config = SettingsConfigDict(env_prefix="LLMOPS_STATE_STORE_", extra="ignore", use_attribute_docstrings=True)

    url: str = Field(default="", repr=False)
    """Empty: the service's own SQLite file (the embedded default). ``postgresql://user:password@host:5432/db``
    (a libpq URL; ``?sslmode=verify-full`` and the like pass through): the shared PostgreSQL store."""

    connect_timeout_s: float = Field(default=10.0, gt=0, le=300)
    """Longest wait for a PostgreSQL connection before the service's start-up fails."""

    statement_timeout_s: float = Field(default=30.0, gt=0, le=3600)
    """Longest a single statement may run on PostgreSQL (a hung lock fails the handler, which the
    consumer's retry policy retries, instead of stalling it)."""

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


def connect_postgres(settings: StateStoreSettings) -> psycopg.Connection[Any]:
    """An autocommit connection to the shared store (``transaction()`` blocks group statements)."""
    import psycopg

    if not settings.shared:
        raise ValueError("no shared state store is configured (LLMOPS_STATE_STORE_URL is empty)")
    return psycopg.connect(
        settings.url,
        autocommit=True,
        connect_timeout=max(1, round(settings.connect_timeout_s)),
        options=f"-c statement_timeout={int(settings.statement_timeout_s * 1000)}",
        application_name="llmops",
    )

"""Which Feast online store curated features go to, from ``LLMOPS_FEAST_*``.

The embedded default is ingestion's own SQLite online store under ``var/feast``. On a cluster the
Helm chart's Feast repository names a Redis (``feast.redis``), and ingestion pushes there instead:
``LLMOPS_FEAST_ONLINE_STORE=redis`` with the same connection string, the password from the
chart's Secret. A Feast repository with the same project and definitions (the chart's, mounted at
``/etc/llmops/feast``) then reads what ingestion wrote: Feast's Redis layout keys a row by entity
key and project only.
"""

from __future__ import annotations

import json
import re
from typing import Any, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

# Feast's Redis connection string: ``host:port`` then ``,name=value`` options (db, ssl, ...).
_REDIS_ADDRESS = re.compile(r"^[A-Za-z0-9._\-\[\]:]+:\d{1,5}$")
PASSWORD_VARIABLE = "LLMOPS_FEAST_REDIS_PASSWORD"


class FeastOnlineStoreSettings(BaseSettings):
    """The Feast online store of curated records and instruction examples, from ``LLMOPS_FEAST_*``."""

    # Inputs stay out of validation errors: a refused connection string may carry a password.
    model_config = SettingsConfigDict(
        env_prefix="LLMOPS_FEAST_", extra="ignore", use_attribute_docstrings=True, hide_input_in_errors=True
    )

    online_store: Literal["sqlite", "redis"] = "sqlite"
    """``sqlite``: the embedded store in ``var/feast/data/online_store.db`` (the default); ``redis``:
    Feast's Redis online store at ``redis_url``, which replicas on several machines share."""

    redis_url: str = ""
    """Feast's Redis connection string, ``host:port`` with optional ``,db=0``, ``,ssl=true`` (as the
    chart's ``feast.redis.connectionString``); never a password, which is ``redis_password``."""

    redis_password: SecretStr | None = None
    """Redis's password (``LLMOPS_FEAST_REDIS_PASSWORD``, from a Secret on a cluster); unset: none.
    Never logged nor written to ``var/feast/feature_store.yaml``."""

    redis_timeout_s: float = Field(default=5.0, gt=0, le=300)
    """Longest wait to connect to Redis and for each reply: an unreachable Redis fails start-up, and
    a push that stalls fails (its rows stay in the outbox and go with the next push)."""

    @field_validator("redis_url")
    @classmethod
    def _no_password_in_url(cls, value: str) -> str:
        if not value:
            return value
        address, *options = value.split(",")
        if not _REDIS_ADDRESS.match(address):
            raise ValueError(
                "LLMOPS_FEAST_REDIS_URL is Feast's connection string, host:port[,db=0][,ssl=true], not a redis:// URL"
            )
        if any(option.split("=", 1)[0].strip() == "password" for option in options):
            raise ValueError(f"LLMOPS_FEAST_REDIS_URL must not carry the password: set {PASSWORD_VARIABLE}")
        return value

    @field_validator("redis_password")
    @classmethod
    def _fits_the_connection_string(cls, value: SecretStr | None) -> SecretStr | None:
        # Feast splits its connection string on commas: a password with one would be cut there.
        if value is not None and "," in value.get_secret_value():
            raise ValueError(f"{PASSWORD_VARIABLE} must not contain a comma (Feast's connection string splits on it)")
        return value

    @model_validator(mode="after")
    def _redis_needs_an_address(self) -> FeastOnlineStoreSettings:
        if self.online_store == "redis" and not self.redis_url:
            raise ValueError("LLMOPS_FEAST_ONLINE_STORE=redis needs LLMOPS_FEAST_REDIS_URL (host:port)")
        return self

    def redis_config(self, *, with_password: bool) -> dict[str, Any]:
        """The ``online_store`` section of a ``feature_store.yaml`` for Feast's Redis store.

        ``with_password``: the password itself, for the configuration handed to Feast in memory;
        otherwise a ``${LLMOPS_FEAST_REDIS_PASSWORD}`` placeholder (Feast expands variables when it
        loads the file), for the copy written to disk."""
        timeout = json.dumps(self.redis_timeout_s)
        connection = f"{self.redis_url},socket_connect_timeout={timeout},socket_timeout={timeout}"
        if self.redis_password is not None:
            # JSON-quoted: Feast JSON-decodes option values, which would turn "123" into a number.
            secret = json.dumps(self.redis_password.get_secret_value()) if with_password else None
            connection += f",password={secret or '${' + PASSWORD_VARIABLE + '}'}"
        return {"type": "redis", "connection_string": connection}

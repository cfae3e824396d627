"""``llmops keys new``: a new gateway API key, its secret printed once and the keys-file entry
(``deploy/security/api-keys.example.yaml`` format) that stores only its SHA-256.

Append the entry to the file ``LLMOPS_GATEWAY_API_KEYS_FILE`` names; the gateway picks it up
within a second, without a restart. Rotate by adding the new key, moving clients to it, then
deleting the old entry."""

from __future__ import annotations

import hashlib
import secrets
from typing import Annotated

import typer
import yaml

SCOPES = ("predict", "generate", "feedback")

keys_app = typer.Typer(help="Gateway API keys (tenant-bound, hashed in the keys file).", no_args_is_help=True)


def new_entry(
    key_id: str,
    tenants: list[str],
    scopes: list[str],
    *,
    rate_per_s: float | None = None,
    burst: int | None = None,
    max_concurrent: int | None = None,
) -> tuple[str, dict[str, object]]:
    """A fresh secret and the keys-file entry holding its hash (never the secret)."""
    unknown = sorted(set(scopes) - set(SCOPES))
    if unknown:
        raise ValueError(f"unknown scopes {unknown}; expected {', '.join(SCOPES)}")
    if not tenants:
        raise ValueError("name at least one tenant ('*' for any)")
    secret = f"llmops-{secrets.token_urlsafe(32)}"
    entry: dict[str, object] = {
        "id": key_id,
        "sha256": hashlib.sha256(secret.encode()).hexdigest(),
        "tenants": tenants,
        "scopes": scopes or list(SCOPES),
    }
    for name, value in (("rate_per_s", rate_per_s), ("burst", burst), ("max_concurrent", max_concurrent)):
        if value is not None:
            entry[name] = value
    return secret, entry


@keys_app.command("new")
def new_command(
    key_id: Annotated[str, typer.Option("--id", help="The key's id (audit trail: key:<id>).")],
    tenant: Annotated[list[str], typer.Option(help="A tenant the key may act for (repeat; '*' for any).")],
    scope: Annotated[list[str] | None, typer.Option(help="predict, generate, feedback (repeat; default all).")] = None,
    rate: Annotated[float | None, typer.Option(help="Requests per second (token bucket); default no limit.")] = None,
    burst: Annotated[int | None, typer.Option(help="Bucket size (default: the rate, rounded up).")] = None,
    max_concurrent: Annotated[int | None, typer.Option(help="Calls in flight at most; default no limit.")] = None,
) -> None:
    """Make a key: prints its secret (shown once: give it to the client) and the entry to append
    to the keys file."""
    try:
        secret, entry = new_entry(
            key_id, tenant, list(scope or []), rate_per_s=rate, burst=burst, max_concurrent=max_concurrent
        )
    except ValueError as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(2) from error
    typer.echo(f"# secret of {key_id} (shown once; clients send 'authorization: Bearer <secret>'):", err=True)
    typer.echo(f"# {secret}", err=True)
    typer.echo(yaml.safe_dump([entry], sort_keys=False).rstrip())

"""The gateway's API key on a local stack: ``LLMOPS_GATEWAY_API_KEYS`` when set, else a random key
made once and kept in ``var/gateway/api-key`` (mode 0600) so `make up`, the demo and curious users
(`grpcurl -H "authorization: Bearer $(cat var/gateway/api-key)"`) share it."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from llmops_config import PlatformSettings

ENVIRONMENT_VARIABLE = "LLMOPS_GATEWAY_API_KEYS"


def key_file(settings: PlatformSettings) -> Path:
    return settings.var_dir / "gateway" / "api-key"


def local_api_key(settings: PlatformSettings) -> str:
    """The key clients of the local stack should send (the first configured one)."""
    configured = [k.strip() for k in os.environ.get(ENVIRONMENT_VARIABLE, "").split(",") if k.strip()]
    if configured:
        return configured[0]
    path = key_file(settings)
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "w") as handle:
            handle.write(f"llmops-local-{secrets.token_urlsafe(24)}\n")
    return path.read_text().strip()


def export_gateway_keys(settings: PlatformSettings) -> None:
    """Make sure the gateway started by this process gets a key (the local one when none is set)."""
    if not os.environ.get(ENVIRONMENT_VARIABLE, "").strip():
        os.environ[ENVIRONMENT_VARIABLE] = local_api_key(settings)

"""API-key authentication: keys are kept only as SHA-256 digests and compared in constant time."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable

from llmops_gateway.errors import NotAuthenticated

BEARER = "bearer "


def digest(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


class ApiKeys:
    """The accepted keys, hashed. Every stored digest is compared (no early exit), each with
    ``hmac.compare_digest``, so timing tells nothing about which key nearly matched."""

    def __init__(self, keys: Iterable[str]) -> None:
        self._digests = tuple(digest(key) for key in keys if key)

    def __len__(self) -> int:
        return len(self._digests)

    def accepts(self, key: str) -> bool:
        presented = digest(key)
        matched = False
        for stored in self._digests:
            matched |= hmac.compare_digest(presented, stored)
        return matched

    def check(self, authorization: str | None) -> None:
        """Raise ``NotAuthenticated`` unless ``authorization`` is ``Bearer <accepted key>``."""
        if not authorization:
            raise NotAuthenticated("missing API key: send 'authorization: Bearer <key>' metadata")
        if authorization[: len(BEARER)].lower() != BEARER:
            raise NotAuthenticated("the authorization metadata must be 'Bearer <key>'")
        if not self.accepts(authorization[len(BEARER) :].strip()):
            raise NotAuthenticated("invalid API key")

"""API keys bound to tenants, scopes and limits.

A key is kept only as the SHA-256 digest of its secret and compared in constant time. Each key
names its id, the tenants it may act for (``*``: any), its scopes (``predict``, ``generate``,
``feedback``), a rate limit (a token bucket: ``rate_per_s`` refilled, ``burst`` at most) and a cap on
its concurrent calls. Keys come from a keys file (YAML or JSON, ``LLMOPS_GATEWAY_API_KEYS_FILE``,
format in ``deploy/security/api-keys.example.yaml``) re-read when its modification time changes,
checked at most once per ``reload_interval_s``: keys rotate without a restart. The simple
``LLMOPS_GATEWAY_API_KEYS`` list still works: each of its keys is an entry ``env-<n>`` for any
tenant with every scope and no limit of its own (the gateway's ``max_in_flight`` still applies).

Refusals: an unknown or missing key is UNAUTHENTICATED; a tenant or scope the key does not have is
PERMISSION_DENIED; a call over the key's rate or concurrency is RESOURCE_EXHAUSTED.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import math
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

import yaml

from llmops_gateway.errors import NotAuthenticated, PermissionDenied, RateLimited, TooManyConcurrent
from llmops_models import shown

logger = logging.getLogger(__name__)

BEARER = "bearer "
ANY_TENANT = "*"
_KEY_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
_DIGEST = re.compile(r"^[0-9a-f]{64}$")


class Scope(StrEnum):
    PREDICT = "predict"
    GENERATE = "generate"
    FEEDBACK = "feedback"


class KeysFileError(ValueError):
    """The keys file is malformed; the message names the entry and field."""


def digest(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


def hash_secret(secret: str) -> str:
    """The hex SHA-256 a keys file stores for ``secret`` (what ``llmops`` prints for a new key)."""
    return digest(secret).hex()


@dataclass(frozen=True, slots=True)
class ApiKey:
    """One key's grants. ``rate_per_s``/``burst``/``max_concurrent`` None: no limit of its own."""

    id: str
    sha256: bytes = field(repr=False)
    tenants: frozenset[str]
    scopes: frozenset[Scope]
    rate_per_s: float | None = None
    burst: int | None = None
    max_concurrent: int | None = None

    @property
    def principal(self) -> str:
        """How the audit trail names the caller: ``key:<id>``."""
        return f"key:{self.id}"

    def allows_tenant(self, tenant: str) -> bool:
        return ANY_TENANT in self.tenants or tenant in self.tenants

    @property
    def only_tenant(self) -> str | None:
        """The tenant a request naming none acts for, when the key has exactly one."""
        if len(self.tenants) == 1 and ANY_TENANT not in self.tenants:
            return next(iter(self.tenants))
        return None

    @property
    def limits(self) -> tuple[float | None, int | None, int | None]:
        return self.rate_per_s, self.burst, self.max_concurrent


def keys_from_list(keys: Iterable[str]) -> list[ApiKey]:
    """The simple setting's keys: any tenant, every scope, no limit of their own."""
    return [
        ApiKey(id=f"env-{index}", sha256=digest(key), tenants=frozenset({ANY_TENANT}), scopes=frozenset(Scope))
        for index, key in enumerate(k for k in keys if k)
    ]


def parse_keys(document: Any, *, source: str = "the keys file") -> list[ApiKey]:
    """Entries of a keys document (``{"keys": [...]}``); raises ``KeysFileError`` naming what is wrong."""
    if not isinstance(document, Mapping) or not isinstance(document.get("keys"), list):
        raise KeysFileError(f"{source}: expected a mapping with a 'keys' list")
    unknown_top = set(document) - {"keys"}
    if unknown_top:
        raise KeysFileError(f"{source}: unknown top-level fields {sorted(unknown_top)}")
    keys: list[ApiKey] = []
    seen: set[str] = set()
    for index, entry in enumerate(document["keys"]):
        where = f"{source}: keys[{index}]"
        if not isinstance(entry, Mapping):
            raise KeysFileError(f"{where} is not a mapping")
        unknown = set(entry) - {"id", "sha256", "tenants", "scopes", "rate_per_s", "burst", "max_concurrent"}
        if unknown:
            raise KeysFileError(f"{where}: unknown fields {sorted(unknown)}")
        key_id = str(entry.get("id", ""))
        if not _KEY_ID.match(key_id):
            raise KeysFileError(f"{where}.id {key_id!r} must match {_KEY_ID.pattern}")
        if key_id in seen:
            raise KeysFileError(f"{where}.id {key_id!r} appears twice")
        seen.add(key_id)
        hexdigest = str(entry.get("sha256", "")).lower()
        if not _DIGEST.match(hexdigest):
            raise KeysFileError(f"{where}.sha256 must be 64 hex digits (the SHA-256 of the secret, never the secret)")
        tenants = entry.get("tenants")
        if not isinstance(tenants, list) or not tenants or not all(isinstance(t, str) and t for t in tenants):
            raise KeysFileError(f"{where}.tenants must be a non-empty list of tenant names ('*' for any)")
        scopes = entry.get("scopes")
        if not isinstance(scopes, list) or not scopes:
            raise KeysFileError(f"{where}.scopes must be a non-empty list of {', '.join(Scope)}")
        try:
            granted = frozenset(Scope(str(scope)) for scope in scopes)
        except ValueError as error:
            raise KeysFileError(f"{where}.scopes: {error}; expected {', '.join(Scope)}") from error
        rate = _positive(entry.get("rate_per_s"), f"{where}.rate_per_s", float)
        burst = _positive(entry.get("burst"), f"{where}.burst", int)
        concurrent = _positive(entry.get("max_concurrent"), f"{where}.max_concurrent", int)
        if burst is not None and rate is None:
            raise KeysFileError(f"{where}: burst needs rate_per_s")
        keys.append(
            ApiKey(
                id=key_id,
                sha256=bytes.fromhex(hexdigest),
                tenants=frozenset(tenants),
                scopes=granted,
                rate_per_s=rate,
                burst=burst if burst is not None else (max(1, math.ceil(rate)) if rate is not None else None),
                max_concurrent=concurrent,
            )
        )
    return keys


def _positive(value: Any, where: str, kind: type[float] | type[int]) -> Any:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value <= 0:
        raise KeysFileError(f"{where} must be a positive number (or absent for no limit)")
    if kind is int and value != int(value):
        raise KeysFileError(f"{where} must be a whole number")
    return kind(value)


def load_keys_file(path: Path) -> list[ApiKey]:
    """Read a YAML (or JSON, a subset of YAML) keys file."""
    text = path.read_text()
    try:
        document = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as error:
        raise KeysFileError(f"{path}: not valid {'JSON' if path.suffix == '.json' else 'YAML'}: {error}") from error
    return parse_keys(document, source=str(path))


@dataclass(slots=True)
class TokenBucket:
    """``rate`` tokens a second up to ``capacity``; a call takes one or is refused."""

    rate: float
    capacity: int
    tokens: float
    updated: float

    def take(self, now: float) -> bool:
        self.tokens = min(self.capacity, self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        if self.tokens >= 1:
            self.tokens -= 1
            return True
        return False


@dataclass(frozen=True, slots=True)
class KeysChanged:
    """What a reload of the keys file changed (key ids only: never a secret or digest)."""

    path: str
    added: tuple[str, ...]
    removed: tuple[str, ...]
    changed: tuple[str, ...]
    """Ids whose tenants, scopes or limits differ."""


class KeyRing:
    """The accepted keys and each key's live state (bucket, calls in flight).

    ``authenticate`` compares the presented secret's digest with every stored digest (no early
    exit, ``hmac.compare_digest`` each) so timing says nothing about which key nearly matched. An
    authorization value that passed is remembered (at most ``cache_size`` of them, each for
    ``cache_ttl_s``; 0 turns it off) until the keys change. State survives a reload for a key whose
    id and limits are unchanged; the gateway serves on one event loop, so counts need no lock (the
    reload is guarded, as it may run from any thread)."""

    def __init__(
        self,
        keys: Sequence[ApiKey] = (),
        *,
        path: Path | None = None,
        extra: Sequence[ApiKey] = (),
        reload_interval_s: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
        cache_size: int = 1024,
        cache_ttl_s: float = 60.0,
    ) -> None:
        if cache_size < 0 or cache_ttl_s < 0:
            raise ValueError("cache_size and cache_ttl_s must be >= 0")
        self._path = path
        self._extra = tuple(extra)
        self._reload_interval_s = reload_interval_s
        self._clock = clock
        self._lock = threading.Lock()
        self._mtime: int | None = None
        self._checked_at: float | None = None
        self._keys: tuple[ApiKey, ...] = (*keys, *self._extra)
        self._buckets: dict[str, TokenBucket] = {}
        self._in_flight: dict[str, int] = {}
        # Verified authorization values: a hit skips hashing and the comparison with every key.
        # Bounded (least recently used out) and short-lived; emptied whenever the keys change, so a
        # rotated or removed key is refused from the next reload on, as without the cache.
        self._verified: OrderedDict[str, tuple[ApiKey, float]] = OrderedDict()
        self._cache_size = cache_size
        self._cache_ttl_s = cache_ttl_s
        self.on_change: Callable[[KeysChanged], None] | None = None
        """Called after the file changed while serving (a policy change, audited by the gateway)."""
        if path is not None:
            self.reload(force=True)

    def __len__(self) -> int:
        return len(self._keys)

    @property
    def keys(self) -> tuple[ApiKey, ...]:
        return self._keys

    def reload(self, *, force: bool = False) -> bool:
        """Re-read the keys file if its modification time changed (checked at most once per
        ``reload_interval_s`` unless ``force``); returns whether the keys were replaced. A file
        that cannot be read or parsed keeps the keys in force (logged): a typo must not lock
        every caller out, nor let anyone in."""
        if self._path is None:
            return False
        now = self._clock()
        with self._lock:
            if not force and self._checked_at is not None and now - self._checked_at < self._reload_interval_s:
                return False
            self._checked_at = now
            try:
                mtime = self._path.stat().st_mtime_ns
            except OSError as error:
                if force:
                    raise KeysFileError(f"{self._path}: cannot be read ({error.strerror or error})") from error
                logger.error("API keys file unreadable; keeping the keys in force", extra={"path": str(self._path)})
                return False
            if not force and mtime == self._mtime:
                return False
            try:
                loaded = load_keys_file(self._path)
            except (OSError, KeysFileError) as error:
                if force:
                    raise
                logger.error("API keys file invalid; keeping the keys in force: %s", error)
                return False
            self._mtime = mtime
            before = {key.id: key for key in self._keys}
            self._replace((*loaded, *self._extra))
        logger.info("API keys loaded", extra={"path": str(self._path), "keys": len(self._keys)})
        if not force and self.on_change is not None:
            after = {key.id: key for key in self._keys}
            self.on_change(
                KeysChanged(
                    path=str(self._path),
                    added=tuple(sorted(after.keys() - before.keys())),
                    removed=tuple(sorted(before.keys() - after.keys())),
                    changed=tuple(sorted(i for i in after.keys() & before.keys() if after[i] != before[i])),
                )
            )
        return True

    def _replace(self, keys: Sequence[ApiKey]) -> None:
        old = {key.id: key for key in self._keys}
        self._keys = tuple(keys)
        self._verified.clear()
        kept = {key.id for key in self._keys if key.id in old and old[key.id].limits == key.limits}
        self._buckets = {key_id: bucket for key_id, bucket in self._buckets.items() if key_id in kept}

    def authenticate(self, authorization: str | None) -> ApiKey:
        """The key ``authorization`` (``Bearer <secret>``) presents; raises ``NotAuthenticated``."""
        self.reload()
        if not authorization:
            raise NotAuthenticated("missing API key: send 'authorization: Bearer <key>' metadata")
        cached = self._verified.get(authorization)
        if cached is not None:
            if cached[1] > self._clock():
                self._verified.move_to_end(authorization)
                return cached[0]
            del self._verified[authorization]
        if authorization[: len(BEARER)].lower() != BEARER:
            raise NotAuthenticated("the authorization metadata must be 'Bearer <key>'")
        presented = digest(authorization[len(BEARER) :].strip())
        found: ApiKey | None = None
        for key in self._keys:
            if hmac.compare_digest(presented, key.sha256) and found is None:
                found = key
        if found is None:
            raise NotAuthenticated("invalid API key")  # never cached: a wrong key costs the full check
        if self._cache_size and self._cache_ttl_s:
            self._verified[authorization] = (found, self._clock() + self._cache_ttl_s)
            if len(self._verified) > self._cache_size:
                self._verified.popitem(last=False)
        return found

    def check(self, authorization: str | None) -> None:
        """Authenticate only (no tenant, scope or limit)."""
        self.authenticate(authorization)

    def accepts(self, secret: str) -> bool:
        try:
            self.authenticate(f"Bearer {secret}")
        except NotAuthenticated:
            return False
        return True

    def acquire(self, key: ApiKey, scope: Scope) -> None:
        """Take one of ``key``'s concurrent slots for a call of ``scope`` (after a token from its
        bucket); raises ``PermissionDenied`` (scope), ``RateLimited`` or ``TooManyConcurrent``.
        Give the slot back with :meth:`release`."""
        if scope not in key.scopes:
            raise PermissionDenied(f"API key {key.id} lacks the {scope} scope (it has {', '.join(sorted(key.scopes))})")
        in_flight = self._in_flight.get(key.id, 0)
        if key.max_concurrent is not None and in_flight >= key.max_concurrent:
            raise TooManyConcurrent(f"API key {key.id} already has {in_flight} calls in flight, its limit; retry later")
        if key.rate_per_s is not None and key.burst is not None:
            bucket = self._buckets.get(key.id)
            now = self._clock()
            if bucket is None:
                bucket = self._buckets[key.id] = TokenBucket(key.rate_per_s, key.burst, float(key.burst), now)
            if not bucket.take(now):
                raise RateLimited(
                    f"API key {key.id} is over its rate limit ({key.rate_per_s:g}/s, burst {key.burst}); retry later"
                )
        self._in_flight[key.id] = in_flight + 1

    def release(self, key: ApiKey) -> None:
        left = self._in_flight.get(key.id, 1) - 1
        if left > 0:
            self._in_flight[key.id] = left
        else:
            self._in_flight.pop(key.id, None)

    @contextmanager
    def admit(self, key: ApiKey, scope: Scope) -> Iterator[None]:
        """:meth:`acquire` for the duration of the block."""
        self.acquire(key, scope)
        try:
            yield
        finally:
            self.release(key)


def tenant_for(key: ApiKey, requested: str, default_tenant: str) -> str:
    """The tenant a call acts for: the one it names (which the key must allow), else the key's
    only tenant, else ``default_tenant``; raises ``PermissionDenied``."""
    tenant = requested.strip() or key.only_tenant or default_tenant
    if not key.allows_tenant(tenant):
        raise PermissionDenied(f"API key {key.id} may not act for tenant {shown(tenant)}")
    return tenant


def ApiKeys(keys: Iterable[str]) -> KeyRing:
    """A key ring of plain keys (the ``LLMOPS_GATEWAY_API_KEYS`` setting); named as the class it replaced."""
    return KeyRing(keys_from_list(keys))

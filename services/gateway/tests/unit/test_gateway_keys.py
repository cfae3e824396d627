"""Tenant-bound API keys (pure logic, a fake clock): the keys file, tenants, scopes, the token
bucket, the concurrency cap, and rotation by re-reading the file."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import yaml

from llmops_gateway.domain.auth import (
    ANY_TENANT,
    KeyRing,
    KeysFileError,
    Scope,
    hash_secret,
    keys_from_list,
    load_keys_file,
    parse_keys,
    tenant_for,
)
from llmops_gateway.errors import NotAuthenticated, PermissionDenied, RateLimited, TooManyConcurrent

REPO_ROOT = Path(__file__).resolve().parents[4]


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _entry(key_id: str, secret: str, **fields: object) -> dict[str, object]:
    return {"id": key_id, "sha256": hash_secret(secret), "tenants": ["acme"], "scopes": ["predict"], **fields}


def _write(path: Path, *entries: dict[str, object], mtime_ns: int | None = None) -> None:
    document = {"keys": list(entries)}
    path.write_text(json.dumps(document) if path.suffix == ".json" else yaml.safe_dump(document))
    if mtime_ns is not None:
        os.utime(path, ns=(mtime_ns, mtime_ns))


def test_the_example_keys_file_parses() -> None:
    keys = load_keys_file(REPO_ROOT / "deploy" / "security" / "api-keys.example.yaml")
    assert [key.id for key in keys] == ["acme-prod", "globex-classifier"]
    assert keys[1].scopes == {Scope.PREDICT} and keys[1].tenants == {"globex", "globex-eu"}
    assert (keys[0].rate_per_s, keys[0].burst, keys[0].max_concurrent) == (50, 100, 16)


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"sha256": "my-secret-in-clear"}, "sha256 must be 64 hex digits"),
        ({"id": "has space"}, r"\.id 'has space' must match"),
        ({"tenants": []}, "tenants must be a non-empty list"),
        ({"scopes": ["predict", "admin"]}, "scopes: 'admin' is not a valid Scope"),
        ({"rate_per_s": -1}, "rate_per_s must be a positive number"),
        ({"burst": 3}, "burst needs rate_per_s"),
        ({"max_concurrent": 1.5, "rate_per_s": 1}, "max_concurrent must be a whole number"),
        ({"colour": "blue"}, r"unknown fields \['colour'\]"),
    ],
)
def test_a_malformed_entry_is_refused_naming_its_field(entry: dict[str, object], message: str) -> None:
    with pytest.raises(KeysFileError, match=message):
        parse_keys({"keys": [{**_entry("k", "s"), **entry}]})


def test_a_key_acts_only_for_its_tenants_and_an_unnamed_tenant_is_its_only_one() -> None:
    [key] = parse_keys({"keys": [_entry("acme-key", "s1")]})
    assert tenant_for(key, "acme", "default") == "acme"
    assert tenant_for(key, "", "default") == "acme"
    with pytest.raises(PermissionDenied, match="API key acme-key may not act for tenant 'globex'"):
        tenant_for(key, "globex", "default")
    [anyone] = keys_from_list(["legacy"])
    assert anyone.tenants == {ANY_TENANT} and anyone.scopes == set(Scope)
    assert tenant_for(anyone, "", "default") == "default" and tenant_for(anyone, "globex", "default") == "globex"


def test_a_key_without_a_scope_is_denied_it() -> None:
    ring = KeyRing(parse_keys({"keys": [_entry("classifier-only", "s1")]}))
    key = ring.authenticate("Bearer s1")
    with ring.admit(key, Scope.PREDICT):
        pass
    with pytest.raises(PermissionDenied, match="lacks the generate scope"), ring.admit(key, Scope.GENERATE):
        pass


def test_the_token_bucket_refuses_the_third_immediate_call_and_refills() -> None:
    clock = Clock()
    ring = KeyRing(parse_keys({"keys": [_entry("slow", "s1", rate_per_s=0.5, burst=2)]}), clock=clock)
    key = ring.authenticate("Bearer s1")
    for _ in range(2):
        with ring.admit(key, Scope.PREDICT):
            pass
    with pytest.raises(RateLimited, match=r"over its rate limit \(0.5/s, burst 2\)"), ring.admit(key, Scope.PREDICT):
        pass
    clock.now += 2.0  # one token back
    with ring.admit(key, Scope.PREDICT):
        pass
    with pytest.raises(RateLimited), ring.admit(key, Scope.PREDICT):
        pass


def test_concurrent_calls_are_capped_per_key_and_released() -> None:
    ring = KeyRing(parse_keys({"keys": [_entry("one-at-a-time", "s1", max_concurrent=1)]}))
    key = ring.authenticate("Bearer s1")
    with (
        ring.admit(key, Scope.PREDICT),
        pytest.raises(TooManyConcurrent, match="1 calls in flight"),
        ring.admit(key, Scope.PREDICT),
    ):
        pass
    with ring.admit(key, Scope.PREDICT):  # released, also after an error inside the call
        pass
    with pytest.raises(RuntimeError), ring.admit(key, Scope.PREDICT):
        raise RuntimeError("the call failed")
    with ring.admit(key, Scope.PREDICT):
        pass


def test_keys_rotate_when_the_file_changes_checked_at_most_once_per_interval(tmp_path: Path) -> None:
    path, clock = tmp_path / "keys.yaml", Clock()
    _write(path, _entry("old", "old-secret"), mtime_ns=1_000_000_000)
    ring = KeyRing(path=path, extra=keys_from_list(["env-secret"]), reload_interval_s=1.0, clock=clock)
    assert ring.authenticate("Bearer old-secret").id == "old"
    assert ring.authenticate("Bearer env-secret").id == "env-0"  # the simple setting's key stays beside the file

    _write(path, _entry("new", "new-secret"), mtime_ns=2_000_000_000)
    clock.now += 0.5  # within the interval: not re-read yet
    assert ring.authenticate("Bearer old-secret").id == "old"
    clock.now += 0.6
    assert ring.authenticate("Bearer new-secret").id == "new"
    with pytest.raises(NotAuthenticated, match="invalid API key"):
        ring.authenticate("Bearer old-secret")

    path.write_text("keys: [this is: not valid")  # a broken edit keeps the keys in force
    os.utime(path, ns=(3_000_000_000, 3_000_000_000))
    clock.now += 1.1
    assert ring.authenticate("Bearer new-secret").id == "new"


def test_a_rotated_key_keeps_its_bucket_unless_its_limits_change(tmp_path: Path) -> None:
    path, clock = tmp_path / "keys.json", Clock()
    _write(path, _entry("k", "s", rate_per_s=0.001, burst=1), mtime_ns=1_000_000_000)
    ring = KeyRing(path=path, clock=clock)
    with ring.admit(ring.authenticate("Bearer s"), Scope.PREDICT):
        pass
    _write(path, _entry("k", "s", rate_per_s=0.001, burst=1, tenants=["acme", "globex"]), mtime_ns=2_000_000_000)
    clock.now += 1.1
    key = ring.authenticate("Bearer s")
    assert key.tenants == {"acme", "globex"}
    with pytest.raises(RateLimited), ring.admit(key, Scope.PREDICT):  # a reload is no way around the limit
        pass


def test_a_missing_keys_file_stops_the_start(tmp_path: Path) -> None:
    with pytest.raises(KeysFileError, match="cannot be read"):
        KeyRing(path=tmp_path / "absent.yaml")


def test_verified_keys_are_remembered_bounded_and_for_a_while_only(tmp_path: Path) -> None:
    path, clock = tmp_path / "keys.yaml", Clock()
    _write(path, _entry("a", "sa"), _entry("b", "sb"), mtime_ns=1_000_000_000)
    ring = KeyRing(path=path, clock=clock, cache_size=1, cache_ttl_s=10.0)
    assert ring.authenticate("Bearer sa").id == "a"
    assert list(ring._verified) == ["Bearer sa"]
    assert ring.authenticate("Bearer sb").id == "b"  # the bound: the least recently used goes
    assert list(ring._verified) == ["Bearer sb"]
    with pytest.raises(NotAuthenticated):
        ring.authenticate("Bearer wrong")
    assert list(ring._verified) == ["Bearer sb"]  # a refused value is never remembered
    clock.now += 10.5  # past the time to live: checked again (and remembered again)
    assert ring.authenticate("Bearer sb").id == "b"
    assert ring._verified["Bearer sb"][1] == pytest.approx(clock.now + 10.0)
    # A removed key is refused from the reload on, however recently it was verified.
    _write(path, _entry("a", "sa"), mtime_ns=2_000_000_000)
    clock.now += 1.1
    with pytest.raises(NotAuthenticated):
        ring.authenticate("Bearer sb")
    assert KeyRing(keys_from_list(["k"]), cache_size=0).authenticate("Bearer k").id == "env-0"

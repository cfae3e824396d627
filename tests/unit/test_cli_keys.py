"""``llmops keys new`` makes an entry the gateway's keys file accepts, holding only the hash."""

from __future__ import annotations

import yaml
from typer.testing import CliRunner

from llmops_cli.__main__ import app
from llmops_gateway.domain.auth import KeyRing, Scope, parse_keys


def test_a_new_key_is_accepted_by_the_gateway_and_only_its_hash_is_stored() -> None:
    result = CliRunner().invoke(
        app, ["keys", "new", "--id", "acme-prod", "--tenant", "acme", "--scope", "generate", "--rate", "2"]
    )
    assert result.exit_code == 0, result.output
    secret = next(line[2:] for line in result.stderr.splitlines() if line.startswith("# llmops-"))
    keys = parse_keys({"keys": yaml.safe_load(result.stdout)})
    assert secret not in result.stdout
    assert (keys[0].id, keys[0].tenants, keys[0].scopes, keys[0].burst) == ("acme-prod", {"acme"}, {Scope.GENERATE}, 2)
    assert KeyRing(keys).authenticate(f"Bearer {secret}").id == "acme-prod"


def test_an_unknown_scope_is_refused() -> None:
    result = CliRunner().invoke(app, ["keys", "new", "--id", "k", "--tenant", "acme", "--scope", "admin"])
    assert result.exit_code == 2 and "unknown scopes ['admin']" in result.output

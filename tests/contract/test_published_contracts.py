"""``contracts/`` (committed, for teams in other languages) is exactly what the models and protos
generate now, and the check that ``make lint`` runs notices any difference."""

from __future__ import annotations

from pathlib import Path

import yaml

from llmops_cli.codegen import check_contracts, generate_contracts

from .artefacts import PROTO_ROOT, REPO

CONTRACTS = REPO / "contracts"


def test_the_committed_contracts_match_the_models_and_protos() -> None:
    problems = check_contracts(CONTRACTS, PROTO_ROOT)
    assert problems == [], "contracts/ is out of date: run `make generate` and commit contracts/\n" + "\n".join(
        problems
    )


def test_the_check_reports_edited_missing_and_stale_files(tmp_path: Path) -> None:
    generate_contracts(tmp_path, PROTO_ROOT)
    assert check_contracts(tmp_path, PROTO_ROOT) == []
    schema = tmp_path / "schemas" / "llmops.record.submitted.v1.json"
    schema.write_text(schema.read_text().replace('"tenant"', '"tenant_id"'))
    (tmp_path / "proto" / "llmops" / "ops" / "v1" / "ops.proto").unlink()
    (tmp_path / "schemas" / "llmops.record.deleted.v1.json").write_text("{}")

    assert check_contracts(tmp_path, PROTO_ROOT) == [
        "missing: proto/llmops/ops/v1/ops.proto",
        "not generated (stale): schemas/llmops.record.deleted.v1.json",
        "differs: schemas/llmops.record.submitted.v1.json",
    ]


def test_the_asyncapi_document_is_self_contained_yaml(tmp_path: Path) -> None:
    generate_contracts(tmp_path, PROTO_ROOT)
    document = yaml.safe_load((tmp_path / "asyncapi.yaml").read_text())
    text = (tmp_path / "asyncapi.yaml").read_text()
    assert document["asyncapi"] == "3.0.0" and "#/$defs/" not in text  # every $ref resolves in the document
    assert {"local", "production"} <= set(document["servers"])

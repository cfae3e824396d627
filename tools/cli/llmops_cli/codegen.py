"""Generated artefacts: protobuf/gRPC stubs, and the published contracts.

All are derived from their sources (``proto/``, the pydantic models in ``llmops_events``, the
topic and participant tables) by ``make generate`` / ``make setup`` and never edited by hand:

* ``gen/python`` (git-ignored): the Python stubs the services import;
* ``contracts/`` (committed): what a team in another language needs and nothing else, the JSON
  Schema of each event, the AsyncAPI document and the ``.proto`` files. ``make lint`` regenerates
  it into a temporary folder and fails when the committed copy differs (``check_contracts``).

The schemas themselves come from ``llmops_events.schemas``; this module only writes them.
"""

from __future__ import annotations

import filecmp
import json
import shutil
import tempfile
from pathlib import Path

import yaml

from llmops_events.schemas import asyncapi_document, event_schemas


def generate_protobuf(proto_root: Path, out_dir: Path) -> list[Path]:
    """Compile every ``.proto`` under ``proto_root`` into Python message and gRPC stubs."""
    from grpc_tools import protoc  # imported here: only set-up needs the compiler

    protos = sorted(proto_root.rglob("*.proto"))
    out_dir.mkdir(parents=True, exist_ok=True)
    include = Path(protoc.__file__).parent / "_proto"
    arguments = [
        "grpc_tools.protoc",
        f"-I{proto_root}",
        f"-I{include}",
        f"--python_out={out_dir}",
        f"--pyi_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        *(str(path) for path in protos),
    ]
    if protoc.main(arguments) != 0:
        raise RuntimeError(f"protoc failed on {', '.join(map(str, protos))}")
    # protoc writes no __init__.py; regular packages keep mypy and importlib predictable.
    for folder in {path.parent for path in out_dir.rglob("*_pb2.py")}:
        while folder != out_dir:
            (folder / "__init__.py").touch()
            folder = folder.parent
    return sorted(out_dir.rglob("*_pb2*.py"))


CONTRACTS_README = """# Contracts of the llmops platform (generated: do not edit)

Everything a producer, consumer or gRPC client in another language needs, generated from the
platform's models by `make generate` and checked against them by `make lint`:

- `asyncapi.yaml`: AsyncAPI 3.0: the Kafka servers (local and production with SASL/TLS), one
  channel per topic with its key and configuration, every event in both CloudEvents content
  modes (binary: `ce_*` headers; structured: one JSON document), and which participant sends and
  receives each (operations, tagged by participant).
- `schemas/<event type>.json`: JSON Schema 2020-12 of each event in structured mode.
- `proto/`: the gRPC services (`llmops.inference.v1` for clients, `llmops.ops.v1` for operators).

Working clients in Java, Go and Node are in `examples/`.
"""


def generate_contracts(out_dir: Path, proto_root: Path) -> list[Path]:
    """Write the published contracts under ``out_dir``, replacing what was there: ``README.md``,
    ``asyncapi.yaml``, ``schemas/<event type>.json`` and a copy of every ``.proto`` under ``proto/``."""
    for stale in ("schemas", "proto"):
        shutil.rmtree(out_dir / stale, ignore_errors=True)
    written = []
    schema_dir = out_dir / "schemas"
    schema_dir.mkdir(parents=True, exist_ok=True)
    for event_type, schema in event_schemas().items():
        path = schema_dir / f"{event_type}.json"
        path.write_text(json.dumps(schema, indent=2, sort_keys=True, ensure_ascii=False) + "\n")
        written.append(path)
    asyncapi = out_dir / "asyncapi.yaml"
    asyncapi.write_text(yaml.safe_dump(asyncapi_document(), sort_keys=False, allow_unicode=True, width=120))
    written.append(asyncapi)
    for proto in sorted(proto_root.rglob("*.proto")):
        target = out_dir / "proto" / proto.relative_to(proto_root)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(proto, target)
        written.append(target)
    readme = out_dir / "README.md"
    readme.write_text(CONTRACTS_README)
    written.append(readme)
    return written


def check_contracts(contracts_dir: Path, proto_root: Path) -> list[str]:
    """How the committed ``contracts_dir`` differs from what the models generate now (empty: in sync)."""
    with tempfile.TemporaryDirectory() as scratch:
        fresh = Path(scratch)
        generate_contracts(fresh, proto_root)
        expected = {p.relative_to(fresh).as_posix() for p in fresh.rglob("*") if p.is_file()}
        present = (
            {p.relative_to(contracts_dir).as_posix() for p in contracts_dir.rglob("*") if p.is_file()}
            if contracts_dir.is_dir()
            else set()
        )
        problems = [f"missing: {name}" for name in sorted(expected - present)]
        problems += [f"not generated (stale): {name}" for name in sorted(present - expected)]
        problems += [
            f"differs: {name}"
            for name in sorted(expected & present)
            if not filecmp.cmp(fresh / name, contracts_dir / name, shallow=False)
        ]
    return problems

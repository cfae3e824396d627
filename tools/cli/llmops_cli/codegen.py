"""Generated artefacts: protobuf/gRPC stubs, JSON Schemas and the AsyncAPI document.

All are derived from their sources (``proto/``, the pydantic models in ``llmops_events``,
the topic table) by ``make setup`` and never committed or edited by hand. The schemas themselves
come from ``llmops_events.schemas``; this module only writes them.
"""

from __future__ import annotations

import json
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


def generate_contracts(out_dir: Path) -> list[Path]:
    """Write ``schemas/<event type>.json`` and ``asyncapi.yaml`` under ``out_dir``."""
    written = []
    schema_dir = out_dir / "schemas"
    schema_dir.mkdir(parents=True, exist_ok=True)
    for event_type, schema in event_schemas().items():
        path = schema_dir / f"{event_type}.json"
        path.write_text(json.dumps(schema, indent=2, sort_keys=True) + "\n")
        written.append(path)
    asyncapi = out_dir / "asyncapi.yaml"
    asyncapi.write_text(yaml.safe_dump(asyncapi_document(), sort_keys=False, allow_unicode=True))
    written.append(asyncapi)
    return written

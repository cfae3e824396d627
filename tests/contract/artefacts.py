"""The contracts as they are now, in the shape their snapshots are stored in."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

from google.protobuf import descriptor_pb2, json_format

from llmops_events.schemas import event_schemas

REPO = Path(__file__).resolve().parents[2]
PROTO_ROOT = REPO / "proto"


def dump(document: Any) -> str:
    """Pretty, key-sorted JSON: snapshots read well in a diff."""
    return json.dumps(document, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def event_schema_files() -> dict[str, Any]:
    """``<event type>.json`` -> JSON Schema, for every event type."""
    return {f"{event_type}.json": schema for event_type, schema in event_schemas().items()}


def by_event_type(documents: dict[str, Any]) -> dict[str, Any]:
    return {name.removesuffix(".json"): schema for name, schema in documents.items()}


def compile_protos(proto_root: Path) -> descriptor_pb2.FileDescriptorSet:
    """Every ``.proto`` under ``proto_root``, compiled by protoc (as ``llmops generate`` does)."""
    from grpc_tools import protoc

    protos = [path.relative_to(proto_root).as_posix() for path in sorted(proto_root.rglob("*.proto"))]
    include = Path(protoc.__file__).parent / "_proto"
    with tempfile.TemporaryDirectory() as scratch:
        out = Path(scratch) / "descriptors.binpb"
        arguments = ["grpc_tools.protoc", f"-I{proto_root}", f"-I{include}", f"--descriptor_set_out={out}", *protos]
        if protoc.main(arguments) != 0:
            raise RuntimeError(f"protoc failed on {', '.join(protos)}")
        return descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes())


def descriptor_dict(file: descriptor_pb2.FileDescriptorProto) -> dict[str, Any]:
    return json_format.MessageToDict(file, preserving_proto_field_name=True)


def proto_descriptor_files(proto_root: Path) -> dict[str, Any]:
    """``<file>.proto.json`` -> ``FileDescriptorProto`` as a dict, for every ``.proto``."""
    return {f"{file.name}.json": descriptor_dict(file) for file in compile_protos(proto_root).file}


def by_file_name(documents: dict[str, Any]) -> dict[str, Any]:
    return {document["name"]: document for document in documents.values()}

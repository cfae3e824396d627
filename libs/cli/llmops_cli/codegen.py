"""Generated artefacts: protobuf/gRPC stubs, JSON Schemas and the AsyncAPI document.

All are derived from their sources (``proto/``, the pydantic models in ``llmops_events``,
the topic table) by ``make setup`` and never committed or edited by hand.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from llmops_events import Envelope, event_types
from llmops_events.topics import TOPICS

SCHEMA_BASE_URI = "https://llmops.dev/schemas"


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


def event_schemas() -> dict[str, dict[str, Any]]:
    """The JSON Schema of each event type in structured mode (envelope with typed ``data``)."""
    schemas = {}
    for event_type, model in sorted(event_types().items()):
        schema = Envelope[model].model_json_schema(mode="serialization")  # type: ignore[valid-type]
        schema["properties"]["type"]["const"] = event_type
        schema = {
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "$id": f"{SCHEMA_BASE_URI}/{event_type}.json",
            "title": event_type,
            "description": (model.__doc__ or "").strip(),
            **{k: v for k, v in schema.items() if k not in {"title", "description"}},
        }
        schemas[event_type] = schema
    return schemas


def asyncapi_document() -> dict[str, Any]:
    """An AsyncAPI 3.0 document of every topic and the events it carries."""
    types_by_topic: dict[str, list[str]] = {}
    for event_type, model in event_types().items():
        types_by_topic.setdefault(model.topic, []).append(event_type)
    channels: dict[str, Any] = {}
    components: dict[str, Any] = {"messages": {}, "schemas": {}}
    for event_type, schema in event_schemas().items():
        name = event_type.replace(".", "_")
        components["schemas"][name] = schema
        components["messages"][name] = {
            "name": event_type,
            "title": event_type,
            "summary": schema["description"].splitlines()[0] if schema["description"] else event_type,
            "contentType": "application/cloudevents+json",
            "payload": {"$ref": f"#/components/schemas/{name}"},
        }
    for spec in TOPICS:
        channel_id = spec.name.replace(".", "_")
        messages = {
            t.replace(".", "_"): {"$ref": f"#/components/messages/{t.replace('.', '_')}"}
            for t in sorted(types_by_topic.get(spec.name, []))
        }
        channels[channel_id] = {
            "address": spec.name,
            "description": f"{spec.description} Key: {spec.key}.",
            "messages": messages,
            "bindings": {
                "kafka": {
                    "topic": spec.name,
                    "partitions": spec.partitions,
                    "topicConfiguration": {
                        "cleanup.policy": spec.config.get("cleanup.policy", "delete").split(","),
                        "retention.ms": int(spec.config.get("retention.ms", "-1")),
                    },
                }
            },
        }
    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "LLMOps platform events",
            "version": "1.0.0",
            "description": (
                "CloudEvents 1.0 over Kafka (structured or binary content mode). Generated from llmops_events."
            ),
        },
        "defaultContentType": "application/cloudevents+json",
        "channels": channels,
        "components": components,
    }


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

"""The machine-readable contracts of the platform's events, derived from the pydantic models in
``llmops_events`` and the topic table: a JSON Schema per event type and an AsyncAPI document.

Pure functions (no files written): ``llmops generate`` writes them under ``gen/``; contract tests
and services validate against them directly.
"""

from __future__ import annotations

from typing import Any

from llmops_events import Envelope, event_types
from llmops_events.topics import TOPICS

SCHEMA_BASE_URI = "https://llmops.dev/schemas"


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

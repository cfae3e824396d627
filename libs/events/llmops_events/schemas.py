"""The machine-readable contracts of the platform's events, derived from the pydantic models in
``llmops_events`` and the topic table: a JSON Schema per event type and an AsyncAPI document.

Pure functions (no files written): ``llmops generate`` publishes them in ``contracts/`` (checked
against the models by ``make lint``); contract tests and services validate against them directly.
"""

from __future__ import annotations

import copy
from typing import Any

from llmops_events import Envelope, event_types
from llmops_events.envelope import STRUCTURED_CONTENT_TYPE
from llmops_events.participants import PARTICIPANTS, Participant
from llmops_events.topics import RECORDS_DLQ, TOPICS, TopicSpec

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


KAFKA_BINDING_VERSION = "0.5.0"
LOCAL_SERVER = "127.0.0.1:9092"
BINARY_CONTENT_TYPE = "application/json"
DEAD_LETTER_MESSAGE = "dead_letter"
DEAD_LETTER_HEADERS = {
    "error.stage": "Where handling failed: decode, handle or publish.",
    "error.reason": "A stable code (llmops_events.DeadLetterReason), e.g. schema_violation.",
    "error.detail": "A readable account of what was wrong.",
}


_ATTRIBUTE_DESCRIPTIONS = {
    "specversion": "CloudEvents version: 1.0.",
    "id": "The event's id: unique per event, the same on every redelivery (consumers de-duplicate by it).",
    "source": "Who produced the event (a URI reference, e.g. /llmops/gateway or crm).",
    "type": "The event type (this message's name).",
    "time": "When the event happened (RFC 3339); the producer's clock.",
    "subject": "What the event is about, when the type alone does not say.",
    "traceparent": "W3C trace context of the producing span (CloudEvents distributed tracing extension).",
    "correlationid": "Ties every event of one pass through the loop together (record to deployment to drift).",
}


def asyncapi_document() -> dict[str, Any]:
    """An AsyncAPI 3.0 document of the bus: servers, one channel per topic (its key and broker
    configuration), every event type in both CloudEvents content modes (binary: ``ce_*`` headers
    and the data as the value; structured: one JSON envelope), and who sends and who receives
    each message (operations, from ``llmops_events.participants``)."""
    schemas = event_schemas()
    components: dict[str, Any] = {"schemas": {}, "messages": {}, "securitySchemes": _security_schemes()}
    types_by_topic: dict[str, list[str]] = {}
    for event_type, model in sorted(event_types().items()):
        types_by_topic.setdefault(model.topic, []).append(event_type)
        name = _component_name(event_type)
        envelope, data_ref = _lift_definitions(name, schemas[event_type], components["schemas"])
        components["schemas"][name] = envelope
        summary = envelope["description"].splitlines()[0] if envelope["description"] else event_type
        key = _key_binding(event_type)
        components["messages"][name] = {
            "name": event_type,
            "title": f"{event_type} (structured mode)",
            "summary": summary,
            "description": "The whole CloudEvent as one JSON document (the easy mode for other languages).",
            "contentType": STRUCTURED_CONTENT_TYPE,
            "headers": {
                "type": "object",
                "properties": {"content-type": {"type": "string", "const": STRUCTURED_CONTENT_TYPE}},
            },
            "payload": {"$ref": f"#/components/schemas/{name}"},
            "bindings": {"kafka": key},
        }
        components["messages"][f"{name}_binary"] = {
            "name": event_type,
            "title": f"{event_type} (binary mode)",
            "summary": summary,
            "description": (
                "CloudEvents attributes as ce_* headers, the event's data as the value (what the platform sends)."
            ),
            "contentType": BINARY_CONTENT_TYPE,
            "headers": _binary_headers(event_type),
            "payload": data_ref,
            "bindings": {"kafka": key},
        }
    components["messages"][DEAD_LETTER_MESSAGE] = _dead_letter_message()
    channels = {_component_name(spec.name): _channel(spec, types_by_topic.get(spec.name, [])) for spec in TOPICS}
    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "LLMOps platform events",
            "version": "1.0.0",
            "description": (
                "CloudEvents 1.0 over Kafka, in binary or structured content mode, published and"
                " consumed by the platform's services. Generated from llmops_events; never edited by hand."
            ),
            "license": {"name": "Apache-2.0", "url": "https://www.apache.org/licenses/LICENSE-2.0"},
            "tags": [
                {"name": participant.name, "description": participant.description} for participant in PARTICIPANTS
            ],
        },
        "defaultContentType": STRUCTURED_CONTENT_TYPE,
        "servers": _servers(),
        "channels": channels,
        "operations": _operations(channels),
        "components": components,
    }


def _component_name(dotted: str) -> str:
    return dotted.replace(".", "_")


def _lift_definitions(
    name: str, schema: dict[str, Any], shared: dict[str, Any]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """An event's schema for ``components.schemas``: its ``$defs`` moved beside it (an AsyncAPI
    parser resolves ``#/...`` against the whole document, where ``#/$defs`` does not exist).

    A definition another event already lifted under the same name is shared when identical and
    prefixed with the event's component name when not. Returns the envelope schema and a
    ``$ref`` to its data schema.
    """
    schema = copy.deepcopy(schema)
    definitions = schema.pop("$defs", {})
    renamed = {}
    for definition, body in definitions.items():
        target = definition if shared.get(definition, body) == body else f"{name}_{definition}"
        renamed[definition] = target
    lifted = _rewrite_refs({k: v for k, v in schema.items() if k not in ("$schema", "$id")}, renamed)
    for definition, body in definitions.items():
        shared[renamed[definition]] = _rewrite_refs(body, renamed)
    return lifted, lifted["properties"]["data"]


def _rewrite_refs(node: Any, renamed: dict[str, str]) -> Any:
    if isinstance(node, dict):
        return {
            key: (
                f"#/components/schemas/{renamed[value.removeprefix('#/$defs/')]}"
                if key == "$ref" and isinstance(value, str) and value.startswith("#/$defs/")
                else _rewrite_refs(value, renamed)
            )
            for key, value in node.items()
        }
    if isinstance(node, list):
        return [_rewrite_refs(item, renamed) for item in node]
    return node


def _key_binding(event_type: str) -> dict[str, Any]:
    """The Kafka message key: what the topic is keyed by, and which data field gives it."""
    model = event_types()[event_type]
    spec = next(spec for spec in TOPICS if spec.name == model.topic)
    field = model.key_field
    if field in model.model_fields:
        description = f"{spec.key}: the value of data.{field}"
    else:  # a computed key (a property of the model), documented where it is defined
        doc = getattr(getattr(model, field, None), "__doc__", None) or ""
        description = f"{spec.key}: {doc.strip()}" if doc.strip() else spec.key
    return {"key": {"type": "string", "description": description}, "bindingVersion": KAFKA_BINDING_VERSION}


def _binary_headers(event_type: str) -> dict[str, Any]:
    """The ``ce_*`` headers of binary mode, from the envelope's own fields (UTF-8 strings on the wire)."""
    envelope = Envelope.model_json_schema(mode="serialization")
    properties: dict[str, Any] = {}
    for attribute, field_schema in envelope["properties"].items():
        if attribute in ("data", "datacontenttype"):
            continue
        header = _plain_string(field_schema)
        header["description"] = _ATTRIBUTE_DESCRIPTIONS[attribute]
        if attribute == "type":
            header = {"type": "string", "const": event_type, "description": header["description"]}
        properties[f"ce_{attribute}"] = header
    properties["content-type"] = {
        "type": "string",
        "const": BINARY_CONTENT_TYPE,
        "description": "The data's media type.",
    }
    properties["traceparent"] = {
        "type": "string",
        "description": "W3C trace context; accepted from producers that do not write ce_traceparent.",
        "pattern": envelope["properties"]["traceparent"]["anyOf"][0]["pattern"],
    }
    required = ["ce_specversion", "ce_id", "ce_source", "ce_type"]
    return {"type": "object", "properties": properties, "required": required}


def _plain_string(field_schema: dict[str, Any]) -> dict[str, Any]:
    """A header's schema: the string branch of an optional field, without pydantic's titles."""
    branch = next((b for b in field_schema.get("anyOf", []) if b.get("type") == "string"), field_schema)
    header = {k: v for k, v in branch.items() if k in ("const", "pattern", "format", "minLength", "examples")}
    return {"type": "string", **header}


def _dead_letter_message() -> dict[str, Any]:
    return {
        "name": "dead letter",
        "title": "A dead-lettered message",
        "summary": "A message no handler could accept: the original key, value and headers, plus why.",
        "headers": {
            "type": "object",
            "properties": {name: {"type": "string", "description": text} for name, text in DEAD_LETTER_HEADERS.items()},
            "required": list(DEAD_LETTER_HEADERS),
        },
        "payload": {"description": "The original message's value, byte for byte (it may not be JSON)."},
        "bindings": {
            "kafka": {
                "key": {"type": "string", "description": "The original message's key."},
                "bindingVersion": KAFKA_BINDING_VERSION,
            }
        },
    }


def _channel(spec: TopicSpec, event_types_on_topic: list[str]) -> dict[str, Any]:
    messages = {}
    for event_type in event_types_on_topic:
        name = _component_name(event_type)
        for message in (name, f"{name}_binary"):
            messages[message] = {"$ref": f"#/components/messages/{message}"}
    if spec.name == RECORDS_DLQ:
        messages[DEAD_LETTER_MESSAGE] = {"$ref": f"#/components/messages/{DEAD_LETTER_MESSAGE}"}
    configuration: dict[str, Any] = {
        "cleanup.policy": spec.config.get("cleanup.policy", "delete").split(","),
        "retention.ms": int(spec.config.get("retention.ms", "-1")),
    }
    return {
        "address": spec.name,
        "title": spec.name,
        "description": f"{spec.description} Key: {spec.key}.",
        "messages": messages,
        "bindings": {
            "kafka": {
                "topic": spec.name,
                "partitions": spec.partitions,
                "topicConfiguration": configuration,
                "bindingVersion": KAFKA_BINDING_VERSION,
            }
        },
    }


def _operations(channels: dict[str, Any]) -> dict[str, Any]:
    """One operation per participant, direction and topic, listing the messages (both modes)."""
    operations: dict[str, Any] = {}
    for participant in PARTICIPANTS:
        for action, types in (("send", participant.sends), ("receive", participant.receives)):
            for channel_id, messages in _messages_by_channel(types).items():
                operations[f"{participant.name}_{action}s_{channel_id}"] = _operation(
                    participant, action, channel_id, channels[channel_id], messages
                )
        dlq = _component_name(RECORDS_DLQ)
        if participant.dead_letters:
            operations[f"{participant.name}_sends_{dlq}"] = _operation(
                participant, "send", dlq, channels[dlq], [DEAD_LETTER_MESSAGE]
            )
        if participant.replays_dead_letters:
            operations[f"{participant.name}_receives_{dlq}"] = _operation(
                participant,
                "receive",
                dlq,
                channels[dlq],
                [DEAD_LETTER_MESSAGE],
                note=" (llmops dlq replay re-sends each entry to its original topic)",
            )
    return operations


def _messages_by_channel(types: tuple[str, ...]) -> dict[str, list[str]]:
    registry = event_types()
    by_channel: dict[str, list[str]] = {}
    for event_type in types:
        model = registry.get(event_type)
        if model is None:
            raise ValueError(f"llmops_events.participants names {event_type!r}, which no event model defines")
        name = _component_name(event_type)
        by_channel.setdefault(_component_name(model.topic), []).extend([name, f"{name}_binary"])
    return by_channel


def _operation(
    participant: Participant,
    action: str,
    channel_id: str,
    channel: dict[str, Any],
    messages: list[str],
    note: str = "",
) -> dict[str, Any]:
    verb = "sends to" if action == "send" else "receives from"
    return {
        "action": action,
        "channel": {"$ref": f"#/channels/{channel_id}"},
        "title": f"{participant.name} {verb} {channel['address']}",
        "summary": f"{participant.description}{note}",
        "tags": [{"name": participant.name}],
        "messages": [{"$ref": f"#/channels/{channel_id}/messages/{message}"} for message in messages],
    }


def _servers() -> dict[str, Any]:
    return {
        "local": {
            "host": LOCAL_SERVER,
            "protocol": "kafka",
            "title": "Embedded default",
            "description": (
                "The single KRaft broker `make up` starts (PLAINTEXT, no authentication);"
                " override with LLMOPS_KAFKA_BOOTSTRAP_SERVERS."
            ),
        },
        "production": {
            "host": "{bootstrap}",
            "protocol": "kafka-secure",
            "title": "A production cluster",
            "description": (
                "A managed cluster or Strimzi: TLS on every connection and SASL/SCRAM, one principal per"
                " participant (the operation tags), with ACLs that allow each only the topics its operations name."
            ),
            "variables": {
                "bootstrap": {
                    "default": "kafka.example.com:9093",
                    "description": "The cluster's bootstrap servers (TLS listener).",
                }
            },
            "security": [
                {"$ref": "#/components/securitySchemes/saslScram"},
                {"$ref": "#/components/securitySchemes/mutualTls"},
            ],
        },
    }


def _security_schemes() -> dict[str, Any]:
    return {
        "saslScram": {
            "type": "scramSha512",
            "description": "SASL/SCRAM-SHA-512 over TLS (SASL_SSL): one user per participant.",
        },
        "mutualTls": {
            "type": "X509",
            "description": "TLS client certificates (SSL): the certificate's subject is the principal.",
        },
    }

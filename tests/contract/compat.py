"""Compatibility rules for the platform's published contracts, as pure functions over plain data.

Three kinds of contract are compared, each an old snapshot against what the code generates now:

* **event JSON Schemas** (``event_changes``): one JSON Schema per event type, as
  ``llmops_events.schemas.event_schemas`` writes it (an envelope whose ``data`` refers to ``$defs``);
* **the AsyncAPI document** (``asyncapi_changes``): topics, the event types each carries, and
  each message's payload schema;
* **protobuf descriptors** (``proto_changes``): ``FileDescriptorProto`` of each ``.proto`` file
  as a dict (``json_format.MessageToDict(..., preserving_proto_field_name=True)``).

Every difference found is either **breaking** (a producer or consumer written against the old
contract can fail against the new one) or **compatible** (an addition: a new event type, a new
optional field, a new message, a new RPC, a looser constraint). What changes nothing on the wire
(titles, descriptions, examples, defaults, comments) is not reported at all.

Events (both producers and consumers of an event are held to its schema):

* breaking: an event type or field removed; a field's JSON type changed (including becoming
  nullable or no longer nullable); a new required field; an optional field made required or a
  required one optional (consumers rely on it being there); a constraint tightened (higher
  minimum, lower maximum, a new or changed ``pattern``/``format``/``const``, enum values
  removed, extra properties forbidden);
* compatible: a new event type; a new optional field; a constraint loosened (enum values added).

Protobuf (the wire format and the JSON mapping both count, so names count as well as numbers):

* breaking: a file, message, enum, service or RPC removed; a field removed, renamed, renumbered,
  or its type, label (``repeated``/``optional``) or ``oneof`` changed; an enum value removed,
  renamed or renumbered; an RPC's request/response type or streaming changed; the package or a
  file option (``go_package``, ...) changed;
* compatible: a new file, message, enum, enum value, field, service or RPC.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

Schema = Mapping[str, Any]

_LOWER_BOUNDS = ("minimum", "exclusiveMinimum", "minLength", "minItems", "minProperties")
_UPPER_BOUNDS = ("maximum", "exclusiveMaximum", "maxLength", "maxItems", "maxProperties")
_EXACT = ("pattern", "format", "multipleOf", "const")


@dataclass
class Changes:
    """What differs between two versions of a contract, each line naming where."""

    breaking: list[str] = field(default_factory=list)
    compatible: list[str] = field(default_factory=list)

    def extend(self, other: Changes) -> None:
        self.breaking.extend(other.breaking)
        self.compatible.extend(other.compatible)

    def report(self, title: str) -> str:
        lines = [title]
        if self.breaking:
            lines.append(f"{len(self.breaking)} breaking change(s):")
            lines.extend(f"  - {line}" for line in self.breaking)
        if self.compatible:
            lines.append(f"{len(self.compatible)} compatible change(s):")
            lines.extend(f"  + {line}" for line in self.compatible)
        return "\n".join(lines)


# --------------------------------------------------------------------------- JSON Schema


def event_changes(old: Mapping[str, Schema], new: Mapping[str, Schema]) -> Changes:
    """Compare the JSON Schemas of every event type (event type -> schema)."""
    changes = Changes()
    for event_type in sorted(old.keys() - new.keys()):
        changes.breaking.append(f"{event_type}: event type removed")
    for event_type in sorted(new.keys() - old.keys()):
        changes.compatible.append(f"{event_type}: new event type")
    for event_type in sorted(old.keys() & new.keys()):
        changes.extend(schema_changes(old[event_type], new[event_type], name=event_type))
    return changes


def schema_changes(old: Schema, new: Schema, *, name: str) -> Changes:
    """Compare two JSON Schemas (each resolving its own local ``$ref`` against its ``$defs``)."""
    changes = Changes()
    _SchemaComparison(old, new, name, changes).compare(old, new, ())
    return changes


class _SchemaComparison:
    def __init__(self, old_root: Schema, new_root: Schema, name: str, changes: Changes) -> None:
        self.old_root, self.new_root, self.name, self.changes = old_root, new_root, name, changes
        self.seen: set[tuple[int, int]] = set()

    def where(self, path: tuple[str, ...]) -> str:
        return f"{self.name}: {'.'.join(path) or '(root)'}"

    def breaking(self, path: tuple[str, ...], what: str) -> None:
        self.changes.breaking.append(f"{self.where(path)}: {what}")

    def compatible(self, path: tuple[str, ...], what: str) -> None:
        self.changes.compatible.append(f"{self.where(path)}: {what}")

    def compare(self, old: Schema, new: Schema, path: tuple[str, ...]) -> None:
        old, new = _resolve(old, self.old_root), _resolve(new, self.new_root)
        key = (id(old), id(new))
        if key in self.seen:  # recursive models
            return
        self.seen.add(key)

        old_types, new_types = _json_types(old, self.old_root), _json_types(new, self.new_root)
        if old_types != new_types:
            self.breaking(path, f"type changed from {_show(old_types)} to {_show(new_types)}")
            return
        self.compare_constraints(old, new, path)
        old_branches, new_branches = _branches(old, self.old_root), _branches(new, self.new_root)
        if len(old_branches) > 1 or len(new_branches) > 1:
            self.compare_unions(old_branches, new_branches, path)
            return
        if "object" in old_types:
            self.compare_objects(old, new, path)
        if "array" in old_types:
            self.compare_arrays(old, new, path)

    def compare_unions(self, old_branches: list[Schema], new_branches: list[Schema], path: tuple[str, ...]) -> None:
        """Pair the branches of ``anyOf``/``oneOf`` by type (and title, for several objects)."""
        new_by_key = {_branch_key(branch, self.new_root): branch for branch in new_branches}
        for branch in old_branches:
            key = _branch_key(branch, self.old_root)
            if key not in new_by_key:
                self.breaking(path, f"union member {key} removed")
            else:
                self.compare(branch, new_by_key[key], path)
        old_keys = {_branch_key(branch, self.old_root) for branch in old_branches}
        for key in sorted(new_by_key.keys() - old_keys):
            self.breaking(path, f"union member {key} added")

    def compare_constraints(self, old: Schema, new: Schema, path: tuple[str, ...]) -> None:
        for keyword in _LOWER_BOUNDS:
            if keyword in new and (keyword not in old or new[keyword] > old[keyword]):
                self.breaking(path, f"{keyword} tightened from {old.get(keyword, 'none')} to {new[keyword]}")
            elif keyword in old and (keyword not in new or new[keyword] < old[keyword]):
                self.compatible(path, f"{keyword} loosened from {old[keyword]} to {new.get(keyword, 'none')}")
        for keyword in _UPPER_BOUNDS:
            if keyword in new and (keyword not in old or new[keyword] < old[keyword]):
                self.breaking(path, f"{keyword} tightened from {old.get(keyword, 'none')} to {new[keyword]}")
            elif keyword in old and (keyword not in new or new[keyword] > old[keyword]):
                self.compatible(path, f"{keyword} loosened from {old[keyword]} to {new.get(keyword, 'none')}")
        for keyword in _EXACT:
            if keyword in new and new.get(keyword) != old.get(keyword):
                was = json.dumps(old[keyword]) if keyword in old else "none"
                self.breaking(path, f"{keyword} changed from {was} to {json.dumps(new[keyword])}")
            elif keyword in old and keyword not in new:
                self.compatible(path, f"{keyword} {json.dumps(old[keyword])} dropped")
        if "enum" in old or "enum" in new:
            old_values, new_values = old.get("enum"), new.get("enum")
            if new_values is None:
                self.compatible(path, "no longer restricted to an enum")
            elif old_values is None:
                self.breaking(path, f"now restricted to the enum {json.dumps(new_values)}")
            else:
                removed = [value for value in old_values if value not in new_values]
                added = [value for value in new_values if value not in old_values]
                if removed:
                    self.breaking(path, f"enum value(s) removed: {json.dumps(removed)}")
                if added:
                    self.compatible(path, f"enum value(s) added: {json.dumps(added)}")

    def compare_objects(self, old: Schema, new: Schema, path: tuple[str, ...]) -> None:
        old_props: Mapping[str, Schema] = old.get("properties", {})
        new_props: Mapping[str, Schema] = new.get("properties", {})
        old_required, new_required = set(old.get("required", ())), set(new.get("required", ()))
        for prop in old_props:
            if prop not in new_props:
                self.breaking((*path, prop), "field removed")
                continue
            if prop in new_required and prop not in old_required:
                self.breaking((*path, prop), "optional field made required")
            elif prop in old_required and prop not in new_required:
                self.breaking((*path, prop), "required field made optional (consumers rely on it)")
            self.compare(old_props[prop], new_props[prop], (*path, prop))
        for prop in new_props:
            if prop in old_props:
                continue
            if prop in new_required:
                self.breaking((*path, prop), "new required field (producers of the old schema omit it)")
            else:
                self.compatible((*path, prop), "new optional field")

        old_extra, new_extra = old.get("additionalProperties", True), new.get("additionalProperties", True)
        if new_extra is False and old_extra is not False:
            self.breaking(path, "additional properties no longer allowed")
        elif old_extra is False and new_extra is not False:
            self.compatible(path, "additional properties now allowed")
        elif isinstance(old_extra, Mapping) and isinstance(new_extra, Mapping):
            self.compare(old_extra, new_extra, (*path, "{value}"))
        elif old_extra in (True, {}) and isinstance(new_extra, Mapping) and new_extra:
            self.breaking(path, "values of additional properties now restricted")

    def compare_arrays(self, old: Schema, new: Schema, path: tuple[str, ...]) -> None:
        old_items, new_items = old.get("items"), new.get("items")
        if isinstance(old_items, Mapping) and isinstance(new_items, Mapping):
            self.compare(old_items, new_items, (*path, "[]"))
        elif isinstance(new_items, Mapping) and new_items and not old_items:
            self.breaking((*path, "[]"), "items now restricted")
        old_tuple, new_tuple = old.get("prefixItems", []), new.get("prefixItems", [])
        if len(old_tuple) != len(new_tuple):
            self.breaking(path, f"tuple length changed from {len(old_tuple)} to {len(new_tuple)}")
        for index, (old_item, new_item) in enumerate(zip(old_tuple, new_tuple, strict=False)):
            self.compare(old_item, new_item, (*path, f"[{index}]"))


def _resolve(schema: Schema, root: Schema) -> Schema:
    """Follow local ``$ref``s (``#/$defs/Name``) to the schema they name."""
    hops = 0
    while "$ref" in schema:
        ref = schema["$ref"]
        if not isinstance(ref, str) or not ref.startswith("#/"):
            raise ValueError(f"only local $refs are supported, got {ref!r}")
        target: Any = root
        for part in ref[2:].split("/"):
            target = target[part.replace("~1", "/").replace("~0", "~")]
        # Keywords beside the $ref (2020-12 allows them) apply too; keep them on top.
        siblings = {key: value for key, value in schema.items() if key != "$ref"}
        schema = {**target, **siblings} if siblings else target
        hops += 1
        if hops > 64:
            raise ValueError(f"$ref cycle at {ref!r}")
    return schema


def _branches(schema: Schema, root: Schema) -> list[Schema]:
    """The members of a union (``anyOf``/``oneOf``, flattened), or the schema itself."""
    members = schema.get("anyOf") or schema.get("oneOf")
    if not members:
        return [schema]
    flat: list[Schema] = []
    for member in members:
        flat.extend(_branches(_resolve(member, root), root))
    return flat


def _json_types(schema: Schema, root: Schema) -> frozenset[str]:
    """The JSON types a schema admits (``any`` when it does not say)."""
    members = _branches(schema, root)
    if len(members) > 1:
        return frozenset().union(*(_json_types(member, root) for member in members))
    (schema,) = members
    declared = schema.get("type")
    if isinstance(declared, str):
        return frozenset({declared})
    if isinstance(declared, list):
        return frozenset(declared)
    if "const" in schema:
        return frozenset({_type_of(schema["const"])})
    if "enum" in schema:
        return frozenset(_type_of(value) for value in schema["enum"])
    if "properties" in schema:
        return frozenset({"object"})
    if "items" in schema or "prefixItems" in schema:
        return frozenset({"array"})
    return frozenset({"any"})


def _branch_key(schema: Schema, root: Schema) -> str:
    resolved = _resolve(schema, root)
    types = _show(_json_types(resolved, root))
    return f"{types} {resolved['title']}" if types == "object" and "title" in resolved else types


def _type_of(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    return "array" if isinstance(value, list) else "object"


def _show(types: Iterable[str]) -> str:
    return "|".join(sorted(types))


# --------------------------------------------------------------------------- AsyncAPI


def asyncapi_changes(old: Mapping[str, Any], new: Mapping[str, Any]) -> Changes:
    """Compare two AsyncAPI 3.0 documents: topics, their event types, and payload schemas."""
    changes = Changes()
    old_channels = {c["address"]: c for c in old.get("channels", {}).values()}
    new_channels = {c["address"]: c for c in new.get("channels", {}).values()}
    for address in sorted(old_channels.keys() - new_channels.keys()):
        changes.breaking.append(f"topic {address}: removed")
    for address in sorted(new_channels.keys() - old_channels.keys()):
        changes.compatible.append(f"topic {address}: new topic")
    for address in sorted(old_channels.keys() & new_channels.keys()):
        old_names = _channel_message_names(old, old_channels[address])
        new_names = _channel_message_names(new, new_channels[address])
        for event_type in sorted(old_names - new_names):
            changes.breaking.append(f"topic {address}: no longer carries {event_type}")
        for event_type in sorted(new_names - old_names):
            changes.compatible.append(f"topic {address}: now also carries {event_type}")
        old_key, new_key = _channel_key(old_channels[address]), _channel_key(new_channels[address])
        if old_key != new_key:
            changes.breaking.append(f"topic {address}: key changed from {old_key!r} to {new_key!r}")

    old_messages = _structured_messages(old)
    new_messages = _structured_messages(new)
    for event_type in sorted(old_messages.keys() & new_messages.keys()):
        old_message, new_message = old_messages[event_type], new_messages[event_type]
        if old_message.get("contentType") != new_message.get("contentType"):
            changes.breaking.append(
                f"{event_type}: contentType changed from {old_message.get('contentType')!r}"
                f" to {new_message.get('contentType')!r}"
            )
    old_payloads = {name: _payload(old, message) for name, message in old_messages.items()}
    new_payloads = {name: _payload(new, message) for name, message in new_messages.items()}
    changes.extend(event_changes(old_payloads, new_payloads))
    return changes


def _structured_messages(document: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    """Messages by name, in structured mode: an event's binary-mode message has the same name and
    the envelope's ``data`` as its payload, so comparing the envelope covers both modes."""
    return {
        m["name"]: m
        for m in document.get("components", {}).get("messages", {}).values()
        if m.get("contentType") != "application/json"
    }


def _deref_document(document: Mapping[str, Any], node: Mapping[str, Any]) -> Mapping[str, Any]:
    while "$ref" in node:
        target: Any = document
        for part in node["$ref"][2:].split("/"):
            target = target[part]
        node = target
    return node


def _channel_message_names(document: Mapping[str, Any], channel: Mapping[str, Any]) -> set[str]:
    return {_deref_document(document, message)["name"] for message in channel.get("messages", {}).values()}


def _channel_key(channel: Mapping[str, Any]) -> str:
    """The ``Key: ...`` sentence that ``asyncapi_document`` puts in each channel's description."""
    description = channel.get("description", "")
    return description.rpartition("Key: ")[2].rstrip(".") if "Key: " in description else ""


def _payload(document: Mapping[str, Any], message: Mapping[str, Any]) -> Schema:
    """A message's payload as a self-contained schema: the ``#/components/schemas/...`` it refers
    to, directly or not, become its ``$defs`` (the form of the event schemas and old snapshots)."""
    payload = _deref_document(document, message.get("payload", {}))
    schemas = document.get("components", {}).get("schemas", {})
    prefix = "#/components/schemas/"
    definitions: dict[str, Any] = {}

    def inline(node: Any) -> Any:
        if isinstance(node, Mapping):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith(prefix):
                name = ref.removeprefix(prefix)
                if name not in definitions:
                    definitions[name] = {}  # placeholder first: recursive models
                    definitions[name] = inline(schemas[name])
                return {**{k: inline(v) for k, v in node.items() if k != "$ref"}, "$ref": f"#/$defs/{name}"}
            return {key: inline(value) for key, value in node.items()}
        if isinstance(node, list):
            return [inline(item) for item in node]
        return node

    inlined = inline(payload)
    if definitions:
        inlined["$defs"] = {**inlined.get("$defs", {}), **definitions}
    return inlined


# --------------------------------------------------------------------------- protobuf


def proto_changes(old: Mapping[str, Mapping[str, Any]], new: Mapping[str, Mapping[str, Any]]) -> Changes:
    """Compare ``FileDescriptorProto`` dicts, keyed by file name (``llmops/ops/v1/ops.proto``)."""
    changes = Changes()
    for name in sorted(old.keys() - new.keys()):
        changes.breaking.append(f"{name}: file removed")
    for name in sorted(new.keys() - old.keys()):
        changes.compatible.append(f"{name}: new file")
    for name in sorted(old.keys() & new.keys()):
        _compare_file(old[name], new[name], name, changes)
    return changes


def _compare_file(old: Mapping[str, Any], new: Mapping[str, Any], name: str, changes: Changes) -> None:
    if old.get("package") != new.get("package"):
        changes.breaking.append(f"{name}: package changed from {old.get('package')!r} to {new.get('package')!r}")
    old_options, new_options = old.get("options", {}), new.get("options", {})
    for option in sorted(old_options.keys() | new_options.keys()):
        if old_options.get(option) != new_options.get(option):
            changes.breaking.append(
                f"{name}: file option {option} changed from {old_options.get(option)!r} to {new_options.get(option)!r}"
            )
    scope = old.get("package", "")
    _compare_named(
        old.get("message_type", []), new.get("message_type", []), "message", scope, changes, _compare_message
    )
    _compare_named(old.get("enum_type", []), new.get("enum_type", []), "enum", scope, changes, _compare_enum)
    _compare_named(old.get("service", []), new.get("service", []), "service", scope, changes, _compare_service)


def _compare_named(
    old: list[Mapping[str, Any]],
    new: list[Mapping[str, Any]],
    kind: str,
    scope: str,
    changes: Changes,
    compare: Any,
) -> None:
    old_by_name, new_by_name = {d["name"]: d for d in old}, {d["name"]: d for d in new}
    for name in old_by_name:
        full = f"{scope}.{name}" if scope else name
        if name not in new_by_name:
            changes.breaking.append(f"{kind} {full}: removed")
        else:
            compare(old_by_name[name], new_by_name[name], full, changes)
    for name in new_by_name.keys() - old_by_name.keys():
        changes.compatible.append(f"{kind} {scope}.{name}: new {kind}" if scope else f"{kind} {name}: new {kind}")


def _compare_message(old: Mapping[str, Any], new: Mapping[str, Any], full: str, changes: Changes) -> None:
    old_fields = {f["number"]: f for f in old.get("field", [])}
    new_fields = {f["number"]: f for f in new.get("field", [])}
    new_numbers_by_name = {f["name"]: number for number, f in new_fields.items()}
    for number, old_field in sorted(old_fields.items()):
        where = f"message {full}: field {old_field['name']} = {number}"
        new_field = new_fields.get(number)
        if new_field is None:
            if old_field["name"] in new_numbers_by_name:
                changes.breaking.append(f"{where}: number changed to {new_numbers_by_name[old_field['name']]}")
            else:
                changes.breaking.append(f"{where}: removed")
            continue
        if new_field["name"] != old_field["name"]:
            changes.breaking.append(f"{where}: renamed to {new_field['name']}")
        for attribute in ("type", "type_name", "label", "json_name", "proto3_optional", "oneof_index", "extendee"):
            was, now = old_field.get(attribute), new_field.get(attribute)
            if was != now:
                changes.breaking.append(f"{where}: {attribute} changed from {_proto_show(was)} to {_proto_show(now)}")
    for number, new_field in sorted(new_fields.items()):
        if number not in old_fields and new_field["name"] not in {f["name"] for f in old_fields.values()}:
            changes.compatible.append(f"message {full}: new field {new_field['name']} = {number}")
    _compare_named(old.get("nested_type", []), new.get("nested_type", []), "message", full, changes, _compare_message)
    _compare_named(old.get("enum_type", []), new.get("enum_type", []), "enum", full, changes, _compare_enum)


def _compare_enum(old: Mapping[str, Any], new: Mapping[str, Any], full: str, changes: Changes) -> None:
    old_values = {v["name"]: v.get("number", 0) for v in old.get("value", [])}
    new_values = {v["name"]: v.get("number", 0) for v in new.get("value", [])}
    for name, number in old_values.items():
        if name not in new_values:
            changes.breaking.append(f"enum {full}: value {name} = {number} removed or renamed")
        elif new_values[name] != number:
            changes.breaking.append(f"enum {full}: value {name} renumbered from {number} to {new_values[name]}")
    for name in new_values.keys() - old_values.keys():
        changes.compatible.append(f"enum {full}: new value {name} = {new_values[name]}")


def _compare_service(old: Mapping[str, Any], new: Mapping[str, Any], full: str, changes: Changes) -> None:
    old_methods = {m["name"]: m for m in old.get("method", [])}
    new_methods = {m["name"]: m for m in new.get("method", [])}
    for name, old_method in old_methods.items():
        where = f"service {full}: rpc {name}"
        if name not in new_methods:
            changes.breaking.append(f"{where}: removed or renamed")
            continue
        for attribute in ("input_type", "output_type", "client_streaming", "server_streaming"):
            was, now = old_method.get(attribute), new_methods[name].get(attribute)
            if was != now:
                changes.breaking.append(f"{where}: {attribute} changed from {_proto_show(was)} to {_proto_show(now)}")
    for name in sorted(new_methods.keys() - old_methods.keys()):
        changes.compatible.append(f"service {full}: new rpc {name}")


def _proto_show(value: Any) -> str:
    """``TYPE_STRING`` -> ``string``, ``LABEL_REPEATED`` -> ``repeated``; names stay as they are."""
    if value is None:
        return "unset"
    text = str(value)
    for prefix in ("TYPE_", "LABEL_"):
        if text.startswith(prefix):
            return text.removeprefix(prefix).lower()
    return text

"""The compatibility rules of ``compat.py``, on the platform's real contracts with one change each."""

from __future__ import annotations

import copy
import shutil
from pathlib import Path
from typing import Any

import pytest

from llmops_events.schemas import asyncapi_document, event_schemas

from .artefacts import PROTO_ROOT, by_file_name, proto_descriptor_files
from .compat import Changes, asyncapi_changes, event_changes, proto_changes

EVENT = "llmops.training.requested.v1"


@pytest.fixture(scope="module")
def schemas() -> dict[str, Any]:
    return event_schemas()


def changed(schemas: dict[str, Any], edit: Any) -> Changes:
    """The changes from ``schemas`` to a copy that ``edit`` modified in place."""
    new = copy.deepcopy(schemas)
    edit(new)
    return event_changes(schemas, new)


def data_model(schemas: dict[str, Any]) -> dict[str, Any]:
    """The ``data`` model of ``llmops.training.requested.v1`` (``$defs/TrainingRequested``)."""
    return schemas[EVENT]["$defs"]["TrainingRequested"]


# --------------------------------------------------------------------------- events


def test_unchanged_schemas_have_no_changes(schemas: dict[str, Any]) -> None:
    changes = event_changes(schemas, copy.deepcopy(schemas))
    assert changes == Changes()


def test_changing_a_field_type_of_a_v1_event_is_breaking(schemas: dict[str, Any]) -> None:
    def edit(new: dict[str, Any]) -> None:
        data_model(new)["properties"]["model_name"] = {"type": "integer", "title": "Model Name"}

    changes = changed(schemas, edit)
    assert f"{EVENT}: data.model_name: type changed from string to integer" in changes.breaking


def test_changing_a_nested_nullable_field_type_is_breaking(schemas: dict[str, Any]) -> None:
    def edit(new: dict[str, Any]) -> None:
        new[EVENT]["$defs"]["Hyperparameters"]["properties"]["lora_rank"]["anyOf"][0] = {"type": "string"}

    changes = changed(schemas, edit)
    assert changes.breaking == [
        f"{EVENT}: data.hyperparameters.lora_rank: type changed from integer|null to null|string"
    ]


def test_making_a_field_nullable_is_breaking(schemas: dict[str, Any]) -> None:
    def edit(new: dict[str, Any]) -> None:
        data_model(new)["properties"]["requested_by"] = {"anyOf": [{"type": "string"}, {"type": "null"}]}

    assert changed(schemas, edit).breaking == [f"{EVENT}: data.requested_by: type changed from string to null|string"]


def test_adding_an_optional_field_is_compatible(schemas: dict[str, Any]) -> None:
    def edit(new: dict[str, Any]) -> None:
        data_model(new)["properties"]["priority"] = {"anyOf": [{"type": "integer"}, {"type": "null"}], "default": None}

    changes = changed(schemas, edit)
    assert changes.breaking == []
    assert changes.compatible == [f"{EVENT}: data.priority: new optional field"]


def test_adding_a_required_field_is_breaking(schemas: dict[str, Any]) -> None:
    def edit(new: dict[str, Any]) -> None:
        data_model(new)["properties"]["priority"] = {"type": "integer"}
        data_model(new)["required"].append("priority")

    assert changed(schemas, edit).breaking == [
        f"{EVENT}: data.priority: new required field (producers of the old schema omit it)"
    ]


def test_removing_a_field_is_breaking(schemas: dict[str, Any]) -> None:
    def edit(new: dict[str, Any]) -> None:
        del data_model(new)["properties"]["dataset_id"]

    assert changed(schemas, edit).breaking == [f"{EVENT}: data.dataset_id: field removed"]


def test_making_an_optional_field_required_is_breaking(schemas: dict[str, Any]) -> None:
    def edit(new: dict[str, Any]) -> None:
        data_model(new)["required"].append("dataset_id")

    assert changed(schemas, edit).breaking == [f"{EVENT}: data.dataset_id: optional field made required"]


def test_removing_an_enum_value_is_breaking_and_adding_one_is_compatible(schemas: dict[str, Any]) -> None:
    def edit(new: dict[str, Any]) -> None:
        reasons = new[EVENT]["$defs"]["TrainingReason"]["enum"]
        reasons.remove("schedule")
        reasons.append("audit")

    changes = changed(schemas, edit)
    assert changes.breaking == [f'{EVENT}: data.reason: enum value(s) removed: ["schedule"]']
    assert changes.compatible == [f'{EVENT}: data.reason: enum value(s) added: ["audit"]']


def test_tightening_a_constraint_is_breaking_and_loosening_is_compatible(schemas: dict[str, Any]) -> None:
    def tighten(new: dict[str, Any]) -> None:
        data_model(new)["properties"]["model_name"]["maxLength"] = 64

    def loosen(new: dict[str, Any]) -> None:
        data_model(new)["properties"]["model_name"]["maxLength"] = 256

    assert changed(schemas, tighten).breaking == [f"{EVENT}: data.model_name: maxLength tightened from 128 to 64"]
    loosened = changed(schemas, loosen)
    assert loosened.breaking == []
    assert loosened.compatible == [f"{EVENT}: data.model_name: maxLength loosened from 128 to 256"]


def test_documentation_changes_are_not_contract_changes(schemas: dict[str, Any]) -> None:
    def edit(new: dict[str, Any]) -> None:
        data_model(new)["properties"]["model_name"]["description"] = "Reworded."
        data_model(new)["properties"]["model_name"]["examples"] = ["other"]
        new[EVENT]["description"] = "Reworded."

    assert changed(schemas, edit) == Changes()


def test_a_new_event_type_is_compatible_and_a_removed_one_breaking(schemas: dict[str, Any]) -> None:
    def edit(new: dict[str, Any]) -> None:
        new["llmops.training.cancelled.v1"] = copy.deepcopy(new[EVENT])
        del new["llmops.feedback.submitted.v1"]

    changes = changed(schemas, edit)
    assert changes.breaking == ["llmops.feedback.submitted.v1: event type removed"]
    assert changes.compatible == ["llmops.training.cancelled.v1: new event type"]


def test_envelope_changes_are_checked_too(schemas: dict[str, Any]) -> None:
    def edit(new: dict[str, Any]) -> None:
        new[EVENT]["properties"]["specversion"]["const"] = "2.0"

    assert changed(schemas, edit).breaking == [f'{EVENT}: specversion: const changed from "1.0" to "2.0"']


# --------------------------------------------------------------------------- AsyncAPI


def test_asyncapi_message_removed_from_topic_and_payload_change_are_breaking() -> None:
    old = asyncapi_document()
    new = copy.deepcopy(old)
    for mode in ("", "_binary"):  # the event in neither content mode
        del new["channels"]["llmops_feedback_v1"]["messages"][f"llmops_feedback_submitted_v1{mode}"]
    new["components"]["schemas"]["TrainingRequested"]["properties"]["model_name"]["type"] = "integer"

    changes = asyncapi_changes(old, new)
    assert changes.breaking == [
        "topic llmops.feedback.v1: no longer carries llmops.feedback.submitted.v1",
        f"{EVENT}: data.model_name: type changed from string to integer",
    ]
    assert asyncapi_changes(old, copy.deepcopy(old)) == Changes()


# --------------------------------------------------------------------------- protobuf

INFERENCE = "llmops/inference/v1/inference.proto"
OPS = "llmops/ops/v1/ops.proto"


@pytest.fixture(scope="module")
def descriptors() -> dict[str, Any]:
    return by_file_name(proto_descriptor_files(PROTO_ROOT))


def edited_protos(tmp_path: Path, file: str, old: str, new: str) -> dict[str, Any]:
    """The descriptors of a copy of ``proto/`` in which ``file`` had ``old`` replaced by ``new``."""
    root = tmp_path / "proto"
    shutil.copytree(PROTO_ROOT, root)
    source = (root / file).read_text()
    assert old in source, f"{old!r} is not in {file}"
    (root / file).write_text(source.replace(old, new, 1))
    return by_file_name(proto_descriptor_files(root))


def test_unchanged_protos_have_no_changes(descriptors: dict[str, Any], tmp_path: Path) -> None:
    assert proto_changes(descriptors, edited_protos(tmp_path, OPS, "// Empty", "// Empty")) == Changes()


def test_changing_a_proto_field_type_is_breaking(descriptors: dict[str, Any], tmp_path: Path) -> None:
    new = edited_protos(tmp_path, INFERENCE, "float confidence = 2;", "double confidence = 2;")
    assert proto_changes(descriptors, new).breaking == [
        "message llmops.inference.v1.PredictResponse: field confidence = 2: type changed from float to double"
    ]


def test_changing_a_map_value_type_is_breaking(descriptors: dict[str, Any], tmp_path: Path) -> None:
    new = edited_protos(tmp_path, INFERENCE, "map<string, float> scores", "map<string, string> scores")
    assert proto_changes(descriptors, new).breaking == [
        "message llmops.inference.v1.PredictResponse.ScoresEntry: field value = 2: type changed from float to string"
    ]


def test_renumbering_renaming_or_removing_a_proto_field_is_breaking(
    descriptors: dict[str, Any], tmp_path: Path
) -> None:
    renumbered = edited_protos(tmp_path / "a", OPS, "string state = 6;", "string state = 7;")
    renamed = edited_protos(tmp_path / "b", OPS, "string state = 6;", "string phase = 6;")
    removed = edited_protos(tmp_path / "c", OPS, "string state = 6;", "")
    assert proto_changes(descriptors, renumbered).breaking == [
        "message llmops.ops.v1.ModelStatus: field state = 6: number changed to 7"
    ]
    assert proto_changes(descriptors, renamed).breaking == [
        "message llmops.ops.v1.ModelStatus: field state = 6: renamed to phase",
        "message llmops.ops.v1.ModelStatus: field state = 6: json_name changed from state to phase",
    ]
    assert proto_changes(descriptors, removed).breaking == [
        "message llmops.ops.v1.ModelStatus: field state = 6: removed"
    ]


def test_making_a_proto_field_repeated_is_breaking(descriptors: dict[str, Any], tmp_path: Path) -> None:
    new = edited_protos(tmp_path, OPS, "string state = 6;", "repeated string state = 6;")
    assert proto_changes(descriptors, new).breaking == [
        "message llmops.ops.v1.ModelStatus: field state = 6: label changed from optional to repeated"
    ]


def test_a_new_rpc_message_and_field_are_compatible(descriptors: dict[str, Any], tmp_path: Path) -> None:
    new = edited_protos(
        tmp_path,
        OPS,
        "  string state = 6;\n}",
        "  string state = 6;\n  string note = 7;\n}\n\nmessage PauseRequest {\n  string model = 1;\n}",
    )
    root = tmp_path / "proto"
    source = (root / OPS).read_text()
    (root / OPS).write_text(
        source.replace(
            "  rpc Rollback(RollbackRequest) returns (RollbackResponse);",
            "  rpc Rollback(RollbackRequest) returns (RollbackResponse);\n"
            "  rpc Pause(PauseRequest) returns (PromoteResponse);",
        )
    )
    new = by_file_name(proto_descriptor_files(root))

    changes = proto_changes(descriptors, new)
    assert changes.breaking == []
    assert sorted(changes.compatible) == [
        "message llmops.ops.v1.ModelStatus: new field note = 7",
        "message llmops.ops.v1.PauseRequest: new message",
        "service llmops.ops.v1.OpsService: new rpc Pause",
    ]


def test_removing_renaming_or_retyping_an_rpc_is_breaking(descriptors: dict[str, Any], tmp_path: Path) -> None:
    renamed = edited_protos(tmp_path / "a", OPS, "rpc Rollback(", "rpc RollBack(")
    retyped = edited_protos(tmp_path / "b", OPS, "returns (RollbackResponse)", "returns (PromoteResponse)")
    assert proto_changes(descriptors, renamed).breaking == [
        "service llmops.ops.v1.OpsService: rpc Rollback: removed or renamed"
    ]
    assert proto_changes(descriptors, retyped).breaking == [
        "service llmops.ops.v1.OpsService: rpc Rollback: output_type changed from"
        " .llmops.ops.v1.RollbackResponse to .llmops.ops.v1.PromoteResponse"
    ]


def test_removing_a_message_is_breaking(descriptors: dict[str, Any]) -> None:
    new = copy.deepcopy(descriptors)
    new[INFERENCE]["message_type"] = [m for m in new[INFERENCE]["message_type"] if m["name"] != "PredictBatchResponse"]
    assert "message llmops.inference.v1.PredictBatchResponse: removed" in proto_changes(descriptors, new).breaking

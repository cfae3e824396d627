"""Contracts cannot break silently: every published contract is compared with its committed
snapshot under ``tests/contract/snapshots/`` by the rules of ``tests/contract/compat.py``.

* ``events/<event type>.json``: the JSON Schema of each event (``llmops_events.schemas.event_schemas``);
* ``asyncapi.json``: the AsyncAPI document (``llmops_events.schemas.asyncapi_document``);
* ``proto/<file>.proto.json``: the ``FileDescriptorProto`` of each file under ``proto/``, compiled
  afresh by protoc (the same compiler ``llmops generate`` uses for ``gen/python``);
* ``proto.binpb``: the same protos as a buf image, the baseline of ``buf breaking`` in ``make lint``.

A breaking change fails, naming the event type or message and the field. A compatible change
(a new event type, optional field, message or RPC) passes with a ``ContractSnapshotOutdated``
warning asking for a refresh, so that the addition is protected from then on. A deliberate
refresh (after a breaking change that is meant, e.g. in a new ``v2``):

    LLMOPS_UPDATE_SNAPSHOTS=1 .venv/bin/pytest tests/contract
"""

from __future__ import annotations

import json
import os
import subprocess
import warnings
from pathlib import Path
from typing import Any

import pytest
from google.protobuf import descriptor_pb2

from llmops_events.schemas import asyncapi_document

from .artefacts import (
    PROTO_ROOT,
    REPO,
    by_event_type,
    by_file_name,
    descriptor_dict,
    dump,
    event_schema_files,
    proto_descriptor_files,
)
from .compat import Changes, asyncapi_changes, event_changes, proto_changes

SNAPSHOTS = Path(__file__).resolve().parent / "snapshots"
BUF = REPO / "build" / "go" / "bin" / "buf"
UPDATE = os.environ.get("LLMOPS_UPDATE_SNAPSHOTS", "") not in ("", "0")
REFRESH = "LLMOPS_UPDATE_SNAPSHOTS=1 .venv/bin/pytest tests/contract"


class ContractSnapshotOutdated(UserWarning):
    """The contract changed compatibly; its snapshot should be refreshed and committed."""


def write_tree(folder: Path, documents: dict[str, Any]) -> None:
    """Write ``documents`` (relative path -> JSON) under ``folder``, removing stale files."""
    for stale in folder.rglob("*.json") if folder.exists() else ():
        if stale.relative_to(folder).as_posix() not in documents:
            stale.unlink()
    for relative, document in documents.items():
        path = folder / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(dump(document))


def read_tree(folder: Path) -> dict[str, Any]:
    if not folder.is_dir() or not any(folder.rglob("*.json")):
        pytest.fail(f"no snapshot under {folder.relative_to(REPO)}; create it with: {REFRESH}")
    return {path.relative_to(folder).as_posix(): json.loads(path.read_text()) for path in folder.rglob("*.json")}


def check(title: str, changes: Changes, snapshot: Any, current: Any) -> None:
    """Fail on breaking changes; warn when the snapshot is behind in any other way."""
    if changes.breaking:
        pytest.fail(
            changes.report(f"{title}: incompatible with the committed snapshot.")
            + "\n\nKeep the old contract (add a new optional field or a new versioned type instead),"
            + f" or, if the break is deliberate, refresh the snapshots: {REFRESH}",
            pytrace=False,
        )
    if changes.compatible:
        warnings.warn(
            ContractSnapshotOutdated(changes.report(f"{title}: compatible changes; refresh: {REFRESH}")),
            stacklevel=2,
        )
    elif dump(snapshot) != dump(current):
        warnings.warn(
            ContractSnapshotOutdated(f"{title}: differs in descriptions/titles only; refresh: {REFRESH}"),
            stacklevel=2,
        )


# --------------------------------------------------------------------------- the tests


def test_event_schemas_are_compatible_with_their_snapshot() -> None:
    current = event_schema_files()
    if UPDATE:
        write_tree(SNAPSHOTS / "events", current)
        return
    snapshot = read_tree(SNAPSHOTS / "events")
    check("event JSON Schemas", event_changes(by_event_type(snapshot), by_event_type(current)), snapshot, current)


def test_asyncapi_document_is_compatible_with_its_snapshot() -> None:
    current = asyncapi_document()
    path = SNAPSHOTS / "asyncapi.json"
    if UPDATE:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(dump(current))
        return
    if not path.exists():
        pytest.fail(f"no snapshot {path.relative_to(REPO)}; create it with: {REFRESH}")
    snapshot = json.loads(path.read_text())
    check("AsyncAPI document", asyncapi_changes(snapshot, current), snapshot, current)


def test_proto_descriptors_are_compatible_with_their_snapshot() -> None:
    current = proto_descriptor_files(PROTO_ROOT)
    if UPDATE:
        write_tree(SNAPSHOTS / "proto", current)
        build_buf_image(SNAPSHOTS / "proto.binpb")
        return
    snapshot = read_tree(SNAPSHOTS / "proto")
    check("protobuf descriptors", proto_changes(by_file_name(snapshot), by_file_name(current)), snapshot, current)


def build_buf_image(out: Path) -> None:
    if not BUF.exists():
        pytest.fail(f"{BUF.relative_to(REPO)} is missing (make setup installs it); cannot refresh {out.name}")
    subprocess.run(
        [str(BUF), "build", str(PROTO_ROOT), "--exclude-source-info", "-o", str(out)],
        cwd=REPO,
        check=True,
    )


def test_buf_image_snapshot_matches_the_descriptor_snapshots() -> None:
    """``proto.binpb`` (baseline of ``buf breaking``) and ``proto/*.json`` are refreshed together."""
    if UPDATE:
        pytest.skip("refreshing")
    image = SNAPSHOTS / "proto.binpb"
    if not image.exists():
        pytest.fail(f"no snapshot {image.relative_to(REPO)}; create it with: {REFRESH}")
    # A buf image is wire-compatible with a FileDescriptorSet (buf's own extension field aside).
    files = descriptor_pb2.FileDescriptorSet.FromString(image.read_bytes()).file
    from_image = {file.name: descriptor_dict(file) for file in files if not file.name.startswith("google/")}
    from_json = by_file_name(read_tree(SNAPSHOTS / "proto"))
    changes = proto_changes(from_json, from_image)
    changes.extend(proto_changes(from_image, from_json))
    assert not changes.breaking and not changes.compatible, changes.report(
        f"proto.binpb and snapshots/proto/*.json disagree; refresh both with: {REFRESH}"
    )

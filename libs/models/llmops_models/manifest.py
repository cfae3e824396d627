"""Manifests: a sha256 for every file of an artifact folder, and the check that nothing changed."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

from llmops_models.layout import MANIFEST_FILE, OPTIMIZED_FILE

EXCLUDED_FROM_MANIFEST = frozenset({MANIFEST_FILE, "_COMPLETE"})
OPTIMIZED_KEYS = ("format", "runtime", "file", "sha256", "quantization", "float_file", "float_sha256", "opset")


class ManifestMismatch(Exception):
    """An artifact folder whose files are not the ones its manifest names (or no readable manifest)."""

    def __init__(self, detail: str, *, files: tuple[str, ...] = ()) -> None:
        super().__init__(detail)
        self.detail = detail
        self.files = files


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return f"sha256:{digest.hexdigest()}"


def hash_folder(folder: Path) -> dict[str, str]:
    """Relative ``/``-path → sha256 of every file below ``folder``, manifest excluded, sorted."""
    return {
        path.relative_to(folder).as_posix(): sha256_file(path)
        for path in sorted(folder.rglob("*"))
        if path.is_file() and path.name not in EXCLUDED_FROM_MANIFEST
    }


def combined_hash(file_hashes: Mapping[str, str]) -> str:
    """One hash over named file hashes (e.g. a base model's weight files)."""
    digest = hashlib.sha256()
    for name, value in sorted(file_hashes.items()):
        digest.update(f"{name}\0{value}\n".encode())
    return f"sha256:{digest.hexdigest()}"


def build_manifest(
    *,
    model_name: str,
    version: int,
    kind: str,
    files: Mapping[str, str],
    lineage: Mapping[str, Any],
    metrics: Mapping[str, float],
    created_at: datetime,
) -> dict[str, Any]:
    return {
        "model_name": model_name,
        "version": version,
        "kind": kind,
        "request_id": lineage.get("request_id"),
        "created_at": created_at.isoformat(),
        "files": dict(sorted(files.items())),
        "metrics": dict(metrics),
        "lineage": dict(lineage),
    }


def write_manifest(folder: Path, manifest: Mapping[str, Any]) -> Path:
    """Write ``manifest.json``; a folder holding an optimized export (``optimized.json``) has it
    named in the manifest's ``optimized`` key too (its format, the file that serves and its sha256,
    the float twin), so what serves is read from the manifest, not guessed from the files."""
    path = folder / MANIFEST_FILE
    content = dict(manifest)
    optimized = folder / OPTIMIZED_FILE
    if optimized.is_file():
        described = json.loads(optimized.read_text())
        content["optimized"] = {key: described[key] for key in OPTIMIZED_KEYS if key in described}
    path.write_text(json.dumps(content, indent=2, sort_keys=True))
    return path


def read_manifest(folder: Path) -> dict[str, Any]:
    try:
        manifest = json.loads((folder / MANIFEST_FILE).read_text())
        dict(manifest["files"])
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise ManifestMismatch(f"manifest of {folder} is unreadable: {error}") from error
    return dict(manifest)


def verify_folder(folder: Path) -> dict[str, Any]:
    """The folder's manifest when every file hashes as it says, else ``ManifestMismatch`` naming
    the files missing, added or changed since the manifest was written."""
    manifest = read_manifest(folder)
    expected = dict(manifest["files"])
    actual = hash_folder(folder)
    mismatched = tuple(
        sorted(name for name in expected.keys() | actual.keys() if expected.get(name) != actual.get(name))
    )
    if mismatched:
        raise ManifestMismatch(f"files missing or changed since training: {', '.join(mismatched)}", files=mismatched)
    return manifest

"""The artifact store: model versions, dataset snapshots and reports, over fsspec.

Local folders under ``var/`` by default; ``s3://bucket/prefix`` (with the ``s3`` extra) or any
other fsspec URI by configuration. A folder is *published* by writing a ``_COMPLETE`` marker
last: readers ignore folders without it, so a crash mid-write never exposes half a version,
on object stores as on local disks.

Every path is checked to stay below the root (``PathOutsideRoot``): a relative path with ``..``,
an absolute one or a symlink out of the root is refused before anything is read or written.
"""

from __future__ import annotations

import json
import posixpath
import uuid
from pathlib import Path
from typing import Any

import fsspec
from fsspec.core import url_to_fs

from llmops_storage.paths import PathOutsideRoot, inside_posix

COMPLETE_MARKER = "_COMPLETE"


class ArtifactStore:
    """Reads and writes artifacts below one root URI; paths are relative, ``/``-separated."""

    def __init__(self, root_uri: str) -> None:
        self._fs, root = url_to_fs(root_uri)
        self._protocol = root_uri.split("://", 1)[0] if "://" in root_uri else "file"
        self._root = root.rstrip("/")
        if self._protocol == "file":
            Path(self._root).mkdir(parents=True, exist_ok=True)

    @property
    def root_uri(self) -> str:
        return self.uri(".")

    def uri(self, path: str) -> str:
        """The full URI of a relative path, as published in events."""
        full = self._full(path)
        return full if self._protocol == "file" else f"{self._protocol}://{full}"

    def _full(self, path: str) -> str:
        """``root/path``, normalised; ``PathOutsideRoot`` unless it is the root or below it
        (locally after resolving symlinks too: ``resolve()`` + ``is_relative_to``)."""
        if self._protocol != "file":
            return inside_posix(self._root, path)
        full = posixpath.normpath(posixpath.join(self._root, path))
        root, resolved = Path(self._root).resolve(), Path(full).resolve()
        if resolved != root and not resolved.is_relative_to(root):
            raise PathOutsideRoot(self._root, resolved, (path,))
        return full

    def write_bytes(self, path: str, data: bytes) -> str:
        full = self._full(path)
        self._fs.makedirs(posixpath.dirname(full), exist_ok=True)
        with self._fs.open(full, "wb") as handle:
            handle.write(data)
        return self.uri(path)

    def read_bytes(self, path: str) -> bytes:
        with self._fs.open(self._full(path), "rb") as handle:
            return bytes(handle.read())

    def write_json(self, path: str, value: Any) -> str:
        return self.write_bytes(path, json.dumps(value, indent=2, sort_keys=True, default=str).encode())

    def read_json(self, path: str) -> Any:
        return json.loads(self.read_bytes(path))

    def exists(self, path: str) -> bool:
        return bool(self._fs.exists(self._full(path)))

    def list(self, path: str = ".") -> list[str]:
        """Names directly below ``path`` (empty when it does not exist)."""
        full = self._full(path)
        if not self._fs.exists(full):
            return []
        return sorted(posixpath.basename(entry.rstrip("/")) for entry in self._fs.ls(full, detail=False))

    def publish_folder(self, local_folder: Path, path: str) -> str:
        """Copy a finished local folder to ``path`` and make it visible in one step.

        Locally the copy goes to a hidden sibling that is renamed into place; on object
        stores the ``_COMPLETE`` marker, written last, is what makes it visible.
        """
        if self.is_complete(path):
            raise FileExistsError(f"{self.uri(path)} is already published; artifacts are immutable")
        target = self._full(path)
        staging = posixpath.join(posixpath.dirname(target), f".staging-{uuid.uuid4().hex}")
        self._fs.makedirs(posixpath.dirname(target), exist_ok=True)
        self._fs.put(str(local_folder).rstrip("/") + "/", staging, recursive=True)
        with self._fs.open(posixpath.join(staging, COMPLETE_MARKER), "wb") as handle:
            handle.write(b"")
        if self._fs.exists(target):  # a half-written leftover of a crashed attempt
            self._fs.rm(target, recursive=True)
        self._fs.mv(staging, target, recursive=True)
        return self.uri(path)

    def is_complete(self, path: str) -> bool:
        return self.exists(posixpath.join(path, COMPLETE_MARKER))

    def download_folder(self, path: str, local_folder: Path) -> Path:
        if not self.is_complete(path):
            raise FileNotFoundError(f"{self.uri(path)} is missing or was never completely written")
        local_folder.mkdir(parents=True, exist_ok=True)
        self._fs.get(self._full(path).rstrip("/") + "/", str(local_folder), recursive=True)
        return local_folder


def open_store(uri: str) -> ArtifactStore:
    """The artifact store at ``uri`` (a local path or any fsspec URI)."""
    fsspec.get_filesystem_class(uri.split("://", 1)[0] if "://" in uri else "file")  # fail early on unknown schemes
    return ArtifactStore(uri)

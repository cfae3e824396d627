"""Paths built from names must stay below their root.

Names are checked where they enter (``llmops_events.names`` at the event boundary, the ops API),
but a folder that deletes or overwrites what it is given must not rely on every caller having
checked: each place that joins a name into a path asks :func:`inside` (or the artifact store's
own check), which resolves the result (``..``, symlinks) and refuses anything outside the root.
"""

from __future__ import annotations

import posixpath
from pathlib import Path


class PathOutsideRoot(ValueError):
    """A path made of names that resolves outside the folder it must stay in."""

    def __init__(self, root: str | Path, path: str | Path, parts: tuple[str, ...] = ()) -> None:
        shown = ", ".join(repr(part)[:80] for part in parts) or repr(str(path))[:200]
        super().__init__(f"refused: {shown} resolves to {str(path)[:200]!r}, outside {str(root)!r}")
        self.root = str(root)
        self.path = str(path)


def inside(root: Path, *parts: str) -> Path:
    """``root / part / ...``, refused (``PathOutsideRoot``) unless it resolves below ``root``
    itself (not ``root``: a name always names something *in* the folder)."""
    base = root.resolve()
    target = root.joinpath(*parts)
    resolved = target.resolve()
    if resolved == base or not resolved.is_relative_to(base):
        raise PathOutsideRoot(root, resolved, parts)
    return target


def inside_posix(root: str, path: str) -> str:
    """The normalised ``root/path`` of an object store (no symlinks to follow: ``..`` is all
    there is to resolve), refused unless it is ``root`` or below it."""
    full = posixpath.normpath(posixpath.join(root, path))
    base = posixpath.normpath(root) if root else ""
    if base in ("", "."):
        if full == ".." or full.startswith("../") or posixpath.isabs(path):
            raise PathOutsideRoot(root, full, (path,))
        return full
    if full != base and not full.startswith(base.rstrip("/") + "/"):
        raise PathOutsideRoot(root, full, (path,))
    return full

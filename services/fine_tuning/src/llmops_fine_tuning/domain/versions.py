"""Model versions: 1, 2, 3... per model name, never reused."""

from __future__ import annotations

from collections.abc import Iterable


def next_version(published: Iterable[str]) -> int:
    """One more than the highest published version folder name; names that are not integers
    (staging folders of a crashed write, stray files) do not count."""
    versions = [int(name) for name in published if name.isdigit()]
    return max(versions, default=0) + 1

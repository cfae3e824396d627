"""Which code trained a model: the git commit when running from a checkout, else the package version."""

from __future__ import annotations

import subprocess
from functools import cache
from importlib import metadata
from pathlib import Path


@cache
def code_version() -> str:
    here = Path(__file__).resolve().parent
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=here,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
        return f"git:{commit}" + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        try:
            return f"llmops=={metadata.version('llmops')}"
        except metadata.PackageNotFoundError:
            return "unknown"

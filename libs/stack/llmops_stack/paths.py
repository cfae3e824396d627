"""Where the repository's build outputs live: Kafka jars, the Triton backend folder, Triton's venv.

Runtime state (pid files, logs, broker data, model repository) is *not* here: it lives under
``PlatformSettings.var_dir``. This module only knows the checkout and what ``make setup`` built in it.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass
from pathlib import Path

PROJECT_NAME = "llmops"
HOME_ENV = "LLMOPS_HOME"
TRITON_VENV_ENV = "LLMOPS_TRITON_VENV"


class RepositoryNotFoundError(RuntimeError):
    """The llmops checkout could not be located."""


@dataclass(frozen=True, slots=True)
class RepoPaths:
    """Paths inside one llmops checkout."""

    root: Path
    triton_venv: Path

    @property
    def build_dir(self) -> Path:
        return self.root / "build"

    @property
    def kafka_pom(self) -> Path:
        return self.root / "deploy" / "kafka" / "pom.xml"

    @property
    def kafka_log4j_config(self) -> Path:
        return self.root / "deploy" / "kafka" / "log4j2.properties"

    @property
    def kafka_libs_dir(self) -> Path:
        """The broker's jars, copied from Maven Central by ``mvn dependency:copy-dependencies``."""
        return self.build_dir / "kafka" / "libs"

    @property
    def triton_backend_dir(self) -> Path:
        """Triton's ``--backend-directory`` (holds ``python/``, a folder of symlinks into the wheel)."""
        return self.build_dir / "triton" / "backends"


def _is_llmops_root(folder: Path) -> bool:
    pyproject = folder / "pyproject.toml"
    if not pyproject.is_file():
        return False
    try:
        data = tomllib.loads(pyproject.read_text())
    except (OSError, tomllib.TOMLDecodeError):
        return False
    return bool(data.get("project", {}).get("name") == PROJECT_NAME)


def find_repo_root(start: Path | None = None) -> Path:
    """The checkout's root: ``$LLMOPS_HOME``, else the nearest folder above ``start`` (default: cwd)
    whose ``pyproject.toml`` names the ``llmops`` project, else the checkout this module lives in."""
    if home := os.environ.get(HOME_ENV):
        root = Path(home).expanduser().resolve()
        if not _is_llmops_root(root):
            raise RepositoryNotFoundError(f"{HOME_ENV}={home} is not an llmops checkout (no pyproject.toml naming it)")
        return root
    here = (start or Path.cwd()).resolve()
    # The module's own checkout is the fallback, so the CLI also works when run from elsewhere.
    for candidate in (here, *here.parents, *Path(__file__).resolve().parents):
        if _is_llmops_root(candidate):
            return candidate
    raise RepositoryNotFoundError(
        f"no llmops checkout above {here}: run from the repository or set {HOME_ENV}=/path/to/checkout"
    )


def repo_paths(start: Path | None = None) -> RepoPaths:
    """Paths of the checkout found by :func:`find_repo_root`; ``$LLMOPS_TRITON_VENV`` overrides Triton's venv."""
    root = find_repo_root(start)
    venv = os.environ.get(TRITON_VENV_ENV)
    triton_venv = Path(venv).expanduser().resolve() if venv else root / ".venv-triton"
    return RepoPaths(root=root, triton_venv=triton_venv)

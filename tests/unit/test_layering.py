"""The repository's layers, checked on the source (``ast``, nothing imported):

* ``libs/``: libraries. They import no service package and not the CLI.
* ``services/<name>/`` (code, tests, benchmarks): import their own package and libraries only,
  never another service's package, never the CLI.
* ``tools/`` (the ``llmops`` CLI) and ``deploy/``: may use a service, through its public API only:
  ``import llmops_<service>`` or ``from llmops_<service> import name`` with ``name`` in the
  package's ``__init__.__all__``; never a submodule (``llmops_<service>.main``, ``.adapters``, …).
* ``bench/`` (the benchmark harness): no service package at all. It measures a service as the
  process a user runs (``python -m llmops_<service>``: the bus, gRPC, ``/metrics``), or runs the
  service's own script (``services/<name>/bench/bench_*.py``) for a figure that needs its insides.
* ``tests/`` and ``conftest.py``: anything (they test the services' insides), the CLI included.

Processes (``python -m llmops_<service>``) and the services' gRPC APIs are entry points too;
they are strings and calls, not imports, so nothing here restricts them.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
SKIPPED_DIRS = {"__pycache__", ".venv", "gen", "build", "var", "node_modules"}


def _packages(pattern: str) -> dict[str, Path]:
    """``llmops_*`` package name -> its folder, for the folders matching ``pattern`` under the root."""
    return {folder.name: folder for folder in sorted(ROOT.glob(pattern)) if (folder / "__init__.py").is_file()}


SERVICES = _packages("services/*/src/llmops_*")
LIBRARIES = _packages("libs/*/llmops_*")
TOOLS = _packages("tools/*/llmops_*")


def _literal(tree: ast.Module, name: str) -> Any:
    """The value of a module-level ``name = <literal>`` (annotated or not); None if there is none."""
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1:
            target, value = node.targets[0], node.value
        elif isinstance(node, ast.AnnAssign) and node.value is not None:
            target, value = node.target, node.value
        else:
            continue
        if isinstance(target, ast.Name) and target.id == name:
            return ast.literal_eval(value)
    return None


def _public_api(package: Path) -> frozenset[str] | None:
    """The names in the package's ``__init__.__all__`` (a literal list or tuple); None if it has none."""
    names = _literal(ast.parse((package / "__init__.py").read_text()), "__all__")
    return None if names is None else frozenset(names)


PUBLIC_API = {name: _public_api(folder) or frozenset() for name, folder in SERVICES.items()}


@dataclass(frozen=True, slots=True)
class Import:
    file: str  # relative to the repository root
    line: int
    target: str  # the module imported, or "<package>.<name>" for ``from <package> import <name>``
    module: bool  # True when ``target`` is a module (``import a.b``, ``from a.b import c``)

    @property
    def package(self) -> str:
        return self.target.split(".")[0]

    @property
    def key(self) -> str:
        return f"{self.file} -> {self.target}"


def _python_files() -> Iterator[Path]:
    for top in ("libs", "services", "tools", "bench", "deploy"):
        for path in sorted((ROOT / top).rglob("*.py")):
            if not SKIPPED_DIRS.intersection(path.relative_to(ROOT).parts):
                yield path


def _imports(path: Path) -> Iterator[Import]:
    """Every absolute import in the file (also those inside functions), and ``llmops_<x>.name``
    attribute reads on a package imported as a whole."""
    relative = path.relative_to(ROOT).as_posix()
    tree = ast.parse(path.read_text(), filename=relative)
    whole: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield Import(relative, node.lineno, alias.name, module=True)
                if "." not in alias.name and alias.asname is None:
                    whole.add(alias.name)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if "." in node.module:
                yield Import(relative, node.lineno, node.module, module=True)
            else:
                for alias in node.names:
                    yield Import(relative, node.lineno, f"{node.module}.{alias.name}", module=False)
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in whole:
            yield Import(relative, node.lineno, f"{node.value.id}.{node.attr}", module=False)


def _is_public(entry: Import) -> bool:
    """``llmops_<service>`` itself or one of the names in its ``__all__``, never a submodule."""
    package, _, rest = entry.target.partition(".")
    if entry.module:
        return not rest
    return rest in PUBLIC_API[package]


def _owner(relative: str) -> str | None:
    """The service package a file under ``services/<name>/`` belongs to."""
    parts = relative.split("/")
    if parts[0] != "services":
        return None
    owners = [name for name, folder in SERVICES.items() if folder.parents[1].name == parts[1]]
    return owners[0] if owners else None


def _violation(entry: Import) -> str | None:
    """Why the import breaks a rule, or None."""
    top = entry.file.split("/")[0]
    package = entry.package
    if package not in SERVICES and package not in TOOLS:
        return None  # libraries and third-party packages may be imported from anywhere
    if top == "libs":
        return "a library imports a service or the CLI"
    if top == "services":
        if package in TOOLS:
            return "a service imports the CLI"
        if package != _owner(entry.file):
            return "a service imports another service"
        return None
    if top == "bench" and package in SERVICES:
        return "the benchmark harness imports a service (run it as a process, or its own bench script)"
    if package in SERVICES and not _is_public(entry):
        return f"not in {package}.__all__ (its public API)"
    return None


def _violations() -> dict[str, str]:
    found: dict[str, str] = {}
    for path in _python_files():
        for entry in _imports(path):
            if (why := _violation(entry)) is not None:
                found.setdefault(entry.key, f"{entry.file}:{entry.line}: {entry.target}: {why}")
    return found


def test_the_layers_are_where_the_rules_expect_them() -> None:
    assert set(SERVICES) == {
        "llmops_deployment",
        "llmops_evaluation",
        "llmops_fine_tuning",
        "llmops_gateway",
        "llmops_ingestion",
        "llmops_monitoring",
    }
    assert "llmops_stack" in LIBRARIES and "llmops_events" in LIBRARIES
    assert set(TOOLS) == {"llmops_cli"}
    assert not set(SERVICES) & set(LIBRARIES), "a package is both a service and a library"


def test_imports_follow_the_layers() -> None:
    found = _violations()
    assert not found, "imports across layers:\n" + "\n".join(sorted(found.values()))


def test_the_benchmark_harness_may_not_import_a_service_even_through_its_public_api() -> None:
    assert "MonitoringSettings" in PUBLIC_API["llmops_monitoring"]
    for entry in (
        Import("bench/example.py", 1, "llmops_monitoring", module=True),
        Import("bench/example.py", 1, "llmops_monitoring.MonitoringSettings", module=False),
        Import("bench/example.py", 1, "llmops_ingestion.main", module=True),
    ):
        assert _violation(entry) is not None, entry
    # Libraries stay open to it; a service's own bench script may use the service's insides.
    assert _violation(Import("bench/example.py", 1, "llmops_events.v1", module=True)) is None
    own_script = Import("services/monitoring/bench/bench_x.py", 1, "llmops_monitoring.handlers", module=True)
    assert _violation(own_script) is None


def test_every_service_declares_a_public_api_that_exists() -> None:
    """``__all__`` is a literal, and each name is found, lazily or not, where ``__init__`` says."""
    for name, folder in SERVICES.items():
        public = _public_api(folder)
        assert public is not None, f"{name}/__init__.py has no literal __all__"
        tree = ast.parse((folder / "__init__.py").read_text())
        exports: dict[str, str] = _literal(tree, "_EXPORTS") or {}  # name -> module, imported on first use
        defined = _top_level_names(tree)
        for exported in public:
            if exported in defined:
                continue
            assert exported in exports, f"{name}.{exported} is in __all__ but neither defined nor in _EXPORTS"
            module_file = _module_file(folder, exports[exported])
            assert module_file is not None, f"{name}.{exported}: no module {exports[exported]}"
            module_names = _top_level_names(ast.parse(module_file.read_text()))
            assert exported in module_names, f"{name}.{exported}: not defined in {module_file.relative_to(ROOT)}"
        assert set(exports) <= public, f"{name}: _EXPORTS names missing from __all__: {set(exports) - public}"


def test_importing_a_service_package_stays_cheap() -> None:
    """The public APIs import their modules on first use: the package alone loads no ML stack."""
    heavy = ("torch", "transformers", "evidently", "feast", "faststream", "presidio_analyzer")
    code = (
        f"import sys\nimport {', '.join(sorted(SERVICES))}\nprint(','.join(m for m in {heavy!r} if m in sys.modules))\n"
    )
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert not loaded, f"importing the service packages loaded {loaded}"


def _top_level_names(tree: ast.Module) -> set[str]:
    """Names bound at module level, outside ``if TYPE_CHECKING:`` (imports included)."""
    names: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            names.update(t.id for t in node.targets if isinstance(t, ast.Name))
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
        elif isinstance(node, ast.Import | ast.ImportFrom):
            names.update((alias.asname or alias.name).split(".")[0] for alias in node.names)
    return names


def _module_file(package: Path, relative_module: str) -> Path | None:
    """The file of ``.a.b`` inside ``package``."""
    path = package.joinpath(*relative_module.lstrip(".").split("."))
    for candidate in (path.with_suffix(".py"), path / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def test_test_modules_have_unique_names() -> None:
    """pytest imports test modules by basename (rootdir import mode): two files of one name in
    different folders stop the whole collection on a fresh clone."""
    seen: dict[str, list[str]] = {}
    for path in [*ROOT.glob("tests/**/test_*.py"), *ROOT.glob("services/*/tests/**/test_*.py")]:
        seen.setdefault(path.name, []).append(str(path.relative_to(ROOT)))
    assert {name: paths for name, paths in seen.items() if len(paths) > 1} == {}

"""The image recipes (deploy/docker), checked offline: there is no Docker engine here.

Each recipe is parsed: the dependency groups and extras it installs exist in pyproject.toml, its
entry module exists and is the service the stack runs, its final stage runs as a non-root user with
a health check on the service's own /metrics port. The slimness is checked by resolving the lock
(``uv export``, real resolution): the gateway's image carries no torch, Feast or Evidently;
ingestion's and the CLI's no torch. In the development environment, importing every module of the
gateway and of ingestion imports none of them (lazy imports keep it so); and (integration) each slim
image's environment, built for real from the lock, imports every module of its package.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from llmops_cli.stack import SERVICES

ROOT = Path(__file__).resolve().parents[2]
DOCKER = ROOT / "deploy" / "docker"
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


FORBIDDEN = {
    "gateway": {"torch", "feast", "evidently"},
    "ingestion": {"torch", "evidently"},  # ingestion writes to Feast: it keeps Feast
    "cli": {"torch", "feast", "evidently"},
}


@dataclass
class Stage:
    name: str
    base: str
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        return [arguments for instruction, arguments in self.instructions if instruction == keyword]


def parse(path: Path) -> list[Stage]:
    """The stages of a Dockerfile: continuation lines joined, comments dropped (as Docker does)."""
    logical: list[str] = []
    pending = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        logical.append(pending + line)
        pending = ""
    assert not pending, f"{path.name}: a line continuation runs past the end"
    stages: list[Stage] = []
    for line in logical:
        instruction, _, arguments = line.partition(" ")
        instruction = instruction.upper()
        if instruction == "FROM":
            words = arguments.split()
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else f"stage{len(stages)}"
            stages.append(Stage(name, words[0]))
        elif stages:
            stages[-1].instructions.append((instruction, arguments.strip()))
        else:
            assert instruction == "ARG", f"{path.name}: {instruction} before the first FROM"
    return stages


def service_recipes() -> dict[str, Path]:
    return {path.name.removesuffix(".Dockerfile"): path for path in sorted(DOCKER.glob("*.Dockerfile"))}


def uv_sync_selections(stages: list[Stage]) -> list[tuple[set[str], set[str]]]:
    """(groups, extras) of every ``uv sync`` the recipe runs."""
    selections = []
    for stage in stages:
        for command in stage.all("RUN"):
            words = shlex.split(command)
            # One shell command at a time (a quoted `python -c "...; ..."` stays one word).
            commands: list[list[str]] = [[]]
            for word in words:
                if word in ("&&", ";", "||"):
                    commands.append([])
                else:
                    commands[-1].append(word)
            for part in commands:
                if "uv" in part and "sync" in part:
                    groups = {part[i + 1] for i, word in enumerate(part) if word == "--group"}
                    extras = {part[i + 1] for i, word in enumerate(part) if word == "--extra"}
                    assert "--frozen" in part, f"uv sync without --frozen: {' '.join(part)}"
                    selections.append((groups, extras))
    return selections


def test_one_recipe_per_service_and_the_cli_and_triton() -> None:
    expected = {name for name, *_ in SERVICES} | {"cli", "triton"}
    assert set(service_recipes()) == expected


@pytest.mark.parametrize("name", [name for name, *_ in SERVICES] + ["cli"])
def test_service_recipe_installs_its_group_runs_its_module_as_non_root_with_a_health_check(name: str) -> None:
    stages = parse(service_recipes()[name])
    groups = set(PYPROJECT["dependency-groups"])
    extras = set(PYPROJECT["project"].get("optional-dependencies", {}))
    selections = uv_sync_selections(stages)
    assert selections, "the recipe installs nothing with uv sync"
    for chosen_groups, chosen_extras in selections:
        assert chosen_groups <= groups, f"unknown dependency groups {chosen_groups - groups}"
        assert chosen_extras <= extras, f"unknown extras {chosen_extras - extras}"
    # Every build stage installs only from the lock, and never the default (= every) group.
    runs = " ".join(run for stage in stages for run in stage.all("RUN"))
    assert "uv sync" in runs and "--no-default-groups" in runs
    assert "pip install" not in runs, "packages come from uv.lock, not pip"
    # The image's own environment gets the service's group (the first stage's sync).
    assert name in selections[0][0]

    final = stages[-1]
    assert final.base == "${PYTHON_IMAGE}"
    users = final.all("USER")
    assert users and users[-1].split(":")[0] not in ("0", "root"), "the image must run as a non-root user"
    entry = json.loads(final.all("ENTRYPOINT")[-1])
    healthchecks = final.all("HEALTHCHECK")
    assert healthchecks, "no HEALTHCHECK"
    if name == "cli":
        assert entry == ["llmops"]
        assert healthchecks[-1] == "NONE"
        return
    _, module, port_variable, default_port = next(entry for entry in SERVICES if entry[0] == name)
    assert entry == ["python", "-m", module]
    spec = importlib.util.find_spec(f"{module}.__main__")
    assert spec is not None and spec.origin is not None and Path(spec.origin).is_file()
    env = " ".join(final.all("ENV"))
    assert f"{port_variable}={default_port}" in env
    assert "LLMOPS_METRICS_HOST=0.0.0.0" in env, "/metrics must answer outside the container"
    assert f"os.environ['{port_variable}']" in healthchecks[-1] and "/metrics" in healthchecks[-1]
    assert str(default_port) in " ".join(final.all("EXPOSE")).split()


def test_triton_recipe_is_the_official_image_with_the_model_runtime_lock() -> None:
    stages = parse(service_recipes()["triton"])
    final = stages[-1]
    arguments = [line for line in service_recipes()["triton"].read_text().splitlines() if line.startswith("ARG ")]
    image = next(line.split("=", 1)[1] for line in arguments if line.startswith("ARG TRITON_IMAGE="))
    assert re.fullmatch(r"nvcr\.io/nvidia/tritonserver:\d{2}\.\d{2}-py3", image), image
    assert final.base == "${TRITON_IMAGE}"
    copies = " ".join(final.all("COPY"))
    assert "deploy/triton/runtime/uv.lock" in copies and (ROOT / "deploy/triton/runtime/uv.lock").is_file()
    runs = " ".join(final.all("RUN"))
    assert "uv sync --frozen" in runs
    assert final.all("USER") and final.all("USER")[-1] not in ("0", "root")
    assert "/v2/health/ready" in final.all("HEALTHCHECK")[-1]
    assert json.loads(final.all("ENTRYPOINT")[-1]) == ["tritonserver"]
    assert "--model-control-mode=explicit" in final.all("CMD")[-1]


def test_triton_runtime_lock_has_the_python_3_11_stub_the_recipe_links() -> None:
    """The recipe links the nvidia-pytriton wheel's Python 3.11 stub: the lock must pin that wheel."""
    lock = tomllib.loads((ROOT / "deploy/triton/runtime/uv.lock").read_text())
    assert any(package["name"] == "nvidia-pytriton" for package in lock["package"])
    runtime = tomllib.loads((ROOT / "deploy/triton/runtime/pyproject.toml").read_text())
    assert runtime["project"]["requires-python"].startswith(">=3.11")


def _uv() -> str:
    found = shutil.which("uv") or (str(ROOT / "build/uv/uv") if (ROOT / "build/uv/uv").exists() else None)
    if found is None:
        pytest.skip("uv is not installed (make setup installs it)")
    return found


def resolved(group: str, *extras: str) -> set[str]:
    """The packages ``uv sync --no-default-groups --group <group>`` installs, resolved from uv.lock."""
    command = [_uv(), "export", "--frozen", "--no-default-groups", "--group", group, "--no-hashes", "--no-emit-project"]
    for extra in extras:
        command += ["--extra", extra]
    out = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=True).stdout
    return {
        re.split(r"[=<>;\[ ]", line, maxsplit=1)[0].lower() for line in out.splitlines() if re.match(r"^[a-z]", line)
    }


@pytest.mark.parametrize("group", sorted(FORBIDDEN))
def test_slim_groups_resolve_without_the_heavy_packages(group: str) -> None:
    packages = resolved(group, "s3") if group != "gateway" else resolved(group)
    assert packages, "nothing resolved"
    assert not packages & FORBIDDEN[group], f"{group} resolves {sorted(packages & FORBIDDEN[group])}"
    assert not {name for name in packages if name.startswith("nvidia-")}, "CUDA libraries in a slim image"


def test_model_groups_do_carry_torch() -> None:
    # The check above is not vacuous: the same resolution finds torch where it is imported.
    assert "torch" in resolved("fine-tuning")
    assert {"torch", "evidently"} <= resolved("monitoring")


def test_ingestion_group_carries_feast_and_its_redis_client() -> None:
    # The chart runs ingestion on Feast's Redis online store: adapters/feast_redis.py needs `redis`.
    assert {"feast", "redis"} <= resolved("ingestion", "s3")


@pytest.mark.parametrize(
    ("package", "forbidden"),
    [
        ("llmops_gateway", FORBIDDEN["gateway"]),
        ("llmops_ingestion", FORBIDDEN["ingestion"] | {"feast"}),
    ],
)
def test_importing_every_module_imports_no_heavy_package(package: str, forbidden: set[str]) -> None:
    """In a fresh interpreter of the development environment (where everything is installed): what
    only a code path needs is imported on that path. Ingestion imports Feast only when it opens its
    store. (The CLI's modules are imported in its image's own environment, below.)"""
    script = (
        "import importlib, pkgutil, sys\n"
        f"root = importlib.import_module({package!r})\n"
        "for info in pkgutil.walk_packages(root.__path__, root.__name__ + '.'):\n"
        "    if not info.name.endswith('__main__'):\n"
        "        importlib.import_module(info.name)\n"
        f"print(sorted(m for m in {sorted(forbidden)!r} if m in sys.modules))\n"
    )
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=540)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().splitlines()[-1] == "[]", f"{package} imports {result.stdout.strip()}"


@pytest.mark.integration
@pytest.mark.parametrize("group", sorted(FORBIDDEN))
def test_the_images_environment_imports_every_module_without_the_heavy_packages(group: str, tmp_path: Path) -> None:
    """What the image installs, built for real from the lock into a fresh environment (``uv sync
    --frozen --no-default-groups --group <group>``, as the recipe does): the heavy packages are not
    even installed there, and every module of the image's package imports."""
    package = {"gateway": "llmops_gateway", "ingestion": "llmops_ingestion", "cli": "llmops_cli"}[group]
    environment = tmp_path / "venv"
    sync = subprocess.run(
        [_uv(), "sync", "--frozen", "--no-default-groups", "--group", group, "--quiet"],
        cwd=ROOT,
        env={**os.environ, "UV_PROJECT_ENVIRONMENT": str(environment)},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert sync.returncode == 0, sync.stderr[-2000:]
    script = (
        "import importlib, importlib.util, pkgutil\n"
        f"missing = [m for m in {sorted(FORBIDDEN[group])!r} if importlib.util.find_spec(m) is None]\n"
        f"root = importlib.import_module({package!r})\n"
        "count = 0\n"
        "for info in pkgutil.walk_packages(root.__path__, root.__name__ + '.'):\n"
        "    if not info.name.endswith('__main__'):\n"
        "        importlib.import_module(info.name)\n"
        "        count += 1\n"
        "print(missing, count)\n"
    )
    result = subprocess.run(
        [str(environment / "bin" / "python"), "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=540
    )
    assert result.returncode == 0, result.stderr[-2000:]
    missing, count = result.stdout.strip().splitlines()[-1].rsplit(" ", 1)
    assert missing == repr(sorted(FORBIDDEN[group])), f"installed in the {group} image: {missing}"
    assert int(count) > 5

"""The local Triton Inference Server, from the ``nvidia-pytriton`` wheel in Triton's own venv.

The wheel ships ``tritonserver``, the Python backend and one backend stub per Python version, but
keeps the stub outside ``backends/python``; :func:`build_backend_dir` makes a folder of symlinks that
``--backend-directory`` can use. The stub runs ``model.py`` in the interpreter first on ``PATH`` and
must load that interpreter's ``libpython`` (``LD_LIBRARY_PATH``), so both point at Triton's venv.
"""

from __future__ import annotations

import functools
import json
import os
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from llmops_config import PlatformSettings

from .processes import ManagedProcess, NullProgress, Progress, StackError, port_open

# Files of the wheel's Python backend, and the stub, as named in the backend folder.
_BACKEND_FILES = ("libtriton_python.so", "triton_python_backend_utils.py")
_STUB = "triton_python_backend_stub"


@dataclass(frozen=True, slots=True)
class TritonRuntime:
    """What Triton's venv provides, as reported by its own interpreter."""

    venv: Path
    python_version: str
    """``major.minor`` of the venv's interpreter (selects the backend stub)."""
    site_packages: Path
    libdir: Path
    """``sysconfig`` LIBDIR: where that interpreter's ``libpython`` lives."""

    @property
    def bin_dir(self) -> Path:
        return self.venv / "bin"

    @property
    def server_root(self) -> Path:
        return self.site_packages / "pytriton" / "tritonserver"

    @property
    def tritonserver(self) -> Path:
        return self.server_root / "bin" / "tritonserver"


@functools.cache
def inspect_runtime(venv: Path) -> TritonRuntime:
    """Ask ``<venv>/bin/python`` for its version, site-packages and LIBDIR (cached per venv)."""
    python = venv / "bin" / "python"
    if not python.exists():
        raise StackError(f"Triton's Python environment is missing ({python}): run `make setup`")
    probe = (
        "import json, sys, sysconfig; print(json.dumps({'version': '%d.%d' % sys.version_info[:2], "
        "'purelib': sysconfig.get_paths()['purelib'], 'libdir': sysconfig.get_config_var('LIBDIR')}))"
    )
    result = subprocess.run([str(python), "-I", "-c", probe], capture_output=True, text=True, timeout=60, check=False)
    if result.returncode != 0:
        raise StackError(f"{python} failed to report its paths: {result.stderr.strip()}")
    info = json.loads(result.stdout)
    runtime = TritonRuntime(
        venv=venv, python_version=info["version"], site_packages=Path(info["purelib"]), libdir=Path(info["libdir"])
    )
    if not runtime.tritonserver.is_file():
        raise StackError(f"tritonserver not found at {runtime.tritonserver}: is nvidia-pytriton installed in {venv}?")
    return runtime


def build_backend_dir(runtime: TritonRuntime, backend_dir: Path) -> Path:
    """Create (or refresh) ``<backend_dir>/python`` as symlinks into the wheel; returns that folder.

    Symlinks, not copies: the stub's RPATH (``$ORIGIN/../../../../nvidia_pytriton.libs``) resolves
    against its real location, so its bundled libraries keep being found.
    """
    source = runtime.server_root
    targets = {name: source / "backends" / "python" / name for name in _BACKEND_FILES}
    targets[_STUB] = source / "python_backend_stubs" / runtime.python_version / _STUB
    for target in targets.values():
        if not target.exists():
            raise StackError(
                f"{target} is missing: the nvidia-pytriton wheel has no Python {runtime.python_version} "
                "backend stub, or its layout changed"
            )
    python_dir = backend_dir / "python"
    python_dir.mkdir(parents=True, exist_ok=True)
    for name, target in targets.items():
        link = python_dir / name
        if link.is_symlink() and link.resolve() == target.resolve():
            continue
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(target)
    return python_dir


@dataclass
class TritonServer:
    """``tritonserver`` in explicit model-control mode on the ports of ``settings``."""

    settings: PlatformSettings
    venv: Path
    backend_dir: Path
    exit_timeout_s: int = 10
    """How long Triton lets in-flight requests finish on SIGTERM before unloading models."""
    name: str = "triton"
    process: ManagedProcess = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.process = ManagedProcess(self.name, self.settings.var_dir)

    @property
    def runtime(self) -> TritonRuntime:
        return inspect_runtime(self.venv.resolve())

    @property
    def model_repository(self) -> Path:
        return Path(self.settings.model_repository).resolve()

    @property
    def ports(self) -> tuple[int, int, int]:
        return self.settings.triton_http_port, self.settings.triton_grpc_port, self.settings.triton_metrics_port

    def command(self) -> list[str]:
        """The ``tritonserver`` command line."""
        s = self.settings
        return [
            str(self.runtime.tritonserver),
            f"--model-repository={self.model_repository}",
            f"--backend-directory={self.backend_dir.resolve()}",
            "--model-control-mode=explicit",
            f"--http-address={s.triton_host}",
            f"--http-port={s.triton_http_port}",
            f"--grpc-address={s.triton_host}",
            f"--grpc-port={s.triton_grpc_port}",
            f"--metrics-address={s.triton_host}",
            f"--metrics-port={s.triton_metrics_port}",
            # CPU-only box: no pinned/CUDA pools, no GPU metrics (each would log a warning or an error).
            "--pinned-memory-pool-byte-size=0",
            "--cuda-memory-pool-byte-size=0:0",
            "--allow-gpu-metrics=false",
            # "Ready" means the server answers; a model that failed to load must not make the whole
            # server unready (its own /v2/models/<name>/ready says so).
            "--strict-readiness=false",
            f"--exit-timeout-secs={self.exit_timeout_s}",
        ]

    def environment(self) -> dict[str, str]:
        """The server's environment: Triton's venv first on PATH, its libpython first on LD_LIBRARY_PATH."""
        runtime = self.runtime
        env = {key: value for key, value in os.environ.items() if key not in ("PYTHONPATH", "PYTHONHOME")}
        env["PATH"] = os.pathsep.join([str(runtime.bin_dir), env.get("PATH", "/usr/bin:/bin")])
        env["LD_LIBRARY_PATH"] = os.pathsep.join(
            part for part in (str(runtime.libdir), env.get("LD_LIBRARY_PATH", "")) if part
        )
        env["VIRTUAL_ENV"] = str(runtime.venv)
        env["PYTHONNOUSERSITE"] = "1"  # the model runtime sees its venv only, not ~/.local
        return env

    def preflight(self) -> None:
        """Fail early, before anything starts, if Triton's venv or the wheel's server is missing."""
        _ = self.runtime

    def start(self) -> int:
        """Build the backend folder, then launch the server; returns its pid (not yet ready)."""
        for port in self.ports:
            if port_open(self.settings.triton_host, port):
                raise StackError(
                    f"triton: {self.settings.triton_host}:{port} is already in use by a process llmops did not start"
                )
        build_backend_dir(self.runtime, self.backend_dir)
        self.model_repository.mkdir(parents=True, exist_ok=True)
        return self.process.start(self.command(), env=self.environment(), cwd=self.model_repository.parent)

    def is_ready(self, timeout: float = 2.0) -> bool:
        """True if ``GET /v2/health/ready`` answers 200."""
        try:
            return httpx.get(f"{self.settings.triton_http_url}/v2/health/ready", timeout=timeout).status_code == 200
        except httpx.HTTPError:
            return False

    def loaded_models(self, timeout: float = 2.0) -> list[str] | None:
        """Names of the models Triton is serving (None if it does not answer).

        From the statistics endpoint, not the repository index: a model loaded through the API with
        its files in the request has no folder in the repository and the index does not list it.
        """
        try:
            response = httpx.get(f"{self.settings.triton_http_url}/v2/models/stats", timeout=timeout)
            response.raise_for_status()
            return sorted({entry["name"] for entry in response.json().get("model_stats", [])})
        except (httpx.HTTPError, ValueError, KeyError, TypeError, AttributeError):
            return None

    def wait_ready(self, timeout: float = 60.0, progress: Progress | None = None) -> float:
        """Block until ``/v2/health/ready`` is 200; returns the seconds waited."""
        progress = progress or NullProgress()
        started = time.monotonic()
        while (elapsed := time.monotonic() - started) < timeout:
            if not self.process.is_running():
                code = self.process.exit_code()
                raise self.process.failure(
                    "exited during start-up" + (f" (exit code {code})" if code is not None else "")
                )
            if self.is_ready():
                return time.monotonic() - started
            progress.waiting(f"triton: waiting for {self.settings.triton_http_url}/v2/health/ready ({elapsed:.0f}s)")
            time.sleep(0.5)
        raise self.process.failure(f"not ready after {timeout:.0f}s")

    def stop(self, timeout: float = 30.0) -> bool:
        """SIGTERM (Triton unloads its models and stops the stubs), forced after ``timeout`` s."""
        return self.process.stop(timeout)

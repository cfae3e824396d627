"""``make ui``: Evidently's own UI on the platform's Evidently workspace (``LLMOPS_EVIDENTLY_WORKSPACE``,
default ``var/evidently``), where monitoring and evaluation add a snapshot per window and per
evaluated version: a project per model, its reports, and dashboards of drift and quality over time.

Evidently's UI runs as a child process (``python -m evidently.cli ui``: the ``evidently ui``
command); beside it, in the foreground, the platform page (:mod:`llmops_cli.console`: models,
champion and canary, the retraining chain, latest windows, which Evidently cannot show). Ctrl-C
stops both. The URLs are printed once they answer. New snapshots appear while it runs (Evidently
watches the folder), so it can be started before ``make demo`` as well as after.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx

from llmops_config import PlatformSettings
from llmops_stack.processes import port_open

READY_TIMEOUT_S = 60.0
"""How long ``llmops ui`` waits for Evidently's UI to answer (it imports Evidently: seconds)."""

_PROJECT_DIR = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


class UiError(RuntimeError):
    """The UI could not be started; the message says why and where to look."""


@dataclass(frozen=True, slots=True)
class UiPlan:
    """What ``llmops ui`` runs."""

    workspace: Path
    url: str
    argv: tuple[str, ...]
    env: dict[str, str]
    console_url: str


def plan(settings: PlatformSettings) -> UiPlan:
    workspace = settings.resolved_evidently_workspace.resolve()
    argv = (
        sys.executable,
        "-m",
        "evidently.cli",  # the `evidently` console script's module
        "ui",
        "--workspace",
        str(workspace),
        "--host",
        settings.ui_host,
        "--port",
        str(settings.ui_port),
    )
    # No usage telemetry from an operator's console (and this machine may be offline).
    env = {**os.environ, "DO_NOT_TRACK": "1"}
    return UiPlan(
        workspace=workspace,
        url=f"http://{settings.ui_host}:{settings.ui_port}",
        argv=argv,
        env=env,
        console_url=f"http://{settings.ui_host}:{settings.console_port}",
    )


def projects(workspace: Path) -> list[str]:
    """The names of the workspace's projects (one per model), read from their metadata files."""
    import json

    names = []
    for folder in sorted(workspace.iterdir()) if workspace.is_dir() else []:
        if _PROJECT_DIR.match(folder.name) and (folder / "metadata.json").is_file():
            try:
                names.append(str(json.loads((folder / "metadata.json").read_text())["name"]))
            except (OSError, ValueError, KeyError):
                continue
    return sorted(names)


def answers(url: str) -> bool:
    try:
        return httpx.get(f"{url}/api/version", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def serve(settings: PlatformSettings, *, say: Callable[[str], None], ready_timeout: float = READY_TIMEOUT_S) -> int:
    """Run the UIs until Ctrl-C (or SIGTERM); returns the exit status."""
    import uvicorn

    from llmops_cli.console import create_app

    ui = plan(settings)
    if answers(ui.url):
        raise UiError(f"something already answers on {ui.url} (another `make ui`? set LLMOPS_UI_PORT)")
    if port_open(settings.ui_host, settings.console_port):
        raise UiError(f"something already answers on {ui.console_url} (set LLMOPS_CONSOLE_PORT)")
    ui.workspace.mkdir(parents=True, exist_ok=True)
    names = projects(ui.workspace)
    say(
        f"workspace {ui.workspace}: "
        + (f"{len(names)} project(s): {', '.join(names)}" if names else "no reports yet (run `make demo`)")
    )
    child = subprocess.Popen(list(ui.argv), env=ui.env)
    # `kill` (SIGTERM) stops the UI as Ctrl-C does, so its child is never left behind.
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        started = time.monotonic()
        while not answers(ui.url):
            if child.poll() is not None:
                raise UiError(f"evidently ui exited with status {child.returncode} before answering on {ui.url}")
            if time.monotonic() - started > ready_timeout:
                raise UiError(f"evidently ui did not answer on {ui.url} within {ready_timeout:.0f}s")
            time.sleep(0.3)
        say(f"Evidently UI: {ui.url}  (Ctrl-C stops it)")
        say(f"Platform page: {ui.console_url}  (models, champion and canary, the retraining chain)")
        page = create_app(settings, evidently_url=ui.url)
        config = uvicorn.Config(page, host=settings.ui_host, port=settings.console_port, log_level="warning")
        uvicorn.Server(config).run()  # until Ctrl-C or SIGTERM
        return 0
    except KeyboardInterrupt:
        return 0
    finally:
        if child.poll() is None:
            child.send_signal(signal.SIGINT)
            try:
                child.wait(timeout=10)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt

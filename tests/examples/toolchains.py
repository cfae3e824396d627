"""Building and running the examples of ``examples/`` from tests: each language's build is cached
by ``examples/build.sh`` (a second build of unchanged inputs is a no-op), runs offline (what
``make setup`` downloaded once), and a missing toolchain is a skip that says which."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from llmops_config import PlatformSettings
from llmops_config.kafka import kafka_client_options

REPO = Path(__file__).resolve().parents[2]
BUILD = REPO / "build" / "examples"
BUILD_TIMEOUT_S = 300
"""Most a cached (offline) build may take; the first, online build belongs to ``make setup``."""
RUN_TIMEOUT_S = 180
"""Most one run of an example may take (a JVM start and a generation on a busy CPU)."""

TOOLCHAINS = {"java": ("mvn", "java"), "go": ("go",), "node": ("npm", "node")}
JAVA_CLASSPATH = f"{BUILD / 'java' / 'llmops-java-examples.jar'}:{BUILD / 'java' / 'lib'}/*"


def build(language: str) -> None:
    """Build ``language``'s examples (cached), or skip the test when its toolchain is missing."""
    missing = [tool for tool in TOOLCHAINS[language] if shutil.which(tool) is None]
    if missing:
        pytest.skip(f"{', '.join(missing)} not installed: the {language} examples cannot be built")
    result = subprocess.run(
        [str(REPO / "examples" / "build.sh"), "--offline", language],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=BUILD_TIMEOUT_S,
    )
    if result.returncode == 3:  # build.sh: a tool that `make setup` installs is missing
        pytest.skip(result.stderr.strip())
    assert result.returncode == 0, (
        f"examples/build.sh --offline {language} failed (run `make setup` once online to fetch its dependencies):\n"
        f"{result.stdout}{result.stderr}"
    )


def run(command: list[str], *, env: dict[str, str] | None = None) -> str:
    """Run an example to completion; its standard output (it fails the test on a non-zero exit)."""
    result = subprocess.run(
        command, cwd=REPO, capture_output=True, text=True, timeout=RUN_TIMEOUT_S, env={**os.environ, **(env or {})}
    )
    assert result.returncode == 0, f"{command[0]} exited {result.returncode}:\n{result.stdout}{result.stderr}"
    return result.stdout


def kafka_arguments(settings: PlatformSettings, secrets: Path) -> list[str]:
    """The examples' connection options for the test broker, from the platform's one options builder."""
    options = kafka_client_options(settings, service="examples")
    arguments = ["--bootstrap", options.bootstrap_servers]
    if options.sasl_mechanism is not None and options.username:
        password = secrets / "kafka-password"
        password.write_text(options.password or "")
        password.chmod(0o600)
        arguments += ["--sasl-username", options.username, "--sasl-password-file", str(password)]
        arguments += ["--sasl-mechanism", options.sasl_mechanism]
    if options.ssl_cafile is not None:
        arguments += ["--ca-cert", str(options.ssl_cafile)]
    return arguments

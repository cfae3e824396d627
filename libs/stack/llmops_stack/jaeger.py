"""Jaeger, the local trace backend: ``make up`` starts it (when ``make setup`` could build it) before
the services and points them at it, so their spans can be opened in its UI.

The binary is Jaeger v2 (``go install github.com/jaegertracing/jaeger/cmd/jaeger``, an
OpenTelemetry Collector distribution) built by ``scripts/setup.sh`` into ``build/go/bin``; its
configuration is ``deploy/jaeger/config.yaml`` with the ports of ``PlatformSettings`` passed as
environment variables. Traces are kept in memory: a restart forgets them.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from llmops_config import PlatformSettings

from .components import ComponentStatus, not_running
from .processes import ManagedProcess, Progress, StackError, port_open

OTLP_ENDPOINT_ENV = "OTEL_EXPORTER_OTLP_ENDPOINT"


def jaeger_binary(root: Path) -> Path:
    """Where ``make setup`` installs Jaeger in the checkout ``root``."""
    return root / "build" / "go" / "bin" / "jaeger"


def jaeger_config(root: Path) -> Path:
    return root / "deploy" / "jaeger" / "config.yaml"


@dataclass
class JaegerServer:
    """``jaeger --config deploy/jaeger/config.yaml`` on the ports of ``settings``."""

    settings: PlatformSettings
    binary: Path
    config: Path
    name: str = "jaeger"
    process: ManagedProcess = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.process = ManagedProcess(self.name, self.settings.var_dir)

    def environment(self) -> dict[str, str]:
        """The variables ``deploy/jaeger/config.yaml`` reads its addresses from."""
        s = self.settings
        return {
            "LLMOPS_JAEGER_HOST": s.jaeger_host,
            "LLMOPS_JAEGER_UI_PORT": str(s.jaeger_ui_port),
            "LLMOPS_JAEGER_QUERY_GRPC_PORT": str(s.jaeger_query_grpc_port),
            "LLMOPS_JAEGER_OTLP_GRPC_PORT": str(s.jaeger_otlp_grpc_port),
            "LLMOPS_JAEGER_OTLP_HTTP_PORT": str(s.jaeger_otlp_http_port),
        }

    def preflight(self) -> None:
        if not self.binary.is_file():
            raise StackError(f"{self.binary} is missing: `make setup` builds it (needs Go)")
        if not self.config.is_file():
            raise StackError(f"{self.config} is missing")

    def start(self) -> int:
        argv = [str(self.binary), "--config", str(self.config)]
        return self.process.start(argv, env={**os.environ, **self.environment()})

    def is_ready(self, timeout: float = 2.0) -> bool:
        """The query API answers and the OTLP/HTTP receiver accepts connections."""
        s = self.settings
        try:
            response = httpx.get(f"{s.jaeger_ui_url}/api/services", timeout=timeout)
        except httpx.HTTPError:
            return False
        return response.status_code == 200 and port_open(s.jaeger_host, s.jaeger_otlp_http_port)

    def wait_ready(self, timeout: float, progress: Progress) -> None:
        started = time.monotonic()
        while (elapsed := time.monotonic() - started) < timeout:
            if self.process.record() is not None and not self.process.is_running():
                raise self.process.failure("exited during start-up")
            if self.is_ready():
                return
            progress.waiting(f"{self.name}: starting ({elapsed:.0f}s)")
            time.sleep(0.3)
        raise self.process.failure(f"not ready after {timeout:.0f}s")

    def stop(self, timeout: float = 15.0) -> bool:
        return self.process.stop(timeout)

    def services(self) -> list[str] | None:
        """Service names Jaeger has traces of; None when it does not answer."""
        try:
            response = httpx.get(f"{self.settings.jaeger_ui_url}/api/services", timeout=2)
            response.raise_for_status()
        except httpx.HTTPError:
            return None
        return list(response.json().get("data") or [])

    def traces(self, service: str, *, limit: int = 100, lookback: str = "1h") -> list[dict[str, Any]]:
        """The traces of ``service`` (Jaeger's HTTP query API, the UI's own)."""
        response = httpx.get(
            f"{self.settings.jaeger_ui_url}/api/traces",
            params={"service": service, "limit": limit, "lookback": lookback},
            timeout=10,
        )
        response.raise_for_status()
        return list(response.json().get("data") or [])


@dataclass
class JaegerComponent:
    """Jaeger as a stack component; once it is up, the processes the stack starts after it (the
    services) export their spans to it: ``ensure_up`` sets ``OTEL_EXPORTER_OTLP_ENDPOINT`` in this
    process's environment, which they inherit, unless an endpoint is configured already."""

    server: JaegerServer
    ready_timeout: float = 60.0
    stop_timeout: float = 15.0
    name: str = "jaeger"
    _pointed_at: str | None = field(default=None, init=False, repr=False)

    def preflight(self) -> None:
        self.server.preflight()

    def ensure_up(self, progress: Progress) -> str:
        s = self.server.settings
        if self.server.process.is_running():
            self.server.wait_ready(self.ready_timeout, progress)
            note = f"already running, UI {s.jaeger_ui_url}"
        elif self.server.is_ready():
            note = f"external Jaeger at {s.jaeger_ui_url} (not started by llmops)"
        else:
            progress.step(f"jaeger: starting on {s.jaeger_ui_url} (log {self.server.process.log_file})")
            started = time.monotonic()
            try:
                self.server.start()
                self.server.wait_ready(self.ready_timeout, progress)
            except StackError as error:
                # Traces are optional: a trace backend that cannot start never keeps the platform down.
                self.server.stop(self.stop_timeout)
                return f"could not start, services run without exporting traces: {error}"
            note = f"ready in {time.monotonic() - started:.1f}s, UI {s.jaeger_ui_url}"
        if OTLP_ENDPOINT_ENV not in os.environ:
            os.environ[OTLP_ENDPOINT_ENV] = s.jaeger_otlp_endpoint
            self._pointed_at = s.jaeger_otlp_endpoint
        return f"{note}; services export spans to {os.environ[OTLP_ENDPOINT_ENV]}"

    def stop(self) -> bool:
        # Processes started after this one stops (a test session goes on) must not export to it.
        if self._pointed_at is not None and os.environ.get(OTLP_ENDPOINT_ENV) == self._pointed_at:
            del os.environ[OTLP_ENDPOINT_ENV]
        self._pointed_at = None
        return self.server.stop(self.stop_timeout)

    def status(self) -> ComponentStatus:
        s = self.server.settings
        ours = self.server.process.is_running()
        services = self.server.services()
        if services is None:
            if ours:
                return ComponentStatus(self.name, False, f"{s.jaeger_ui_url} not answering")
            # Optional: without it the services keep their spans to themselves; nothing else is missing.
            why = not_running(self.server.process.pid_file)
            return ComponentStatus(self.name, True, f"{s.jaeger_ui_url} {why}: optional, traces are not exported")
        shown = ", ".join(sorted(services)[:8]) or "no traces yet"
        return ComponentStatus(self.name, True, f"{s.jaeger_ui_url} ({shown})" + ("" if ours else " external"))


def jaeger_component(settings: PlatformSettings, root: Path) -> JaegerComponent | None:
    """The stack's Jaeger when ``make setup`` built it; None (tracing stays local) otherwise."""
    binary = jaeger_binary(root)
    if not binary.is_file():
        return None
    return JaegerComponent(JaegerServer(settings, binary, jaeger_config(root)))

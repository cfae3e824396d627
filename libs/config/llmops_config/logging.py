"""Structured logging: one JSON object per line, with trace context when a span is active.

Log files rotate by size. ``make up`` appends each service's stderr to ``var/logs/<name>.log``
and names that file in ``LLMOPS_LOG_FILE`` (``llmops_stack.processes``); a process given
``LLMOPS_LOG_FILE`` writes its log through a size-rotating handler instead of stderr and, when its
stdout and stderr were that very file, points them at the new file after each rotation, so
nothing keeps growing the old one.
"""

from __future__ import annotations

import json
import logging
import logging.handlers
import os
import stat
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from opentelemetry import trace

from llmops_config import telemetry

if TYPE_CHECKING:
    from llmops_config.settings import PlatformSettings

# Attributes every LogRecord has; anything else passed via ``extra=`` is emitted as a field.
_STANDARD_ATTRIBUTES = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    """Format a record as one JSON line: time, level, logger, message, extras, trace ids."""

    def __init__(self, service: str) -> None:
        super().__init__()
        self._service = service

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "service": self._service,
            "logger": record.name,
            "message": record.getMessage(),
        }
        span_context = trace.get_current_span().get_span_context()
        if span_context.is_valid:
            entry["trace_id"] = format(span_context.trace_id, "032x")
            entry["span_id"] = format(span_context.span_id, "016x")
        for key, value in vars(record).items():
            if key not in _STANDARD_ATTRIBUTES and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str, ensure_ascii=False)


class RotatingLogFile(logging.handlers.RotatingFileHandler):
    """A size-rotating log file that also takes the process's stdout and stderr along to each new
    file when they were that file (output that bypasses logging: tracebacks, native libraries)."""

    def __init__(self, path: Path, *, max_bytes: int, backup_count: int, follow_std_streams: bool) -> None:
        if max_bytes < 1 or backup_count < 1:
            raise ValueError("log rotation needs max_bytes >= 1 and backup_count >= 1")
        path.parent.mkdir(parents=True, exist_ok=True)
        super().__init__(path, mode="a", maxBytes=max_bytes, backupCount=backup_count, encoding="utf-8")
        self._follow_std_streams = follow_std_streams

    def doRollover(self) -> None:
        super().doRollover()
        if self._follow_std_streams and self.stream is not None:
            sys.stdout.flush()
            sys.stderr.flush()
            for fd in (1, 2):
                os.dup2(self.stream.fileno(), fd)


def _stderr_is(path: Path) -> bool:
    """True when stderr is appended to ``path`` itself (a service started by ``make up``)."""
    try:
        return stat.S_ISREG(os.fstat(2).st_mode) and os.path.samefile("/proc/self/fd/2", path)
    except OSError:
        return False


def configure_logging(
    *, service: str, level: str = "INFO", log_format: str = "json", platform: PlatformSettings | None = None
) -> None:
    """Send all logs to stderr in the chosen format, or to a size-rotating file (``LLMOPS_LOG_FILE``);
    set up tracing (``llmops_config.telemetry``) too, so every process that configures its logs
    also exports spans when an OTLP endpoint is set. Safe to call more than once. ``platform``
    gives the file and rotation settings (read from the environment when None)."""
    from llmops_config.settings import PlatformSettings

    platform = platform or PlatformSettings()
    path = platform.log_file
    handler: logging.Handler
    if path is not None:
        handler = RotatingLogFile(
            path,
            max_bytes=platform.log_max_bytes,
            backup_count=platform.log_backup_count,
            follow_std_streams=_stderr_is(path),
        )
    else:
        handler = logging.StreamHandler(sys.stderr)
    if log_format == "json":
        handler.setFormatter(JsonFormatter(service))
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    root = logging.getLogger()
    for old in root.handlers:
        if isinstance(old, RotatingLogFile):
            old.close()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # aiokafka is chatty at INFO about every group rebalance.
    logging.getLogger("aiokafka").setLevel(max(logging.WARNING, root.level))
    telemetry.configure_tracing(service)

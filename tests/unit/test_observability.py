"""Log rotation, trace context from other producers' headers, and tracing set-up (no broker)."""

from __future__ import annotations

import logging
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from llmops_config import PlatformSettings, configure_logging
from llmops_config.logging import RotatingLogFile
from llmops_events import KafkaRecord
from llmops_messaging.tracing import consumer_span, current_traceparent, traceparent_of

TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


def test_a_logger_writing_past_the_size_creates_a_rotated_file(tmp_path: Path) -> None:
    log_file = tmp_path / "logs" / "svc.log"
    settings = PlatformSettings(log_file=log_file, log_max_bytes=1024, log_backup_count=2)
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        configure_logging(service="svc", log_format="json", platform=settings)
        for index in range(60):
            logging.getLogger("test").info("line %d %s", index, "x" * 40)
    finally:
        for handler in root.handlers:
            handler.close()
        root.handlers[:], level = saved
        root.setLevel(level)
    rotated = sorted(path.name for path in log_file.parent.iterdir())
    assert rotated == ["svc.log", "svc.log.1", "svc.log.2"]  # backup_count bounds what is kept
    assert all(path.stat().st_size <= 1024 for path in log_file.parent.iterdir())
    assert '"message": "line 59' in log_file.read_text()


def test_rotation_moves_stdout_and_stderr_to_the_new_file(tmp_path: Path) -> None:
    """A service started by the stack has its stderr appended to its log file: after a rotation,
    output that bypasses logging (a traceback, a native library) goes to the new file too."""
    log_file = tmp_path / "svc.log"
    script = textwrap.dedent(
        """
        import logging, sys
        from llmops_config import configure_logging
        configure_logging(service="svc", log_format="text")
        for index in range(40):
            logging.getLogger("t").info("filler %d %s", index, "y" * 40)
        print("after-rotation on stderr", file=sys.stderr, flush=True)
        """
    )
    env = {"LLMOPS_LOG_FILE": str(log_file), "LLMOPS_LOG_MAX_BYTES": "1024", "PATH": "/usr/bin:/bin"}
    with log_file.open("ab") as sink:
        subprocess.run([sys.executable, "-c", script], stdout=sink, stderr=sink, env=env, check=True, timeout=60)
    assert (tmp_path / "svc.log.1").exists()
    assert "after-rotation on stderr" in log_file.read_text()
    assert "after-rotation on stderr" not in (tmp_path / "svc.log.1").read_text()


def test_rotation_limits_are_checked(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="max_bytes"):
        RotatingLogFile(tmp_path / "x.log", max_bytes=0, backup_count=1, follow_std_streams=False)


def test_a_plain_traceparent_header_is_accepted() -> None:
    record = KafkaRecord(key=b"k", value=b"{}", headers=(("traceparent", TRACEPARENT.encode()),))
    assert traceparent_of(record, None) == TRACEPARENT
    # The CloudEvents extension wins when both are present; a malformed header is ignored.
    other = "00-11111111111111111111111111111111-2222222222222222-01"
    assert traceparent_of(record, other) == other
    assert traceparent_of(KafkaRecord(key=None, value=b"", headers=(("traceparent", b"junk"),)), None) is None


def test_a_consumer_span_continues_a_plain_traceparent() -> None:
    from llmops_messaging.tracing import configure_tracing

    configure_tracing("tests")
    with consumer_span(
        "t process",
        traceparent=traceparent_of(
            KafkaRecord(key=None, value=b"", headers=(("traceparent", TRACEPARENT.encode()),)), None
        ),
    ):
        current = current_traceparent()
    assert current is not None and current.split("-")[1] == TRACEPARENT.split("-")[1]

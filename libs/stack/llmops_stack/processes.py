"""Detached background processes tracked by pid files, so ``down`` stops exactly what ``up`` started.

Each process gets ``<var_dir>/run/<name>.pid`` (a small JSON record: pid and argv) and appends its
stdout/stderr to ``<var_dir>/logs/<name>.log``, which ``LLMOPS_LOG_FILE`` names to it: a platform
process then writes that file itself and rotates it by size (``llmops_config.logging``). A pid is
only trusted while ``/proc/<pid>/cmdline`` still equals the recorded argv: a stale file whose pid was
reused by something else reads as stopped.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import Coroutine, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar

T = TypeVar("T")

LOG_FILE_ENV = "LLMOPS_LOG_FILE"


class Progress(Protocol):
    """Where long operations report to: ``step`` for lasting lines, ``waiting`` for ~1/s updates."""

    def step(self, message: str) -> None: ...

    def waiting(self, message: str) -> None: ...


class NullProgress:
    """Reports nowhere (library use, tests)."""

    def step(self, message: str) -> None:
        pass

    def waiting(self, message: str) -> None:
        pass


class StackError(RuntimeError):
    """A component could not be started, reached or stopped; the message says why and where to look."""


@dataclass(frozen=True, slots=True)
class ProcessRecord:
    """What a pid file holds."""

    pid: int
    argv: tuple[str, ...]
    started_at: float


def _read_cmdline(pid: int) -> tuple[str, ...] | None:
    """The argv of a live, non-zombie process, or None."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    # The state letter follows the last ')' (the command name may itself contain parentheses).
    if stat[stat.rfind(")") + 2 :].startswith(("Z", "X")):
        return None
    return tuple(part.decode(errors="replace") for part in raw.split(b"\0")[:-1])


def _reap(pid: int) -> None:
    """Collect our own exited child so it does not linger as a zombie (no-op for other processes)."""
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def _group_exists(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class ManagedProcess:
    """One named background process of the local stack."""

    def __init__(self, name: str, var_dir: Path) -> None:
        self.name = name
        self.var_dir = var_dir.resolve()
        self._popen: subprocess.Popen[bytes] | None = None

    @property
    def pid_file(self) -> Path:
        return self.var_dir / "run" / f"{self.name}.pid"

    @property
    def log_file(self) -> Path:
        return self.var_dir / "logs" / f"{self.name}.log"

    def record(self) -> ProcessRecord | None:
        """The pid file's content, or None when there is no (readable) pid file."""
        try:
            data = json.loads(self.pid_file.read_text())
            return ProcessRecord(pid=int(data["pid"]), argv=tuple(data["argv"]), started_at=float(data["started_at"]))
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def pid(self) -> int | None:
        """The pid of the running process this pid file describes; None if absent, exited or reused."""
        record = self.record()
        if record is None:
            return None
        if _read_cmdline(record.pid) != record.argv:
            _reap(record.pid)
            return None
        return record.pid

    def is_running(self) -> bool:
        """True while the process recorded in the pid file is alive (and really is that process)."""
        return self.pid() is not None

    def exit_code(self) -> int | None:
        """The exit status if this object started the process and it has ended."""
        return self._popen.poll() if self._popen is not None else None

    def start(self, argv: Sequence[str], *, env: Mapping[str, str] | None = None, cwd: Path | None = None) -> int:
        """Start ``argv`` detached (own session, stdin closed, output appended to the log); return its pid."""
        if (pid := self.pid()) is not None:
            raise StackError(f"{self.name} is already running (pid {pid}, {self.pid_file})")
        self.pid_file.parent.mkdir(parents=True, exist_ok=True)
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        with self.log_file.open("ab") as log:
            stamp = time.strftime("%Y-%m-%d %H:%M:%S")
            log.write(f"\n===== {stamp} llmops starting {self.name}: {' '.join(argv)}\n".encode())
            log.flush()
            # A new session: the process survives the CLI, ignores its terminal's Ctrl-C, and leads a
            # process group of its own that ``stop`` can clean up (Triton's backend stubs live in it).
            self._popen = subprocess.Popen(
                list(argv),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**(os.environ if env is None else env), LOG_FILE_ENV: str(self.log_file)},
                cwd=cwd,
                start_new_session=True,
                close_fds=True,
            )
        # The kernel may still show the parent's argv for an instant after fork: wait for the exec.
        deadline = time.monotonic() + 5
        while _read_cmdline(self._popen.pid) != tuple(argv) and self._popen.poll() is None:
            if time.monotonic() > deadline:
                break
            time.sleep(0.01)
        record = {"pid": self._popen.pid, "argv": list(argv), "started_at": time.time()}
        tmp = self.pid_file.with_suffix(".pid.tmp")
        tmp.write_text(json.dumps(record) + "\n")
        tmp.replace(self.pid_file)
        return self._popen.pid

    def stop(self, timeout: float = 30.0) -> bool:
        """SIGTERM, then SIGKILL to the whole group after ``timeout`` s; remove the pid file.

        Returns True if a running process was stopped, False if there was nothing to stop.
        """
        pid = self.pid()
        if pid is None:
            self.pid_file.unlink(missing_ok=True)
            return False
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        if not self._wait_exit(pid, timeout):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)
            self._wait_exit(pid, 5)
        # Children that outlive their parent (e.g. a backend stub) are ours too: give them a moment, then kill.
        deadline = time.monotonic() + 5
        while _group_exists(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        if _group_exists(pid):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)
        self.pid_file.unlink(missing_ok=True)
        return True

    def _wait_exit(self, pid: int, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            _reap(pid)
            if self._popen is not None:
                self._popen.poll()
            if _read_cmdline(pid) is None:
                return True
            time.sleep(0.1)
        return False

    def log_tail(self, lines: int = 20) -> str:
        """The last ``lines`` lines of the log (for error messages)."""
        try:
            with self.log_file.open("rb") as handle:
                handle.seek(0, os.SEEK_END)
                handle.seek(max(0, handle.tell() - 64 * 1024))
                text = handle.read().decode(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def failure(self, message: str, lines: int = 15) -> StackError:
        """A StackError whose message ends with the log's tail and where the full log is."""
        tail = self.log_tail(lines)
        shown = f"\n--- last lines of {self.log_file} ---\n{tail}" if tail else f" (no output in {self.log_file})"
        return StackError(f"{self.name}: {message}{shown}")


def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    """True if something accepts TCP connections on ``host:port``."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def run_sync(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine to completion from sync code, also when the caller already runs an event loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    # Inside a running loop (an async test, a notebook): a private loop on a worker thread.
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coro).result()

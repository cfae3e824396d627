"""A throw-away Redis for the tests of Feast's Redis online store: Debian's ``redis-server`` binary
on a free loopback port, a password (so the tests go through authentication as the chart's Redis
does), nothing persisted, its folder a temporary one."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from llmops_stack import free_port

PASSWORD = "test-redis-password"


@dataclass(frozen=True, slots=True)
class RedisServer:
    """A running server: Feast's connection string (``host:port``, no password) and the password."""

    address: str
    password: str


def redis_server_binary() -> str | None:
    """The ``redis-server`` binary on the PATH, or None when not installed."""
    return shutil.which("redis-server")


@contextmanager
def running_redis(folder: Path, *, start_timeout_s: float = 30) -> Iterator[RedisServer]:
    """Start a server in ``folder`` and yield it; stopped (and waited for) on exit."""
    import redis

    binary = redis_server_binary()
    if binary is None:
        raise FileNotFoundError("no redis-server binary (apt-get install redis-server)")
    port = free_port()
    arguments = [binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(folder)]
    # No snapshots nor append-only file: a test server keeps nothing, and writes nothing to disk.
    arguments += ["--save", "", "--appendonly", "no", "--requirepass", PASSWORD, "--daemonize", "no"]
    with open(folder / "redis.log", "wb") as log:
        process = subprocess.Popen(arguments, stdout=log, stderr=subprocess.STDOUT)
    try:
        client = redis.Redis(host="127.0.0.1", port=port, password=PASSWORD, socket_timeout=2, socket_connect_timeout=2)
        deadline = time.monotonic() + start_timeout_s
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(
                        f"redis-server did not answer on port {port}: {(folder / 'redis.log').read_text()[-2000:]}"
                    ) from None
                time.sleep(0.1)
        client.close()
        yield RedisServer(address=f"127.0.0.1:{port}", password=PASSWORD)
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=30)

"""A throw-away PostgreSQL cluster for the tests of the shared state store: Debian's ``postgresql``
binaries (``/usr/lib/postgresql/<version>/bin``), ``initdb`` into a temporary folder, ``pg_ctl``
on a free loopback port, trust authentication for one superuser. PostgreSQL refuses to run as
root, so as root the server runs as the ``postgres`` user (``runuser``)."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from llmops_stack import free_port

USER = "llmops"


def postgres_bin_dir() -> Path | None:
    """The newest installed server's ``bin`` folder, or None when no server is installed."""
    found = sorted(
        (path for path in Path("/usr/lib/postgresql").glob("*/bin") if (path / "initdb").exists()),
        key=lambda path: int(path.parent.name) if path.parent.name.isdigit() else 0,
    )
    return found[-1] if found else None


class PostgresCluster:
    """A throw-away cluster that a test may stop, start and restart (a server going away under a
    service's connections)."""

    def __init__(self, folder: Path, *, start_timeout_s: int = 120) -> None:
        bin_dir = postgres_bin_dir()
        if bin_dir is None:
            raise FileNotFoundError("no PostgreSQL server under /usr/lib/postgresql (apt-get install postgresql)")
        self.start_timeout_s = start_timeout_s
        self._as_postgres: list[str] = []
        if os.geteuid() == 0:
            self._as_postgres = ["runuser", "-u", "postgres", "--"]
            shutil.chown(folder, "postgres", "postgres")
        data, sockets, self._log = folder / "data", folder / "sockets", folder / "postgres.log"
        for path in (data, sockets):
            path.mkdir()
            if self._as_postgres:
                shutil.chown(path, "postgres", "postgres")
        self.port = free_port()
        subprocess.run(
            [*self._as_postgres, str(bin_dir / "initdb"), "-D", str(data), "-U", USER, "--auth=trust", "-E", "UTF8"],
            check=True,
            capture_output=True,
            timeout=start_timeout_s,
        )
        self._options = f"-p {self.port} -k {sockets} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._pg_ctl = [*self._as_postgres, str(bin_dir / "pg_ctl"), "-D", str(data), "-l", str(self._log)]
        self.url = f"postgresql://{USER}@127.0.0.1:{self.port}/postgres"

    def _run(self, *arguments: str, check: bool = True) -> None:
        # Output to the log, never to a pipe: a server started by pg_ctl would hold the pipe open.
        subprocess.run(
            [*self._pg_ctl, *arguments],
            check=check,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=self.start_timeout_s + 10,
        )

    def start(self) -> None:
        self._run("-o", self._options, "-w", "-t", str(self.start_timeout_s), "start")

    def stop(self, *, check: bool = True) -> None:
        """A fast shutdown: the server ends every session (their clients see the connection broken)."""
        self._run("-m", "fast", "-w", "-t", str(self.start_timeout_s), "stop", check=check)

    def restart(self) -> None:
        self.stop()
        self.start()


@contextmanager
def running_postgres(folder: Path, *, start_timeout_s: int = 120) -> Iterator[str]:
    """Start a cluster in ``folder`` and yield its URL (database ``postgres``); stopped on exit."""
    with postgres_cluster(folder, start_timeout_s=start_timeout_s) as cluster:
        yield cluster.url


@contextmanager
def postgres_cluster(folder: Path, *, start_timeout_s: int = 120) -> Iterator[PostgresCluster]:
    """Start a cluster in ``folder`` and yield it; stopped on exit."""
    cluster = PostgresCluster(folder, start_timeout_s=start_timeout_s)
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop(check=False)


def fresh_database(url: str, name: str) -> str:
    """Create database ``name`` on the cluster at ``url`` and return its URL (one per test)."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')
    return url.rsplit("/", 1)[0] + f"/{name}"

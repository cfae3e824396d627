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


@contextmanager
def running_postgres(folder: Path, *, start_timeout_s: int = 120) -> Iterator[str]:
    """Start a cluster in ``folder`` and yield its URL (database ``postgres``); stopped on exit."""
    bin_dir = postgres_bin_dir()
    if bin_dir is None:
        raise FileNotFoundError("no PostgreSQL server under /usr/lib/postgresql (apt-get install postgresql)")
    as_postgres: list[str] = []
    if os.geteuid() == 0:
        as_postgres = ["runuser", "-u", "postgres", "--"]
        shutil.chown(folder, "postgres", "postgres")
    data, sockets, log = folder / "data", folder / "sockets", folder / "postgres.log"
    for path in (data, sockets):
        path.mkdir()
        if as_postgres:
            shutil.chown(path, "postgres", "postgres")
    port = free_port()
    subprocess.run(
        [*as_postgres, str(bin_dir / "initdb"), "-D", str(data), "-U", USER, "--auth=trust", "-E", "UTF8"],
        check=True,
        capture_output=True,
        timeout=start_timeout_s,
    )
    options = f"-p {port} -k {sockets} -c listen_addresses=127.0.0.1 -c fsync=off"
    pg_ctl = [*as_postgres, str(bin_dir / "pg_ctl"), "-D", str(data)]
    subprocess.run(
        [*pg_ctl, "-o", options, "-l", str(log), "-w", "-t", str(start_timeout_s), "start"],
        check=True,
        capture_output=True,
        timeout=start_timeout_s + 10,
    )
    try:
        yield f"postgresql://{USER}@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run([*pg_ctl, "-m", "fast", "-w", "stop"], capture_output=True, timeout=60)


def fresh_database(url: str, name: str) -> str:
    """Create database ``name`` on the cluster at ``url`` and return its URL (one per test)."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')
    return url.rsplit("/", 1)[0] + f"/{name}"

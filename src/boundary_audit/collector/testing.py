"""A throwaway PostgreSQL server for tests, benchmarks and trying the collector out.

``with throwaway_postgres() as pg: open_storage(pg.new_database())``. It runs
``initdb`` and ``pg_ctl`` from the system's PostgreSQL (as the unprivileged
``postgres`` user when started as root, which PostgreSQL requires), listens on
127.0.0.1 on a free port plus a private Unix socket directory, and deletes
everything on exit.
"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg

#: Where Debian installs each PostgreSQL major version's server binaries.
DEBIAN_PG_ROOT = Path("/usr/lib/postgresql")
#: Env variable naming the server binaries' directory, for other layouts.
PG_BIN_ENV = "BOUNDARY_AUDIT_PG_BIN"


def find_pg_bin() -> Path:
    """``$BOUNDARY_AUDIT_PG_BIN``, else the newest Debian-packaged server."""
    configured = os.environ.get(PG_BIN_ENV)
    if configured:
        return Path(configured)
    versions = sorted(
        (p for p in DEBIAN_PG_ROOT.glob("*/bin") if (p / "initdb").exists()),
        key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
    )
    return versions[-1] if versions else DEBIAN_PG_ROOT / "15" / "bin"


PG_BIN = find_pg_bin()
#: Seconds PostgreSQL may take to start on a loaded 2-core machine.
PG_START_TIMEOUT_SECONDS = 60
#: The unprivileged account PostgreSQL runs as when we are root.
PG_USER = "postgres"


class PostgresUnavailableError(RuntimeError):
    """The PostgreSQL binaries are missing or the server would not start."""


@dataclass(frozen=True, slots=True)
class ThrowawayPostgres:
    port: int
    root: Path
    #: Server options given to ``pg_ctl -o`` (port, socket dir, durability).
    options: str

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    def url(self, dbname: str = "postgres") -> str:
        return f"postgresql://{PG_USER}@127.0.0.1:{self.port}/{dbname}"

    def new_database(self) -> str:
        """A fresh, empty database; returns its URL."""
        name = "t_" + secrets.token_hex(6)
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}")  # name is ours: hex only
        return self.url(name)

    def start(self) -> None:
        """Start the server (again); raises when it does not come up."""
        started = _run(
            [
                str(PG_BIN / "pg_ctl"),
                "-D",
                str(self.data_dir),
                "-o",
                self.options,
                "-l",
                str(self.root / "server.log"),
                "-w",
                "-t",
                str(PG_START_TIMEOUT_SECONDS),
                "start",
            ]
        )
        if started.returncode != 0:
            log = (self.root / "server.log").read_text(errors="replace")
            raise PostgresUnavailableError(f"pg_ctl start failed: {started.stderr!r} {log}")

    def stop(self) -> None:
        """Stop at once, as a crash would (clients see their connections drop)."""
        _run([str(PG_BIN / "pg_ctl"), "-D", str(self.data_dir), "-m", "immediate", "stop"])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _run(args: list[str], **kwargs: Any) -> subprocess.CompletedProcess[bytes]:
    if os.geteuid() == 0:
        kwargs["user"] = PG_USER
    return subprocess.run(args, capture_output=True, check=False, **kwargs)


@contextmanager
def throwaway_postgres(*, durable: bool = False) -> Iterator[ThrowawayPostgres]:
    """Start a private server; ``durable=False`` turns fsync off (tests need no crash safety)."""
    initdb = PG_BIN / "initdb"
    if not initdb.exists():
        raise PostgresUnavailableError(f"{initdb} not found (apt-get install postgresql)")
    root = Path(tempfile.mkdtemp(prefix="ba-pg-"))
    data, sockets = root / "data", root / "sock"
    sockets.mkdir()
    if os.geteuid() == 0:
        for path in (root, sockets):
            shutil.chown(path, PG_USER, PG_USER)
    try:
        done = _run([str(initdb), "-D", str(data), "-U", PG_USER, "--auth=trust", "-E", "UTF8"])
        if done.returncode != 0:
            raise PostgresUnavailableError(f"initdb failed: {done.stderr.decode(errors='replace')}")
        port = _free_port()
        options = f"-p {port} -k {sockets} -c listen_addresses=127.0.0.1"
        if not durable:
            options += " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        server = ThrowawayPostgres(port, root, options)
        server.start()
        try:
            yield server
        finally:
            server.stop()
    finally:
        shutil.rmtree(root, ignore_errors=True)

"""Fixtures: a throwaway PostgreSQL server, fresh databases, collectors on real ports."""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest

from boundary_audit.collector import CollectorServer, Storage, open_storage
from boundary_audit.collector.app import AppSettings
from boundary_audit.wire import IngestRequest

PG_BIN = Path("/usr/lib/postgresql/15/bin")
#: Seconds PostgreSQL may take to start on a loaded 2-core machine.
PG_START_TIMEOUT = 60
#: Seconds a collector subprocess may take to announce its port.
PROCESS_START_TIMEOUT = 30.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class PgServer:
    port: int
    root: Path

    def url(self, dbname: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{dbname}"

    def new_database(self) -> str:
        name = "t_" + secrets.token_hex(6)
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}")
        return self.url(name)


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    if not (PG_BIN / "initdb").exists():
        pytest.skip(f"PostgreSQL binaries not found in {PG_BIN} (scripts/system-deps.sh)")
    root = Path(tempfile.mkdtemp(prefix="ba-pg-"))
    shutil.chown(root, "postgres", "postgres")
    data, sockets = root / "data", root / "sock"
    sockets.mkdir()
    shutil.chown(sockets, "postgres", "postgres")
    run_as = {"user": "postgres"} if os.geteuid() == 0 else {}
    subprocess.run(
        [str(PG_BIN / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8"],
        check=True,
        capture_output=True,
        **run_as,  # type: ignore[call-overload]
    )
    port = _free_port()
    options = (
        f"-p {port} -k {sockets} -c listen_addresses=127.0.0.1 -c fsync=off"
        " -c synchronous_commit=off -c max_connections=100"
    )
    subprocess.run(
        [
            str(PG_BIN / "pg_ctl"),
            "-D",
            str(data),
            "-o",
            options,
            "-l",
            str(root / "server.log"),
            "-w",
            "-t",
            str(PG_START_TIMEOUT),
            "start",
        ],
        check=True,
        capture_output=True,
        **run_as,  # type: ignore[call-overload]
    )
    try:
        yield PgServer(port, root)
    finally:
        subprocess.run(
            [str(PG_BIN / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"],
            capture_output=True,
            check=False,
            **run_as,  # type: ignore[call-overload]
        )
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'collector.db'}"
    server: PgServer = request.getfixturevalue("pg_server")
    return server.new_database()


@pytest.fixture
def storage(db_url: str) -> Iterator[Storage]:
    with open_storage(db_url) as store:
        yield store


@pytest.fixture
def collector(storage: Storage) -> Iterator[CollectorServer]:
    with CollectorServer(storage, AppSettings(require_read_auth=False)) as server:
        yield server


# -- request builders ----------------------------------------------------------------------
def make_request(
    session_id: str | None = None,
    seqs: range | list[int] = range(3),
    *,
    url: str = "https://example.com/path",
    allowed: bool | None = None,
    process: str = "claude-code",
    time_ns: int | None = None,
) -> IngestRequest:
    """An IngestRequest with one session's events; even numbers allowed unless ``allowed``."""
    request = IngestRequest(batch_id=str(uuid.uuid4()))
    report = request.logs.add(
        session_id=session_id or str(uuid.uuid4()), confined_process_name=process
    )
    now = time.time_ns() if time_ns is None else time_ns
    for seq in seqs:
        log = report.logs.add(
            allowed=(seq % 2 == 0) if allowed is None else allowed, sequence_number=seq
        )
        log.time.FromNanoseconds(now + seq)
        log.http_request.method = "GET"
        log.http_request.url = url.replace("{seq}", str(seq))
        if log.allowed:
            log.http_request.matched_rule = "domain=example.com"
    return request


# -- collector subprocesses ------------------------------------------------------------------
@dataclass
class CollectorProcess:
    proc: subprocess.Popen[bytes]
    url: str
    log_path: Path

    def log_lines(self) -> list[dict[str, object]]:
        lines = []
        for line in self.log_path.read_text(errors="replace").splitlines():
            if line.startswith("{"):
                lines.append(json.loads(line))
        return lines

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=PROCESS_START_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


def cli(*args: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [sys.executable, "-m", "boundary_audit", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if check and result.returncode != 0:
        raise AssertionError(f"{args} exited {result.returncode}: {result.stderr}")
    return result


def start_collector(db_url: str, log_path: Path, *extra: str) -> CollectorProcess:
    log = log_path.open("wb")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "boundary_audit",
            "collector",
            "--db",
            db_url,
            "--listen",
            "127.0.0.1:0",
            *extra,
        ],
        stdout=subprocess.DEVNULL,
        stderr=log,
    )
    log.close()
    deadline = time.monotonic() + PROCESS_START_TIMEOUT
    while time.monotonic() < deadline:
        match = re.search(r'"url": "(http://[^"]+)"[^\n]*collector_listening', log_path.read_text())
        if match:
            return CollectorProcess(proc, match.group(1), log_path)
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    proc.kill()
    raise AssertionError(f"collector did not start: {log_path.read_text()}")


@pytest.fixture
def process_factory(tmp_path: Path) -> Iterator[list[CollectorProcess]]:
    started: list[CollectorProcess] = []
    yield started
    for p in started:
        p.stop()

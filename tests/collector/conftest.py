"""Fixtures: a throwaway PostgreSQL server, fresh databases, collectors on real ports."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from boundary_audit.collector import CollectorServer, Storage, open_storage
from boundary_audit.collector.app import AppSettings
from boundary_audit.collector.testing import (
    PostgresUnavailableError,
    ThrowawayPostgres,
    throwaway_postgres,
)
from boundary_audit.wire import IngestRequest

#: Seconds a collector subprocess may take to announce its port.
PROCESS_START_TIMEOUT = 30.0


@pytest.fixture(scope="session")
def pg_server() -> Iterator[ThrowawayPostgres]:
    try:
        with throwaway_postgres() as server:
            yield server
    except PostgresUnavailableError as exc:
        pytest.skip(f"no throwaway PostgreSQL: {exc} (scripts/system-deps.sh installs it)")


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'collector.db'}"
    server: ThrowawayPostgres = request.getfixturevalue("pg_server")
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

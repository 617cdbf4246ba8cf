"""The end-to-end suite's pieces: the collector process, confined clients, checkpoints.

The collector, the agent and each ``boundary-audit run`` are subprocesses
started as ``python -m boundary_audit ...`` and talk over real sockets; the
upstream HTTP server is a thread in the test process. Components are
:class:`tests.support.services.Service`\\ s; the agent is
:class:`tests.support.services.AgentProcess`.
"""

from __future__ import annotations

import errno
import http.server
import json
import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psutil

from tests.support import eventually, free_port
from tests.support.processes import cli_argv, run_cli
from tests.support.services import AgentProcess, ProcessExited, Service, json_lines, wait_healthy

#: Seconds the pipeline may take to deliver everything once the senders are done.
DELIVERY_TIMEOUT_S = 120.0
#: Polling interval of the suite's waits: each check is an HTTP request (or
#: several) to a component, so a few per second react quickly enough without
#: loading the two shared CPUs the pipeline runs on.
POLL_S = 0.1
#: Seconds a confined client may wait at a checkpoint for the test to release it.
CHECKPOINT_TIMEOUT_S = 120.0
#: Seconds `run` keeps delivering queued events at exit: long, so a sender
#: waiting for a stopped/restarting agent delivers instead of giving up.
RUN_FLUSH_TIMEOUT_S = 90.0
#: Seconds a CLI query of the collector (sessions, logs) may take.
QUERY_TIMEOUT_S = 120.0
#: Timeout of one request to the collector's API: generous, it may be busy
#: ingesting a backlog.
API_TIMEOUT_S = 30.0
#: Payload of every upstream answer: tiny, the proxy and pipeline are under test.
UPSTREAM_BODY = b"ok\n"
#: Rule that allows the /ok/ paths; everything else is denied by default.
ALLOW_RULE = "domain=127.0.0.1 path=/ok/*"


# -- upstream ---------------------------------------------------------------------------
class TinyUpstream(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive
    # Headers and body go out in two writes; with Nagle on, the second waits
    # for the proxy's delayed ACK (~40 ms a request).
    disable_nagle_algorithm = True

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", str(len(UPSTREAM_BODY)))
        self.end_headers()
        self.wfile.write(UPSTREAM_BODY)

    def log_message(self, format: str, *args: object) -> None:
        pass


# -- the collector ----------------------------------------------------------------------
class CollectorProcess(Service):
    """A collector on SQLite that keeps its port across restarts (the agent's URL)."""

    def __init__(self, tmp: Path) -> None:
        self.db = f"sqlite:///{tmp / 'collector.db'}"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        super().__init__(
            "collector",
            ["collector", "--db", self.db, "--listen", f"127.0.0.1:{self.port}", "--no-event-log"],
            tmp,
        )

    def start(self) -> None:
        proc = self.spawn()
        wait_healthy(f"{self.url}/healthz", proc, "the collector", log=self.log_path)

    def create_token(self) -> str:
        result = run_cli(
            "tokens", "create", "--agent", "e2e-agent", "--workspace", "e2e", "--db", self.db
        )
        return result.stdout.strip()

    def session(self, session_id: str) -> dict[str, Any] | None:
        response = httpx.get(f"{self.url}/api/v1/sessions/{session_id}", timeout=API_TIMEOUT_S)
        if response.status_code == 404:
            return None
        response.raise_for_status()
        result: dict[str, Any] = response.json()
        return result

    def sessions_cli(self) -> dict[str, dict[str, Any]]:
        out = run_cli("sessions", "--collector-url", self.url, "--jsonl", "--all").stdout
        rows = [json.loads(line) for line in out.splitlines() if line.strip()]
        return {row["session_id"]: row for row in rows}

    def sequence_numbers_cli(self, session_id: str, limit: int) -> list[int]:
        out = run_cli(
            "logs",
            "--collector-url",
            self.url,
            "--session",
            session_id,
            "--jsonl",
            "--limit",
            str(limit),
            timeout=QUERY_TIMEOUT_S,
        ).stdout
        return [json.loads(line)["sequence_number"] for line in out.splitlines() if line.strip()]


# -- confined clients -------------------------------------------------------------------
#: The confined command: N requests through the proxy on one keep-alive
#: connection, every fourth denied; progress written to a file every
#: PROGRESS_EVERY requests; at each checkpoint it blocks reading its release
#: FIFO until the test writes that checkpoint's number, so chaos steps land in
#: the middle of the traffic.
CLIENT_SCRIPT = r"""
import http.client, json, os, select, sys, urllib.parse
port, n, sync_dir, name, checkpoints, timeout = (
    int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4], int(sys.argv[5]),
    float(sys.argv[6]))
PROGRESS_EVERY = 100
proxy = urllib.parse.urlsplit(os.environ["HTTP_PROXY"])
stops = {k * n // (checkpoints + 1): k for k in range(1, checkpoints + 1)}
# Opened for reading and writing, so reads block until the test writes
# (never see end-of-file) and the test's writer finds a reader at once.
release = os.open(os.path.join(sync_dir, f"release-{name}"), os.O_RDWR)
def progress(done):
    tmp = os.path.join(sync_dir, f".{name}.tmp")
    with open(tmp, "w") as f:
        f.write(str(done))
    os.replace(tmp, os.path.join(sync_dir, f"progress-{name}"))
def hold(k):
    if not select.select([release], [], [], timeout)[0]:
        sys.exit(f"checkpoint {k} never released")
    got = os.read(release, 1)[0]
    if got != k:
        sys.exit(f"checkpoint {k}: released for checkpoint {got}")
conn = http.client.HTTPConnection(proxy.hostname, proxy.port, timeout=60)
allowed = denied = 0
for i in range(n):
    if i in stops:
        progress(i)
        hold(stops[i])
    ok = i % 4 != 3
    path = f"/ok/{name}/{i}" if ok else f"/no/{name}/{i}"
    conn.request("GET", f"http://127.0.0.1:{port}{path}")
    response = conn.getresponse()
    response.read()
    if response.status != (200 if ok else 403):
        sys.exit(f"request {i} {path}: unexpected status {response.status}")
    if ok:
        allowed += 1
    else:
        denied += 1
    if response.will_close:
        conn.close()
        conn = http.client.HTTPConnection(proxy.hostname, proxy.port, timeout=60)
    if (i + 1) % PROGRESS_EVERY == 0:
        progress(i + 1)
progress(n)
print(json.dumps({"allowed": allowed, "denied": denied}))
"""


@dataclass
class ClientResult:
    name: str
    allowed: int
    denied: int
    summary: dict[str, Any]

    @property
    def session_id(self) -> str:
        return str(self.summary["session_id"])

    @property
    def made(self) -> int:
        return self.allowed + self.denied


@dataclass
class Client:
    """One ``boundary-audit run -- python -c CLIENT_SCRIPT`` and what it reported."""

    name: str
    n: int
    proc: subprocess.Popen[str]
    sync_dir: Path
    stderr_path: Path

    @property
    def release_fifo(self) -> Path:
        return self.sync_dir / f"release-{self.name}"

    def progress(self) -> int:
        try:
            return int((self.sync_dir / f"progress-{self.name}").read_text() or 0)
        except (FileNotFoundError, ValueError):
            return 0

    def release(self, checkpoint: int) -> None:
        """Let the client past ``checkpoint`` (it reads the number from its FIFO)."""
        try:
            fd = os.open(self.release_fifo, os.O_WRONLY | os.O_NONBLOCK)
        except OSError as exc:
            if exc.errno == errno.ENXIO:  # no reader: the client is gone
                raise ProcessExited(f"{self.name} is not waiting: {self.stderr()}") from exc
            raise
        try:
            os.write(fd, bytes([checkpoint]))
        finally:
            os.close(fd)

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")[-3000:]

    def rss(self) -> int:
        try:
            return int(psutil.Process(self.proc.pid).memory_info().rss)
        except psutil.Error:
            return 0

    def finish(self, timeout: float = DELIVERY_TIMEOUT_S) -> ClientResult:
        stdout, _ = self.proc.communicate(timeout=timeout)
        assert self.proc.returncode == 0, (
            f"{self.name} exited {self.proc.returncode}: {self.stderr()}"
        )
        counts = json.loads(stdout.strip().splitlines()[-1])
        summaries = [
            line for line in json_lines(self.stderr_path) if line.get("event") == "audit summary"
        ]
        assert len(summaries) == 1, f"{self.name}: no audit summary in {self.stderr()}"
        return ClientResult(
            name=self.name,
            allowed=int(counts["allowed"]),
            denied=int(counts["denied"]),
            summary=summaries[0],
        )


def wait_until_accounted(
    collector: CollectorProcess, results: list[ClientResult], *, with_dropped: bool = False
) -> dict[str, dict[str, Any]]:
    """Wait until every client's session at the collector holds all the requests
    it made (counting those reported dropped when ``with_dropped``); then the
    sessions as ``boundary-audit sessions`` lists them, by id."""

    def accounted() -> bool:
        for r in results:
            s = collector.session(r.session_id)
            if s is None:
                return False
            held = s["allowed"] + s["denied"] + (s["dropped"] if with_dropped else 0)
            if held < r.made:
                return False
        return True

    what = "stored + dropped to account for every request" if with_dropped else "every event"
    eventually(accounted, f"{what} at the collector", within=DELIVERY_TIMEOUT_S, interval=POLL_S)
    return collector.sessions_cli()


def wait_until_complete(collector: CollectorProcess, session_id: str) -> dict[str, Any]:
    """Wait until the collector calls ``session_id`` complete (sealed, every
    number stored or reported lost); its completeness verdict."""

    def complete() -> dict[str, Any] | None:
        session = collector.session(session_id)
        verdict = None if session is None else session.get("completeness")
        return verdict if verdict and verdict["state"] == "complete" else None

    verdict = eventually(
        complete, f"session {session_id} complete", within=DELIVERY_TIMEOUT_S, interval=POLL_S
    )
    assert verdict is not None
    return verdict


def start_client(
    tmp: Path,
    socket_path: Path,
    upstream_port: int,
    name: str,
    n: int,
    *,
    checkpoints: int = 0,
    extra: tuple[str, ...] = (),
) -> Client:
    sync_dir = tmp / "sync"
    sync_dir.mkdir(exist_ok=True)
    os.mkfifo(sync_dir / f"release-{name}", 0o600)
    stderr_path = tmp / f"run-{name}.log"
    env = {**os.environ, "XDG_CONFIG_HOME": str(tmp / "config")}
    env.pop("BOUNDARY_ALLOW", None)
    argv = cli_argv(
        "run",
        # The audit summary each run is checked by is an info line.
        "--log-level",
        "info",
        "--allow",
        ALLOW_RULE,
        "--audit-socket",
        str(socket_path),
        "--process-name",
        f"e2e-{name}",
        # Per-request audit lines on stderr would cost more than the
        # requests; the summary line is logged at info by the run logger.
        "--audit-log-level",
        "error",
        "--audit-flush-timeout",
        str(RUN_FLUSH_TIMEOUT_S),
        *extra,
        "--",
        sys.executable,
        "-c",
        CLIENT_SCRIPT,
        str(upstream_port),
        str(n),
        str(sync_dir),
        name,
        str(checkpoints),
        str(CHECKPOINT_TIMEOUT_S),
    )
    with stderr_path.open("wb") as err:
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=err, text=True, env=env)
    return Client(name, n, proc, sync_dir, stderr_path)


def release(clients: list[Client], checkpoint: int) -> None:
    for client in clients:
        client.release(checkpoint)


def checkpoint_requests(client: Client, checkpoint: int, checkpoints: int) -> int:
    """Requests ``client`` makes before it holds at ``checkpoint`` (as the script computes)."""
    return checkpoint * client.n // (checkpoints + 1)


#: Makes an agent process (not started) with extra command-line flags; the
#: ``make_agent_process`` fixture is one.
AgentFactory = Callable[..., AgentProcess]


def wait_at_checkpoint(clients: list[Client], checkpoint: int, checkpoints: int) -> None:
    """Wait until every client has made its requests up to ``checkpoint`` and holds there."""

    def arrived() -> bool:
        for c in clients:
            if c.proc.poll() is not None:
                raise ProcessExited(f"{c.name} exited early: {c.stderr()}")
        return all(c.progress() >= checkpoint_requests(c, checkpoint, checkpoints) for c in clients)

    eventually(
        arrived, f"clients at checkpoint {checkpoint}", within=CHECKPOINT_TIMEOUT_S, interval=POLL_S
    )


__all__ = [
    "ALLOW_RULE",
    "DELIVERY_TIMEOUT_S",
    "POLL_S",
    "AgentFactory",
    "Client",
    "ClientResult",
    "CollectorProcess",
    "TinyUpstream",
    "checkpoint_requests",
    "release",
    "start_client",
    "wait_at_checkpoint",
    "wait_until_accounted",
    "wait_until_complete",
]

"""Process fixtures for the end-to-end suite: every component a real, separate process.

The upstream HTTP server is a thread in the test process (the brief allows it);
the collector, the agent and each ``boundary-audit run`` are subprocesses started
as ``sys.executable -m boundary_audit ...`` and talk over real sockets.
"""

from __future__ import annotations

import http.server
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
from prometheus_client.parser import text_string_to_metric_families

#: Seconds a component may take to start (import, migrate, bind) on a loaded 2-core machine.
START_TIMEOUT_S = 60.0
#: Seconds a component may take to stop after SIGTERM (the agent flushes for up to
#: its --flush-timeout first).
STOP_TIMEOUT_S = 60.0
#: Seconds the pipeline may take to deliver everything once the senders are done.
DELIVERY_TIMEOUT_S = 120.0
#: Polling interval of every wait-for-condition loop: short enough to react
#: quickly, long enough not to load the shared CPUs.
POLL_S = 0.1
#: Seconds a confined client may wait at a checkpoint for the test to release it.
CHECKPOINT_TIMEOUT_S = 120.0
#: The agent's flush at shutdown; short, because the tests restart it.
AGENT_FLUSH_TIMEOUT_S = 5.0
#: Seconds `run` keeps delivering queued events at exit: long, so a sender
#: waiting for a stopped/restarting agent delivers instead of giving up.
RUN_FLUSH_TIMEOUT_S = 90.0
#: Payload of every upstream answer: tiny, the proxy and pipeline are under test.
UPSTREAM_BODY = b"ok\n"
#: Rule that allows the /ok/ paths; everything else is denied by default.
ALLOW_RULE = "domain=127.0.0.1 path=/ok/*"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(what: str, check: Callable[[], Any], timeout: float = DELIVERY_TIMEOUT_S) -> Any:
    """Poll ``check`` until it returns a truthy value; fail naming ``what`` otherwise."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(POLL_S)
    raise AssertionError(f"timed out waiting for {what} (last: {last!r})")


def json_lines(path: Path) -> list[dict[str, Any]]:
    out = []
    for line in path.read_text(errors="replace").splitlines():
        if line.startswith("{"):
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return out


def cli(*args: str, timeout: float = 60) -> str:
    """Run a boundary-audit command to completion; its stdout, or fail with its stderr."""
    result = subprocess.run(
        [sys.executable, "-m", "boundary_audit", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if result.returncode != 0:
        raise AssertionError(f"{args} exited {result.returncode}: {result.stderr[-3000:]}")
    return result.stdout


# -- upstream ---------------------------------------------------------------------------
class _Tiny(http.server.BaseHTTPRequestHandler):
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


@pytest.fixture
def upstream() -> Iterator[int]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Tiny)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield int(server.server_address[1])
    server.shutdown()
    server.server_close()


# -- managed processes ------------------------------------------------------------------
@dataclass
class Managed:
    """A component subprocess that can be started, stopped, killed, paused, resumed."""

    name: str
    argv: list[str]
    log_dir: Path
    env: dict[str, str] = field(default_factory=lambda: dict(os.environ))
    proc: subprocess.Popen[bytes] | None = None
    starts: int = 0

    @property
    def log_path(self) -> Path:
        return self.log_dir / f"{self.name}-{self.starts}.log"

    def spawn(self) -> None:
        assert self.proc is None or self.proc.poll() is not None, f"{self.name} already running"
        self.starts += 1
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "boundary_audit", *self.argv],
                stdout=subprocess.DEVNULL,
                stderr=log,
                env=self.env,
            )

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def fail_if_dead(self) -> None:
        if self.proc is not None and self.proc.poll() is not None:
            raise AssertionError(
                f"{self.name} exited {self.proc.returncode}: "
                f"{self.log_path.read_text(errors='replace')[-3000:]}"
            )

    def stop(self) -> int:
        """SIGTERM and wait (SIGKILL if it will not stop)."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)  # a paused process cannot handle SIGTERM
            self.proc.terminate()
            try:
                self.proc.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait()

    def pause(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)

    def rss(self) -> int:
        assert self.proc is not None
        try:
            return int(psutil.Process(self.proc.pid).memory_info().rss)
        except psutil.Error:
            return 0

    def log_lines(self) -> list[dict[str, Any]]:
        lines = []
        for start in range(1, self.starts + 1):
            lines.extend(json_lines(self.log_dir / f"{self.name}-{start}.log"))
        return lines


class Collector(Managed):
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
        self.spawn()

        def listening() -> bool:
            self.fail_if_dead()
            return bool(re.search(r'"collector_listening"', self.log_path.read_text()))

        wait_for("the collector to listen", listening, START_TIMEOUT_S)

    def create_token(self) -> str:
        token = cli(
            "tokens", "create", "--agent", "e2e-agent", "--workspace", "e2e", "--db", self.db
        )
        return token.strip()

    def session(self, session_id: str) -> dict[str, Any] | None:
        response = httpx.get(f"{self.url}/api/v1/sessions/{session_id}", timeout=30)
        if response.status_code == 404:
            return None
        response.raise_for_status()
        result: dict[str, Any] = response.json()
        return result

    def sessions_cli(self) -> dict[str, dict[str, Any]]:
        out = cli("sessions", "--collector-url", self.url, "--json")
        rows = [json.loads(line) for line in out.splitlines() if line.strip()]
        return {row["session_id"]: row for row in rows}

    def sequence_numbers_cli(self, session_id: str, limit: int) -> list[int]:
        out = cli(
            "logs",
            "--collector-url",
            self.url,
            "--session",
            session_id,
            "--json",
            "--limit",
            str(limit),
            timeout=120,
        )
        return [json.loads(line)["sequence_number"] for line in out.splitlines() if line.strip()]


class AgentProcess(Managed):
    """The agent: socket in a private directory, spool dir and metrics port kept across restarts."""

    def __init__(self, tmp: Path, sock_dir: Path, collector_url: str, token: str, *extra: str):
        self.socket_path = sock_dir / "agent.sock"
        self.metrics_port = free_port()
        env = {**os.environ, "BOUNDARY_AUDIT_AGENT_TOKEN": token}
        super().__init__(
            "agent",
            [
                "agent",
                "--socket",
                str(self.socket_path),
                "--collector-url",
                collector_url,
                "--spool-dir",
                str(tmp / "spool"),
                "--metrics-listen",
                f"127.0.0.1:{self.metrics_port}",
                "--flush-timeout",
                str(AGENT_FLUSH_TIMEOUT_S),
                *extra,
            ],
            tmp,
            env,
        )

    def start(self) -> None:
        self.spawn()

        def healthy() -> bool:
            self.fail_if_dead()
            try:
                return httpx.get(self._url("/healthz"), timeout=5).status_code == 200
            except httpx.HTTPError:
                return False

        wait_for("the agent to serve", healthy, START_TIMEOUT_S)

    def _url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.metrics_port}{path}"

    def metric(self, name: str, **labels: str) -> float:
        """One sample of the agent's /metrics (0 when absent)."""
        text = httpx.get(self._url("/metrics"), timeout=30).text
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == name and all(
                    sample.labels.get(k) == v for k, v in labels.items()
                ):
                    return float(sample.value)
        return 0.0


@pytest.fixture
def sock_dir() -> Iterator[Path]:
    # AF_UNIX paths are limited to ~107 bytes; pytest's tmp_path can be longer.
    with tempfile.TemporaryDirectory(prefix="ba-e2e-") as d:
        os.chmod(d, 0o700)
        yield Path(d)


@pytest.fixture
def collector(tmp_path: Path) -> Iterator[Collector]:
    c = Collector(tmp_path)
    c.start()
    yield c
    if c.alive():
        c.stop()


@pytest.fixture
def agent_token(collector: Collector) -> str:
    return collector.create_token()


@pytest.fixture
def agent(
    tmp_path: Path, sock_dir: Path, collector: Collector, agent_token: str
) -> Iterator[AgentProcess]:
    a = AgentProcess(tmp_path, sock_dir, collector.url, agent_token)
    a.start()
    yield a
    if a.alive():
        a.stop()


# -- confined clients -------------------------------------------------------------------
#: The confined command: N requests through the proxy on one keep-alive
#: connection, every fourth denied; progress written to a file every
#: PROGRESS_EVERY requests; at each checkpoint it waits for the test's
#: ``release-K`` file so chaos steps land in the middle of the traffic.
CLIENT_SCRIPT = r"""
import http.client, json, os, sys, time, urllib.parse
port, n, sync_dir, name, checkpoints = (
    int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4], int(sys.argv[5]))
PROGRESS_EVERY = 100
proxy = urllib.parse.urlsplit(os.environ["HTTP_PROXY"])
stops = {k * n // (checkpoints + 1): k for k in range(1, checkpoints + 1)}
def progress(done):
    tmp = os.path.join(sync_dir, f".{name}.tmp")
    with open(tmp, "w") as f:
        f.write(str(done))
    os.replace(tmp, os.path.join(sync_dir, f"progress-{name}"))
def hold(k):
    deadline = time.monotonic() + 120
    while not os.path.exists(os.path.join(sync_dir, f"release-{k}")):
        if time.monotonic() > deadline:
            sys.exit(f"checkpoint {k} never released")
        time.sleep(0.02)
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
class Client:
    """One ``boundary-audit run -- python -c CLIENT_SCRIPT`` and what it reported."""

    name: str
    n: int
    proc: subprocess.Popen[str]
    sync_dir: Path
    stderr_path: Path

    def progress(self) -> int:
        try:
            return int((self.sync_dir / f"progress-{self.name}").read_text() or 0)
        except (FileNotFoundError, ValueError):
            return 0

    def rss(self) -> int:
        try:
            return int(psutil.Process(self.proc.pid).memory_info().rss)
        except psutil.Error:
            return 0

    def finish(self, timeout: float = DELIVERY_TIMEOUT_S) -> ClientResult:
        stdout, _ = self.proc.communicate(timeout=timeout)
        stderr = self.stderr_path.read_text(errors="replace")
        assert self.proc.returncode == 0, (
            f"{self.name} exited {self.proc.returncode}: {stderr[-3000:]}"
        )
        counts = json.loads(stdout.strip().splitlines()[-1])
        summaries = [
            line for line in json_lines(self.stderr_path) if line.get("event") == "audit summary"
        ]
        assert len(summaries) == 1, f"{self.name}: no audit summary in {stderr[-3000:]}"
        return ClientResult(
            name=self.name,
            allowed=int(counts["allowed"]),
            denied=int(counts["denied"]),
            summary=summaries[0],
        )


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
    stderr_path = tmp / f"run-{name}.log"
    env = {**os.environ, "XDG_CONFIG_HOME": str(tmp / "config")}
    env.pop("BOUNDARY_ALLOW", None)
    with stderr_path.open("wb") as err:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "boundary_audit",
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
            ],
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
            env=env,
        )
    return Client(name, n, proc, sync_dir, stderr_path)


def release(clients: list[Client], checkpoint: int) -> None:
    (clients[0].sync_dir / f"release-{checkpoint}").touch()


def checkpoint_requests(client: Client, checkpoint: int, checkpoints: int) -> int:
    """Requests ``client`` makes before it holds at ``checkpoint`` (as the script computes)."""
    return checkpoint * client.n // (checkpoints + 1)


def wait_at_checkpoint(clients: list[Client], checkpoint: int, checkpoints: int) -> None:
    """Wait until every client has made its requests up to ``checkpoint`` and holds there."""

    def arrived() -> bool:
        for c in clients:
            if c.proc.poll() is not None:
                raise AssertionError(
                    f"{c.name} exited early: {c.stderr_path.read_text(errors='replace')[-3000:]}"
                )
        return all(c.progress() >= checkpoint_requests(c, checkpoint, checkpoints) for c in clients)

    wait_for(f"clients at checkpoint {checkpoint}", arrived, CHECKPOINT_TIMEOUT_S)

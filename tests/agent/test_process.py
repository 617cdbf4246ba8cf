"""The agent as a real process started by its CLI: SIGKILL, SIGTERM, memory."""

from __future__ import annotations

import os
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import psutil
import pytest

from boundary_audit.agent.config import CREDENTIAL_ENV
from boundary_audit.cli import main
from boundary_audit.wire import ReportBoundaryLogsRequest

from .collector_double import CollectorDouble
from .conftest import EVENTUALLY_S, logs_frame, new_session

pytestmark = pytest.mark.timeout(120)

#: The SIGKILL test's sender keeps this many recent frames and re-sends them
#: after reconnecting, as the lead's SocketAuditor does; it covers socket
#: buffers plus the agent's uncommitted group.
REPLAY_FRAMES = 2000
#: A paced sender sleeps this long every few frames, so a stream of 3000
#: frames lasts over a second and the kill lands mid-stream.
PACE_SLEEP_S = 0.002


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class AgentProcess:
    def __init__(self, directory: Path, collector: CollectorDouble, *extra: str) -> None:
        self.socket_path = directory / "agent.sock"
        self.spool_dir = directory / "spool"
        self.metrics_port = free_port()
        self.args = [
            sys.executable,
            "-m",
            "boundary_audit",
            "agent",
            "--socket",
            str(self.socket_path),
            "--collector-url",
            collector.url,
            "--spool-dir",
            str(self.spool_dir),
            "--metrics-listen",
            f"127.0.0.1:{self.metrics_port}",
            "--flush-timeout",
            "5",
            *extra,
        ]
        self.env = {**os.environ, CREDENTIAL_ENV: collector.state.token}
        self.stderr = directory / "agent.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.stderr.open("ab") as log:
            self.proc = subprocess.Popen(self.args, env=self.env, stderr=log)
        deadline = time.monotonic() + EVENTUALLY_S
        while not self._ready():
            if self.proc.poll() is not None:
                raise AssertionError(f"agent exited {self.proc.returncode}: {self.log()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"agent did not start: {self.log()}")
            time.sleep(0.05)

    def _ready(self) -> bool:
        try:
            return httpx.get(self.url("/healthz"), timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.metrics_port}{path}"

    def metric(self, line_prefix: str) -> float:
        for line in httpx.get(self.url("/metrics"), timeout=5).text.splitlines():
            if line.startswith(line_prefix + " "):
                return float(line.rsplit(" ", 1)[1])
        raise AssertionError(f"no metric line {line_prefix!r}")

    def log(self) -> str:
        return self.stderr.read_text(errors="replace")[-4000:]

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=EVENTUALLY_S)

    def terminate(self) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=EVENTUALLY_S)

    def ensure_stopped(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def agent_proc(short_dir: Path, collector: CollectorDouble) -> Iterator[AgentProcess]:
    proc = AgentProcess(short_dir, collector)
    yield proc
    proc.ensure_stopped()


def wait_for(predicate: Callable[[], object], what: str) -> None:
    deadline = time.monotonic() + EVENTUALLY_S
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def spooled_keys(spool_dir: Path) -> set[tuple[str, int]]:
    """What the spool file holds (committed), read the way the agent will."""
    db = sqlite3.connect(spool_dir / "spool.sqlite3")
    try:
        keys: set[tuple[str, int]] = set()
        for (payload,) in db.execute("SELECT payload FROM batches"):
            req = ReportBoundaryLogsRequest()
            req.ParseFromString(payload)
            keys.update((req.session_id, log.sequence_number) for log in req.logs)
        return keys
    finally:
        db.close()


class ReplayingSender(threading.Thread):
    """Writes frames in order; after a broken connection it reconnects and
    re-sends its last REPLAY_FRAMES frames, like the boundary-side sender."""

    def __init__(self, path: Path, frames: list[bytes], pace_every: int = 0) -> None:
        super().__init__(daemon=True)
        self.path = path
        self.frames = frames
        self.sent = 0
        self.reconnects = 0
        self.resume = threading.Event()
        self.resume.set()
        self.error: BaseException | None = None
        self.pace_every = pace_every

    def run(self) -> None:
        try:
            self._run()
        except BaseException as exc:
            self.error = exc

    def _run(self) -> None:
        sock = self._connect()
        while self.sent < len(self.frames):
            try:
                sock.sendall(self.frames[self.sent])
                self.sent += 1
                if self.pace_every and self.sent % self.pace_every == 0:
                    time.sleep(PACE_SLEEP_S)
            except OSError:
                sock.close()
                self.reconnects += 1
                self.resume.wait()
                sock = self._connect()
                self.sent = max(0, self.sent - REPLAY_FRAMES)
        sock.close()

    def _connect(self) -> socket.socket:
        deadline = time.monotonic() + 2 * EVENTUALLY_S
        while True:
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                s.connect(str(self.path))
                return s
            except OSError:
                s.close()
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)


def test_sigkill_mid_stream_loses_nothing_committed(
    agent_proc: AgentProcess, collector: CollectorDouble
) -> None:
    collector.stop()  # everything accepted stays in the spool
    agent_proc.start()
    session = new_session()
    frames = [logs_frame(session, i * 10, 10) for i in range(3000)]
    sender = ReplayingSender(agent_proc.socket_path, frames, pace_every=5)
    sender.resume.clear()  # after the kill, wait until told to reconnect
    sender.start()
    wait_for(
        lambda: agent_proc.metric("boundary_audit_agent_spool_events") >= 1000,
        "part of the stream to be committed",
    )
    agent_proc.kill()
    assert sender.sent < len(frames)  # killed mid-stream
    committed = spooled_keys(agent_proc.spool_dir)
    assert len(committed) >= 1000  # what the agent reported committed is on disk

    # Restart with the collector up: exactly what was committed arrives.
    collector.start()
    agent_proc.start()
    wait_for(lambda: collector.keys() >= committed, "committed events to reach the collector")
    wait_for(lambda: agent_proc.metric("boundary_audit_agent_spool_batches") == 0, "empty spool")
    assert collector.keys() == committed
    assert collector.state.duplicates == 0

    # The sender reconnects and replays its window: the rest arrives, once each.
    sender.resume.set()
    sender.join(timeout=2 * EVENTUALLY_S)
    assert sender.error is None
    assert sender.reconnects >= 1
    wait_for(lambda: collector.event_count() == 30_000, "all events")
    assert collector.keys() == {(session, s) for s in range(30_000)}
    assert agent_proc.terminate() == 0


def test_sigterm_stops_cleanly_after_forwarding(
    agent_proc: AgentProcess, collector: CollectorDouble
) -> None:
    agent_proc.start()
    session = new_session()
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.connect(str(agent_proc.socket_path))
        for i in range(100):
            s.sendall(logs_frame(session, i * 10, 10))
        assert agent_proc.terminate() == 0
    assert collector.order(session) == list(range(1000))
    log = agent_proc.log()
    assert '"agent stopped"' in log
    assert '"remaining_batches": 0' in log
    assert not agent_proc.socket_path.exists()


def test_memory_stays_flat_at_the_spool_bound(short_dir: Path, collector: CollectorDouble) -> None:
    collector.stop()
    proc = AgentProcess(short_dir, collector, "--spool-max-bytes", str(512 * 1024))
    try:
        proc.start()
        assert proc.proc is not None
        rss = psutil.Process(proc.proc.pid)
        session = new_session()
        frame = logs_frame(session, 0, 10)
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.connect(str(proc.socket_path))
            for _ in range(3000):  # ~3.6 MiB: fills the spool
                s.sendall(frame)
            wait_for(
                lambda: (
                    proc.metric('boundary_audit_agent_dropped_events_total{reason="spool_full"}')
                    > 0
                ),
                "spool_full drops",
            )
            baseline = rss.memory_info().rss
            for _ in range(15_000):  # ~18 MiB more, all refused
                s.sendall(frame)
        wait_for(
            lambda: proc.metric("boundary_audit_agent_events_received_total") == 180_000,
            "all frames read",
        )
        grown = rss.memory_info().rss - baseline
        # Refused frames are not kept: growth is a small fraction of the 18 MiB sent.
        assert grown < 8 * 1024 * 1024, grown
        assert proc.metric("boundary_audit_agent_spool_bytes") <= 512 * 1024 + 64 * 1024
        dropped = proc.metric('boundary_audit_agent_dropped_events_total{reason="spool_full"}')
        spooled = proc.metric("boundary_audit_agent_spool_events")
        assert dropped + spooled == 180_000
    finally:
        proc.ensure_stopped()


def test_cli_refuses_to_start_without_a_token(
    short_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(CREDENTIAL_ENV, raising=False)
    code = main(
        ["agent", "--socket", str(short_dir / "a.sock"), "--collector-url", "http://127.0.0.1:1"]
    )
    assert code == 2
    assert not (short_dir / "a.sock").exists()


def test_cli_refuses_a_world_writable_socket_mode(short_dir: Path) -> None:
    code = main(
        [
            "agent",
            "--socket",
            str(short_dir / "a.sock"),
            "--collector-url",
            "http://127.0.0.1:1",
            "--token",
            "t",
            "--socket-mode",
            "777",
        ]
    )
    assert code == 2


def test_cli_flags_win_over_environment(short_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from boundary_audit.agent.cli import config_from_args
    from boundary_audit.cli import build_parser

    monkeypatch.setenv("BOUNDARY_AUDIT_COLLECTOR_URL", "http://env-collector:1")
    monkeypatch.setenv(CREDENTIAL_ENV, "env-token")
    monkeypatch.setenv("BOUNDARY_AUDIT_SPOOL_DIR", str(short_dir / "env-spool"))
    monkeypatch.setenv("BOUNDARY_AUDIT_METRICS_LISTEN", "127.0.0.1:9999")
    monkeypatch.setenv("CODER_AGENT_BOUNDARY_LOG_PROXY_SOCKET_PATH", str(short_dir / "env.sock"))
    from_env = config_from_args(build_parser().parse_args(["agent"]))
    assert from_env.collector_url == "http://env-collector:1"
    assert from_env.token == "env-token"
    assert from_env.spool_dir == short_dir / "env-spool"
    assert from_env.metrics_listen == ("127.0.0.1", 9999)
    assert from_env.socket_path == short_dir / "env.sock"
    token_file = short_dir / "token"
    token_file.write_text("file-token\n")
    flags = config_from_args(
        build_parser().parse_args(
            [
                "agent",
                "--collector-url",
                "http://flag-collector:2",
                "--token-file",
                str(token_file),
                "--spool-dir",
                str(short_dir / "flag-spool"),
                "--metrics-listen",
                "[::1]:8888",
                "--socket",
                str(short_dir / "flag.sock"),
                "--allow-uid",
                "1000",
                "--allow-uid",
                "1001",
            ]
        )
    )
    assert flags.collector_url == "http://flag-collector:2"
    assert flags.token == "file-token"
    assert flags.spool_dir == short_dir / "flag-spool"
    assert flags.metrics_listen == ("::1", 8888)
    assert flags.socket_path == short_dir / "flag.sock"
    assert flags.allowed_uids == frozenset({1000, 1001})


def test_second_sigterm_exits_at_once_keeping_the_spool(
    agent_proc: AgentProcess, collector: CollectorDouble
) -> None:
    collector.stop()  # the flush would wait for the whole flush timeout
    agent_proc.start()
    session = new_session()
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.connect(str(agent_proc.socket_path))
        for i in range(10):
            s.sendall(logs_frame(session, i * 10, 10))
    wait_for(lambda: agent_proc.metric("boundary_audit_agent_spool_events") == 100, "spooled")
    assert agent_proc.proc is not None
    agent_proc.proc.send_signal(signal.SIGTERM)
    wait_for(lambda: "agent stopping" in agent_proc.log(), "the first signal to be handled")
    assert agent_proc.terminate() == 130
    assert len(spooled_keys(agent_proc.spool_dir)) == 100

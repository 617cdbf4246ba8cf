"""The agent as a real process started by its CLI: SIGKILL, SIGTERM, memory."""

from __future__ import annotations

import signal
import socket
import sqlite3
import threading
from pathlib import Path

import psutil
import pytest

from boundary_audit.agent.config import CREDENTIAL_ENV, DROP_REPORT_HEADROOM_BYTES
from boundary_audit.cli import main
from boundary_audit.wire import ReportBoundaryLogsRequest
from tests.support import EVENTUALLY_TIMEOUT_S, eventually
from tests.support.doubles import CollectorDouble
from tests.support.services import AgentProcess

from .helpers import logs_frame, new_session, sending

pytestmark = pytest.mark.timeout(120)

#: The SIGKILL test's sender keeps this many recent frames and re-sends them
#: after reconnecting, as the lead's SocketAuditor does; it covers socket
#: buffers plus the agent's uncommitted group.
REPLAY_FRAMES = 2000
#: Frames of the SIGKILL test's stream (10 events each).
STREAM_FRAMES = 3000
#: The sender holds after this many frames until the agent is stopped
#: (SIGSTOP), so the kill always lands mid-stream...
HOLD_AT_FRAMES = 150
#: ...with at least this many frames written into the stopped agent's socket
#: buffer (~20 KiB: far below what a Unix socket buffers), i.e. in flight.
IN_FLIGHT_FRAMES = 20
#: Events the agent must have committed before the kill.
COMMITTED_BEFORE_KILL = 1000
#: The memory test's spool bound: a few thousand frames fill it.
SPOOL_BOUND_BYTES = 512 * 1024


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
    """Writes frames in order; after a broken connection it waits for :attr:`resume`,
    reconnects and re-sends its last REPLAY_FRAMES frames, like the boundary-side sender.

    With ``hold_at`` it also stops once after that many frames, sets
    :attr:`held`, and goes on when :attr:`proceed` is set.
    """

    def __init__(self, path: Path, frames: list[bytes], hold_at: int | None = None) -> None:
        super().__init__(daemon=True)
        self.path = path
        self.frames = frames
        self.sent = 0
        self.reconnects = 0
        self.hold_at = hold_at
        self.held = threading.Event()
        self.proceed = threading.Event()
        self.resume = threading.Event()
        self.resume.set()
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self._run()
        except BaseException as exc:
            self.error = exc

    def _run(self) -> None:
        sock = self._connect()
        while self.sent < len(self.frames):
            if self.sent == self.hold_at:
                self.hold_at = None
                self.held.set()
                self.proceed.wait()
            try:
                sock.sendall(self.frames[self.sent])
                self.sent += 1
            except OSError:
                sock.close()
                self.reconnects += 1
                self.resume.wait()
                sock = self._connect()
                self.sent = max(0, self.sent - REPLAY_FRAMES)
        sock.close()

    def _connect(self) -> socket.socket:
        def connected() -> socket.socket | None:
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                s.connect(str(self.path))
            except OSError:
                s.close()
                return None
            return s

        sock = eventually(connected, "the agent's socket", within=2 * EVENTUALLY_TIMEOUT_S)
        assert sock is not None  # eventually returns only a truthy value
        return sock


def test_sigkill_mid_stream_loses_nothing_committed(
    agent_process: AgentProcess, collector_double: CollectorDouble
) -> None:
    collector_double.stop()  # everything accepted stays in the spool
    agent_process.start()
    session = new_session()
    frames = [logs_frame(session, i * 10, 10) for i in range(STREAM_FRAMES)]
    sender = ReplayingSender(agent_process.socket_path, frames, hold_at=HOLD_AT_FRAMES)
    sender.resume.clear()  # after the kill, wait until told to reconnect
    sender.start()
    eventually(sender.held.is_set, "the sender to reach its hold")
    eventually(
        lambda: agent_process.metric("boundary_audit_agent_spool_events") >= COMMITTED_BEFORE_KILL,
        "part of the stream to be committed",
    )
    # Frozen, the agent reads nothing more: what the sender writes now is in
    # flight in the socket buffer when the kill lands.
    agent_process.pause()
    sender.proceed.set()
    eventually(lambda: sender.sent >= HOLD_AT_FRAMES + IN_FLIGHT_FRAMES, "frames in flight")
    agent_process.kill()
    assert sender.sent < len(frames)  # killed mid-stream
    committed = spooled_keys(agent_process.spool_dir)
    # What the agent reported committed is on disk.
    assert len(committed) >= COMMITTED_BEFORE_KILL

    # Restart with the collector up: exactly what was committed arrives.
    collector_double.start()
    agent_process.start()
    eventually(
        lambda: collector_double.keys() >= committed, "committed events to reach the collector"
    )
    eventually(
        lambda: agent_process.metric("boundary_audit_agent_spool_batches") == 0, "empty spool"
    )
    assert collector_double.keys() == committed
    assert collector_double.state.duplicates == 0

    # The sender reconnects and replays its window: the rest arrives, once each.
    sender.resume.set()
    sender.join(timeout=2 * EVENTUALLY_TIMEOUT_S)
    assert sender.error is None
    assert sender.reconnects >= 1
    eventually(lambda: collector_double.event_count() == 30_000, "all events")
    assert collector_double.keys() == {(session, s) for s in range(30_000)}
    assert agent_process.stop() == 0


def test_sigterm_stops_cleanly_after_forwarding(
    agent_process: AgentProcess, collector_double: CollectorDouble
) -> None:
    agent_process.start()
    session = new_session()
    frames = [logs_frame(session, i * 10, 10) for i in range(100)]
    with sending(agent_process.socket_path, *frames):  # still open while the agent stops
        assert agent_process.stop() == 0
    assert collector_double.order(session) == list(range(1000))
    log = agent_process.log()
    assert '"agent stopped"' in log
    assert '"remaining_batches": 0' in log
    assert not agent_process.socket_path.exists()


def test_memory_stays_flat_at_the_spool_bound(
    sock_dir: Path, collector_double: CollectorDouble
) -> None:
    collector_double.stop()
    proc = AgentProcess(
        sock_dir,
        sock_dir,
        collector_double.url,
        collector_double.state.token,
        "--spool-max-bytes",
        str(SPOOL_BOUND_BYTES),
    )
    try:
        proc.start()
        assert proc.proc is not None
        rss = psutil.Process(proc.proc.pid)
        session = new_session()
        frame = logs_frame(session, 0, 10)
        with sending(proc.socket_path, *[frame] * 3000) as s:  # ~3.6 MiB: fills the spool
            eventually(
                lambda: (
                    proc.metric("boundary_audit_agent_dropped_events_total", reason="spool_full")
                    > 0
                ),
                "spool_full drops",
            )
            baseline = rss.memory_info().rss
            for _ in range(15_000):  # ~18 MiB more, all refused
                s.sendall(frame)
        eventually(
            lambda: proc.metric("boundary_audit_agent_events_received_total") == 180_000,
            "all frames read",
        )
        grown = rss.memory_info().rss - baseline
        # Refused frames are not kept: growth is a small fraction of the 18 MiB sent.
        assert grown < 8 * 1024 * 1024, grown
        spool_bytes = proc.metric("boundary_audit_agent_spool_bytes")
        assert spool_bytes <= SPOOL_BOUND_BYTES + DROP_REPORT_HEADROOM_BYTES
        dropped = proc.metric("boundary_audit_agent_dropped_events_total", reason="spool_full")
        spooled = proc.metric("boundary_audit_agent_spool_events")
        assert dropped + spooled == 180_000
    finally:
        proc.ensure_stopped()


def test_cli_refuses_to_start_without_a_token(
    sock_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(CREDENTIAL_ENV, raising=False)
    code = main(
        ["agent", "--socket", str(sock_dir / "a.sock"), "--collector-url", "http://127.0.0.1:1"]
    )
    assert code == 2
    assert not (sock_dir / "a.sock").exists()


def test_cli_refuses_a_world_writable_socket_mode(sock_dir: Path) -> None:
    code = main(
        [
            "agent",
            "--socket",
            str(sock_dir / "a.sock"),
            "--collector-url",
            "http://127.0.0.1:1",
            "--token",
            "t",
            "--socket-mode",
            "777",
        ]
    )
    assert code == 2


def test_cli_flags_win_over_environment(sock_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from boundary_audit.agent.cli import config_from_args
    from boundary_audit.cli import build_parser

    monkeypatch.setenv("BOUNDARY_AUDIT_COLLECTOR_URL", "http://env-collector:1")
    monkeypatch.setenv(CREDENTIAL_ENV, "env-token")
    monkeypatch.setenv("BOUNDARY_AUDIT_SPOOL_DIR", str(sock_dir / "env-spool"))
    monkeypatch.setenv("BOUNDARY_AUDIT_METRICS_LISTEN", "127.0.0.1:9999")
    monkeypatch.setenv("CODER_AGENT_BOUNDARY_LOG_PROXY_SOCKET_PATH", str(sock_dir / "env.sock"))
    from_env = config_from_args(build_parser().parse_args(["agent"]))
    assert from_env.collector_url == "http://env-collector:1"
    assert from_env.token == "env-token"
    assert from_env.spool_dir == sock_dir / "env-spool"
    assert from_env.metrics_listen == ("127.0.0.1", 9999)
    assert from_env.socket_path == sock_dir / "env.sock"
    token_file = sock_dir / "token"
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
                str(sock_dir / "flag-spool"),
                "--metrics-listen",
                "[::1]:8888",
                "--socket",
                str(sock_dir / "flag.sock"),
                "--allow-uid",
                "1000",
                "--allow-uid",
                "1001",
            ]
        )
    )
    assert flags.collector_url == "http://flag-collector:2"
    assert flags.token == "file-token"
    assert flags.spool_dir == sock_dir / "flag-spool"
    assert flags.metrics_listen == ("::1", 8888)
    assert flags.socket_path == sock_dir / "flag.sock"
    assert flags.allowed_uids == frozenset({1000, 1001})


def test_second_sigterm_exits_at_once_keeping_the_spool(
    agent_process: AgentProcess, collector_double: CollectorDouble
) -> None:
    collector_double.stop()  # the flush would wait for the whole flush timeout
    agent_process.start()
    session = new_session()
    with sending(agent_process.socket_path, *(logs_frame(session, i * 10, 10) for i in range(10))):
        pass
    eventually(lambda: agent_process.metric("boundary_audit_agent_spool_events") == 100, "spooled")
    assert agent_process.proc is not None
    agent_process.proc.send_signal(signal.SIGTERM)
    eventually(lambda: "agent stopping" in agent_process.log(), "the first signal to be handled")
    assert agent_process.stop() == 130
    assert len(spooled_keys(agent_process.spool_dir)) == 100

"""How fast one agent takes events from 4 concurrent senders, side by side with
what the senders alone can push into a socket.

Rows (all measured in this one run, same frames, same machine):

* senders only: 4 processes write into a Unix socket whose reader discards
  everything - the ceiling set by the senders and the kernel;
* agent, spool sync=normal / full: the same senders into a real agent process
  (group-committed SQLite spool, forwarding to a collector double on loopback);
* one busy SocketAuditor (the real sender, encoding as it goes) into a
  discarding reader and into the agent: the agent must not be its bottleneck.

Columns: events/s received into the spool (committed), events/s through to
the collector, agent CPU time per 1k events, agent peak RSS.

    .venv/bin/python benchmarks/bench_agent.py [--frames-per-sender N]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from multiprocessing.queues import Queue
from pathlib import Path

import httpx
import psutil
from rich.console import Console
from rich.table import Table

from boundary_audit.agent.config import CREDENTIAL_ENV
from boundary_audit.auditor import AuditEvent, SocketAuditor
from boundary_audit.wire import (
    BoundaryLog,
    BoundaryMessage,
    ReportBoundaryLogsRequest,
    encode_message,
)

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.support import eventually, free_port, stop_process
from tests.support.doubles import CollectorDouble
from tests.support.processes import cli_argv
from tests.support.services import wait_healthy

#: The issue's scenario: four busy senders on one workspace.
SENDERS = 4
#: Events per frame: the reference sender flushes at 10 events.
EVENTS_PER_FRAME = 10
#: Frames per sender by default: 4 x 10k x 10 = 400k events, ~seconds per row.
DEFAULT_FRAMES_PER_SENDER = 10_000
#: Poll interval while waiting for the agent's counters to reach the target.
POLL_S = 0.01
#: Give up on a row after this long (a broken build, not a slow one).
ROW_TIMEOUT_S = 300.0
#: Grace for the agent to flush and exit after SIGTERM at the end of a row.
AGENT_STOP_TIMEOUT_S = 60.0
#: The SocketAuditor row audits this many events...
AUDITOR_EVENTS = 200_000
#: ...waiting for delivery every this many, half its default queue, so the
#: row measures sustained delivery rather than queue overflow.
AUDITOR_FLUSH_EVERY = 4096


def build_frames(session: str, frames: int) -> list[bytes]:
    out = []
    now = time.time_ns()
    for f in range(frames):
        req = ReportBoundaryLogsRequest(session_id=session, confined_process_name="bench")
        for i in range(EVENTS_PER_FRAME):
            seq = f * EVENTS_PER_FRAME + i
            log = BoundaryLog(allowed=True, sequence_number=seq)
            log.time.FromNanoseconds(now + seq)
            log.http_request.method = "GET"
            log.http_request.url = f"https://registry.example.test/pkg/{seq}/index.json"
            log.http_request.matched_rule = "domain=registry.example.test"
            req.logs.append(log)
        out.append(encode_message(BoundaryMessage(logs=req)))
    return out


def sender(
    path: str, frames: list[bytes], connected: Queue[int], start: mp.synchronize.Event
) -> None:
    """One busy sender: one connection, one write per frame, as fast as it can."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(path)
    connected.put(os.getpid())
    start.wait()
    for frame in frames:
        s.sendall(frame)
    s.close()


def run_senders(path: Path, per_sender: list[list[bytes]]) -> float:
    """Start the senders together; return when all have written everything."""
    ctx = mp.get_context("fork")
    start = ctx.Event()
    connected: Queue[int] = ctx.Queue()
    procs = [ctx.Process(target=sender, args=(str(path), f, connected, start)) for f in per_sender]
    for p in procs:
        p.start()
    for _ in procs:
        connected.get(timeout=ROW_TIMEOUT_S)  # all connected and waiting
    t0 = time.perf_counter()
    start.set()
    for p in procs:
        p.join()
    return t0


@dataclass
class Row:
    name: str
    received_eps: float
    forwarded_eps: float | None
    cpu_ms_per_1k: float | None
    peak_rss_mib: float | None


def sink_row(per_sender: list[list[bytes]], workdir: Path) -> Row:
    """Senders into a socket whose reader threads discard everything."""
    path = workdir / "sink.sock"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    listener.listen(SENDERS)
    total_bytes = sum(len(f) for frames in per_sender for f in frames)
    received = [0]
    lock = threading.Lock()
    done = threading.Event()

    def drain(conn: socket.socket) -> None:
        while chunk := conn.recv(1 << 16):
            with lock:
                received[0] += len(chunk)
                if received[0] >= total_bytes:
                    done.set()
        conn.close()

    def accept() -> None:
        for _ in range(SENDERS):
            conn, _ = listener.accept()
            threading.Thread(target=drain, args=(conn,), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    t0 = run_senders(path, per_sender)
    done.wait(ROW_TIMEOUT_S)
    elapsed = time.perf_counter() - t0
    listener.close()
    events = sum(len(frames) for frames in per_sender) * EVENTS_PER_FRAME
    return Row("4 senders only (reader discards)", events / elapsed, None, None, None)


def metric(client: httpx.Client, name: str) -> float:
    for line in client.get("/metrics").text.splitlines():
        if line.startswith(name + " "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def start_agent(
    workdir: Path, sync: str, collector: CollectorDouble
) -> tuple[subprocess.Popen[bytes], httpx.Client, Path]:
    sock_path = workdir / f"agent-{sync}.sock"
    port = free_port()
    env = {**os.environ, CREDENTIAL_ENV: collector.state.token}
    spool_dir = workdir / f"spool-{sync}-{time.monotonic_ns()}"
    proc = subprocess.Popen(
        cli_argv(
            "--log-level",
            "warning",
            "agent",
            "--socket",
            str(sock_path),
            "--collector-url",
            collector.url,
            "--spool-dir",
            str(spool_dir),
            "--spool-sync",
            sync,
            "--metrics-listen",
            f"127.0.0.1:{port}",
        ),
        env=env,
    )
    wait_healthy(f"http://127.0.0.1:{port}/healthz", proc, "the agent", within=ROW_TIMEOUT_S)
    client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10)
    return proc, client, sock_path


def wait_delivered(
    client: httpx.Client, collector: CollectorDouble | None, events: int
) -> tuple[float, float | None]:
    """perf_counter times when the spool, then the collector (if any), had all ``events``."""
    received_at: float | None = None
    forwarded_at: float | None = None

    def delivered() -> bool:
        nonlocal received_at, forwarded_at
        now = time.perf_counter()
        spooled = metric(client, "boundary_audit_agent_events_spooled_total")
        if received_at is None and spooled >= events:
            received_at = now
        if collector is None:
            return received_at is not None
        if collector.event_count() >= events:
            received_at = now if received_at is None else received_at
            forwarded_at = now
            return True
        return False

    eventually(delivered, "the agent to take all events", within=ROW_TIMEOUT_S, interval=POLL_S)
    assert received_at is not None
    return received_at, forwarded_at


def agent_row(
    per_sender: list[list[bytes]] | None, workdir: Path, sync: str, forward: bool = True
) -> Row:
    """Senders (pre-encoded frames), or one SocketAuditor when None, into an agent.

    With ``forward`` False the collector is down, so the row measures
    receiving into the spool without forwarding competing for the CPUs.
    """
    collector = CollectorDouble()
    collector.start()
    proc, client, sock_path = start_agent(workdir, sync, collector)
    if not forward:
        collector.stop()
    try:
        ps = psutil.Process(proc.pid)
        cpu0 = ps.cpu_times()
        if per_sender is not None:
            name = f"agent, spool sync={sync}"
            events = sum(len(frames) for frames in per_sender) * EVENTS_PER_FRAME
            t0 = run_senders(sock_path, per_sender)
        else:
            t0 = time.perf_counter()
            _, dropped = run_auditor(sock_path)
            name = f"1 SocketAuditor -> agent, sync={sync} ({dropped} dropped)"
            if not forward:
                name += ", collector down"
            events = AUDITOR_EVENTS - dropped
        received_at, forwarded_at = wait_delivered(client, collector if forward else None, events)
        cpu1 = ps.cpu_times()
        cpu_s = (cpu1.user - cpu0.user) + (cpu1.system - cpu0.system)
        peak_kib = 0
        for line in Path(f"/proc/{proc.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                peak_kib = int(line.split()[1])
        return Row(
            name,
            events / (received_at - t0),
            None if forwarded_at is None else events / (forwarded_at - t0),
            cpu_s / events * 1000 * 1000,
            peak_kib / 1024,
        )
    finally:
        client.close()
        stop_process(proc, AGENT_STOP_TIMEOUT_S)
        collector.stop()


def auditor_worker(path: str, events: int, result: mp.connection.Connection) -> None:
    """A busy proxy: audit flat out, letting the sender deliver every few thousand."""
    event = AuditEvent(
        "GET",
        "https://registry.example.test/pkg/index.json",
        "registry.example.test",
        True,
        "domain=registry.example.test",
    )
    with SocketAuditor(path, confined_process_name="bench", batch_interval=0.01) as auditor:
        t0 = time.perf_counter()
        for i in range(events):
            auditor.audit(event)
            if i % AUDITOR_FLUSH_EVERY == AUDITOR_FLUSH_EVERY - 1:
                auditor.flush(ROW_TIMEOUT_S)
        auditor.flush(ROW_TIMEOUT_S)
        elapsed = time.perf_counter() - t0
        result.send((elapsed, auditor.stats.dropped_total))


def run_auditor(path: Path) -> tuple[float, int]:
    ctx = mp.get_context("fork")
    parent, child = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=auditor_worker, args=(str(path), AUDITOR_EVENTS, child))
    proc.start()
    elapsed, dropped = parent.recv()
    proc.join()
    return float(elapsed), int(dropped)


def auditor_sink_row(workdir: Path) -> Row:
    path = workdir / "auditor-sink.sock"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    listener.listen(1)

    def serve() -> None:
        conn, _ = listener.accept()
        while conn.recv(1 << 16):
            pass  # discard: this row measures the sender alone
        conn.close()

    threading.Thread(target=serve, daemon=True).start()
    elapsed, dropped = run_auditor(path)
    listener.close()
    return Row(
        f"1 SocketAuditor only (reader discards; {dropped} dropped)",
        (AUDITOR_EVENTS - dropped) / elapsed,
        None,
        None,
        None,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames-per-sender", type=int, default=DEFAULT_FRAMES_PER_SENDER)
    args = parser.parse_args()
    console = Console(width=120)
    console.print(f"building {SENDERS} x {args.frames_per_sender} frames ...")
    per_sender = [
        build_frames(f"00000000-0000-4000-8000-{i:012d}", args.frames_per_sender)
        for i in range(SENDERS)
    ]
    workdir = Path(tempfile.mkdtemp(prefix="ba-bench-"))
    try:
        rows = [sink_row(per_sender, workdir)]
        for sync in ("normal", "full"):
            rows.append(agent_row(per_sender, workdir, sync))
        rows.append(auditor_sink_row(workdir))
        rows.append(agent_row(None, workdir, "normal"))
        rows.append(agent_row(None, workdir, "normal", forward=False))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    events = SENDERS * args.frames_per_sender * EVENTS_PER_FRAME
    table = Table(
        title=f"agent ingest: {SENDERS} senders x {args.frames_per_sender} frames "
        f"x {EVENTS_PER_FRAME} events = {events:,} events ({os.cpu_count()} CPUs)"
    )
    table.add_column("setup")
    table.add_column("received events/s", justify="right")
    table.add_column("to collector events/s", justify="right")
    table.add_column("agent CPU ms / 1k events", justify="right")
    table.add_column("agent peak RSS MiB", justify="right")
    for row in rows:
        table.add_row(
            row.name,
            f"{row.received_eps:,.0f}",
            "-" if row.forwarded_eps is None else f"{row.forwarded_eps:,.0f}",
            "-" if row.cpu_ms_per_1k is None else f"{row.cpu_ms_per_1k:.2f}",
            "-" if row.peak_rss_mib is None else f"{row.peak_rss_mib:.0f}",
        )
    console.print(table)


if __name__ == "__main__":
    main()

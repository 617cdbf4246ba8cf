"""Soak: a steady load through the whole pipeline, every process real and separate.

    senders ═unix socket═▶ agent ─HTTP─▶ collector ─▶ SQLite

``--mode direct`` (default): K sender processes, each a real ``SocketAuditor``
auditing events at a paced rate (``--rate`` events/s in total): the fastest
way to stress agent and collector. ``--mode proxy``: K ``boundary-audit run``
processes, each confining a small HTTP client that makes requests through
the proxy to a local upstream at a paced rate (the true pipeline; every
request is one audit event, a mix of allowed and denied).

The collector and the agent are ``python -m boundary_audit collector|agent``
processes on loopback, with a fresh SQLite database, a token from ``tokens
create`` and a spool in a temporary directory. After ``--duration`` seconds
of load the pipeline is given time to drain; then the script prints events/s
at each stage, end-to-end latency (event time to stored, from the database),
drops by reason at every stage, peak RSS and CPU of every process, and a
verdict: generated == stored + reported drops (nothing lost silently).

    .venv/bin/python benchmarks/soak.py [--mode direct|proxy] [--duration 60 | --quick]
        [--rate EVENTS_PER_S] [--senders K] [--max-events N] [--pause-agent SECONDS] [--keep]

``--pause-agent N`` freezes the agent (SIGSTOP) for N seconds a third into the
load: the senders' queues overflow, and the verdict checks that every drop
was reported through the agent to the collector.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import multiprocessing as mp
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from multiprocessing.connection import Connection
from multiprocessing.synchronize import Event as EventLike
from pathlib import Path
from typing import Any

import httpx
import psutil
from prometheus_client.parser import text_string_to_metric_families
from rich.console import Console
from rich.table import Table

from boundary_audit.agent.config import CREDENTIAL_ENV
from boundary_audit.auditor import AuditEvent, SocketAuditor
from boundary_audit.logs import configure_logging

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.support import eventually, free_port, stop_process
from tests.support.processes import cli_argv
from tests.support.services import wait_healthy

#: Default load length; long enough for several spool commits, forward
#: batches and collector transactions per second to average out.
DEFAULT_DURATION_S = 60.0
#: ``--quick``: a smoke run of the whole pipeline.
QUICK_DURATION_S = 10.0
#: Upper bound on ``--duration``: a soak is bounded, never an accidental
#: all-night loop on a shared machine.
MAX_DURATION_S = 3600.0
#: Default total rate in direct mode: a busy workspace (several agents at
#: tens of requests per second each, times a hundred) while leaving CPU for
#: the agent and collector on two shared cores.
DEFAULT_DIRECT_RATE = 5000.0
#: Default total rate in proxy mode: each request crosses a proxy (about
#: 1,700 req/s for one kept-alive client on this machine, see bench_proxy),
#: so a few hundred per second is a steady, not saturating, load.
DEFAULT_PROXY_RATE = 400.0
#: Default number of concurrent senders (the issue's four confined commands).
DEFAULT_SENDERS = 4
#: Hard cap on events generated per run, whatever rate x duration says.
DEFAULT_MAX_EVENTS = 2_000_000
#: Pacing tick: events due are issued in bursts this far apart; 10 ms keeps
#: the rate smooth without waking a sender thousands of times a second.
PACE_TICK_S = 0.01
#: One event in this many is denied (a mix like a real agent's traffic).
DENY_EVERY = 5
#: How often the sampler scrapes /metrics and RSS; one second gives a
#: per-second timeline at negligible cost.
SAMPLE_S = 1.0
#: Rows of the timeline table: enough to see a trend (a growing backlog or
#: RSS), few enough to read; 60 s of load gives 10-second windows.
TIMELINE_ROWS = 7
#: How long the pipeline may take to deliver what was generated after the
#: load stops before the run is reported as not drained.
DRAIN_TIMEOUT_S = 120.0
#: Stored count unchanged this long with an empty spool = drained (what is
#: still missing was dropped or is stuck, and the tables will say which).
DRAIN_QUIET_S = 5.0
#: Waiting for a process to answer /healthz; a broken build, not a slow one.
START_TIMEOUT_S = 30.0
#: Grace for SIGTERM before SIGKILL when stopping a component.
STOP_TIMEOUT_S = 30.0
#: How long a sender keeps delivering queued events at close.
SENDER_CLOSE_TIMEOUT_S = 30.0
#: Extra time a ``run`` process gets beyond ``--duration`` to finish.
RUN_EXIT_GRACE_S = 60.0
#: Rules given to ``run`` in proxy mode: /allowed/* passes, the rest is denied.
PROXY_ALLOW_RULE = "domain=127.0.0.1 path=/allowed/*"
#: Bytes in each upstream response body: a small API-like reply.
UPSTREAM_BODY = b'{"ok":true}\n'
#: Percentiles of end-to-end latency shown.
PERCENTILES = (50.0, 90.0, 99.0)
#: Sessions asked for per page of the collector's session list (its page cap).
SESSIONS_PAGE = 1000
#: Nanoseconds per millisecond, for latency display.
NS_PER_MS = 1_000_000
#: Poll interval while a process starts listening: prompt, and cheap.
START_POLL_S = 0.05
#: Poll interval while the pipeline drains: a few scrapes per second.
DRAIN_POLL_S = 0.2
#: Timeout of a /metrics or /healthz request: a frozen or overloaded process
#: should cost the sampler one missed point, not seconds of RSS samples.
SCRAPE_TIMEOUT_S = 2.0
#: The confined client's socket timeout: far above any proxied request here,
#: so only a hung proxy trips it (counted as a client error).
CLIENT_TIMEOUT_S = 30
#: Console width: wide enough for the tables without folding.
CONSOLE_WIDTH = 140


#: One /metrics scrape: {(sample name, sorted label pairs): value}.
Metrics = dict[tuple[str, tuple[tuple[str, str], ...]], float]


# -- small helpers -------------------------------------------------------------------
def scrape(client: httpx.Client) -> Metrics:
    """One /metrics scrape; empty when the process does not answer."""
    try:
        text = client.get("/metrics").text
    except httpx.HTTPError:
        return {}
    out: Metrics = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def total(metrics: Metrics, name: str) -> float:
    """Sum of a metric over all its label values."""
    return sum(v for (n, _), v in metrics.items() if n == name)


def by_label(metrics: Metrics, name: str, label: str) -> dict[str, float]:
    out: dict[str, float] = defaultdict(float)
    for (n, labels), v in metrics.items():
        if n == name:
            out[dict(labels).get(label, "")] += v
    return dict(out)


# -- load generators -------------------------------------------------------------------
@dataclass(frozen=True)
class Load:
    """What the senders are asked to do, all of them together."""

    senders: int
    rate: float
    duration: float
    limit: int

    @property
    def rate_each(self) -> float:
        return self.rate / self.senders

    def share(self, index: int) -> int:
        """Sender ``index``'s part of the event cap."""
        return self.limit // self.senders + (1 if index < self.limit % self.senders else 0)


def paced(rate: float, duration: float, limit: int) -> Iterator[int]:
    """Yield how many events are due at each tick, for ``duration`` s or ``limit`` events."""
    t0 = time.monotonic()
    issued = 0
    while issued < limit:
        elapsed = time.monotonic() - t0
        if elapsed >= duration:
            return
        due = min(limit, int(elapsed * rate) + 1) - issued
        if due > 0:
            yield due
            issued += due
        time.sleep(PACE_TICK_S)


def direct_sender(socket_path: str, index: int, load: Load, go: EventLike, out: Connection) -> None:
    """One process auditing events at its share of the rate through a real SocketAuditor."""
    log = (Path(socket_path).parent.parent / f"sender-{index}.log").open("a")
    configure_logging("info", "json", log)  # the auditor's warnings, kept out of the tables
    session = uuid.uuid4()
    host = f"svc{index}.soak.test"
    auditor = SocketAuditor(
        socket_path,
        session_id=session,
        confined_process_name=f"soak-direct-{index}",
        close_timeout=SENDER_CLOSE_TIMEOUT_S,
    )
    out.send("ready")
    go.wait()
    generated = 0
    for due in paced(load.rate_each, load.duration, load.share(index)):
        for _ in range(due):
            allowed = generated % DENY_EVERY != 0
            path = "allowed" if allowed else "denied"
            auditor.audit(
                AuditEvent(
                    "GET",
                    f"https://{host}/{path}/{generated}",
                    host,
                    allowed,
                    f"domain={host} path=/allowed/*" if allowed else None,
                )
            )
            generated += 1
    out.send("generated")
    auditor.close()
    stats = auditor.stats
    out.send(
        {
            "generated": generated,
            "sent": stats.sent,
            "dropped": dict(stats.dropped),
            "undelivered": stats.undelivered,
        }
    )
    out.close()


class _Upstream(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, so the proxy reuses its upstream connection
    # Headers and body are two writes; with Nagle the second waits for the
    # proxy's delayed ACK (~40 ms), which would cap each client near 25 req/s.
    disable_nagle_algorithm = True

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(UPSTREAM_BODY)))
        self.end_headers()
        self.wfile.write(UPSTREAM_BODY)

    def log_message(self, format: str, *args: Any) -> None:
        """Silence per-request lines: at hundreds per second they would be the load."""


def upstream_server(port: int) -> None:
    ThreadingHTTPServer(("127.0.0.1", port), _Upstream).serve_forever()


#: The confined client in proxy mode: paced GETs through $HTTP_PROXY on one
#: kept-alive connection, a JSON summary on stdout at the end.
PROXY_CLIENT = textwrap.dedent(
    """
    import http.client, json, os, sys, time, urllib.parse
    upstream, rate, duration, limit, deny_every, tick, timeout = sys.argv[1:8]
    rate, duration, limit = float(rate), float(duration), int(limit)
    deny_every, tick, timeout = int(deny_every), float(tick), float(timeout)
    proxy = urllib.parse.urlsplit(os.environ["HTTP_PROXY"])
    conn = None
    made = 0
    statuses = {}
    errors = 0
    t0 = time.monotonic()
    while made < limit and time.monotonic() - t0 < duration:
        due = min(limit, int((time.monotonic() - t0) * rate) + 1) - made
        for _ in range(max(0, due)):
            if time.monotonic() - t0 >= duration:
                break
            kind = "denied" if made % deny_every == 0 else "allowed"
            try:
                if conn is None:
                    conn = http.client.HTTPConnection(proxy.hostname, proxy.port, timeout=timeout)
                conn.request("GET", f"http://{upstream}/{kind}/{made}")
                resp = conn.getresponse()
                resp.read()
                statuses[resp.status] = statuses.get(resp.status, 0) + 1
                if resp.will_close:
                    conn.close()
                    conn = None
            except OSError:
                errors += 1
                conn = None
            made += 1
        time.sleep(tick)
    print(json.dumps({"requests": made, "statuses": statuses, "errors": errors}))
    """
)


@dataclass
class SenderResult:
    name: str
    generated: int = 0
    sent: int = 0
    dropped: dict[str, int] = field(default_factory=dict)
    undelivered: int = 0
    note: str = ""


@dataclass
class LoadResult:
    """What the senders did, and agent/collector metrics at both ends of the load window."""

    senders: list[SenderResult]
    agent_start: Metrics
    collector_start: Metrics
    seconds: float = 0.0
    agent_end: Metrics = field(default_factory=dict)
    collector_end: Metrics = field(default_factory=dict)

    @property
    def generated(self) -> int:
        return sum(s.generated for s in self.senders)

    @property
    def undelivered(self) -> int:
        return sum(s.undelivered for s in self.senders)

    @property
    def expected_stored(self) -> int:
        """What should reach the collector: generated less what senders dropped or gave up."""
        return sum(s.generated - sum(s.dropped.values()) - s.undelivered for s in self.senders)


# -- processes and sampling ------------------------------------------------------------
@dataclass
class Watched:
    name: str
    pid: int
    peak_rss: int = 0
    cpu_s: float = 0.0


class Sampler:
    """Every SAMPLE_S: RSS and CPU of each watched process, agent and collector metrics."""

    def __init__(self, agent: httpx.Client, collector: httpx.Client) -> None:
        self.agent = agent
        self.collector = collector
        self.watched: list[Watched] = []
        #: (seconds since start, agent metrics, collector metrics, RSS by process name)
        self.timeline: list[tuple[float, Metrics, Metrics, dict[str, int]]] = []
        self._procs: dict[int, psutil.Process] = {}
        self._parents: dict[int, str] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def watch(self, name: str, pid: int, *, children: bool = False) -> None:
        """Sample ``pid``; with ``children``, also every process it starts, as found."""
        with self._lock, contextlib.suppress(psutil.Error):
            self._procs[pid] = psutil.Process(pid)
            self.watched.append(Watched(name, pid))
            if children:
                self._parents[pid] = name

    def _find_children(self) -> None:
        """Pick up processes the watched parents started (a confined client under ``run``)."""
        for pid, name in list(self._parents.items()):
            with contextlib.suppress(psutil.Error):
                for child in self._procs[pid].children(recursive=True):
                    if child.pid not in self._procs:
                        self.watch(f"{name} > {child.name()}", child.pid)

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self.sample_processes()

    def sample_processes(self) -> dict[str, int]:
        """Update peaks and CPU times; return the current RSS of each live process."""
        self._find_children()
        now: dict[str, int] = {}
        with self._lock:
            for w in self.watched:
                proc = self._procs[w.pid]
                with contextlib.suppress(psutil.Error):  # exited: keep the last sample
                    with proc.oneshot():
                        now[w.name] = proc.memory_info().rss
                        cpu = proc.cpu_times()
                    w.peak_rss = max(w.peak_rss, now[w.name])
                    w.cpu_s = cpu.user + cpu.system
        return now

    def _run(self) -> None:
        t0 = time.monotonic()
        while not self._stop.wait(SAMPLE_S):
            rss = self.sample_processes()
            self.timeline.append(
                (time.monotonic() - t0, scrape(self.agent), scrape(self.collector), rss)
            )


@dataclass
class Pipeline:
    workdir: Path
    db_path: Path
    socket_path: Path
    collector: subprocess.Popen[bytes]
    agent: subprocess.Popen[bytes]
    collector_http: httpx.Client
    agent_http: httpx.Client


def component(args: list[str], log: Path, env: Mapping[str, str]) -> subprocess.Popen[bytes]:
    with log.open("ab") as stderr:
        return subprocess.Popen(
            cli_argv(*args),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            env=dict(env),
        )


def start_pipeline(workdir: Path) -> Pipeline:
    db_path = workdir / "collector.db"
    db_url = f"sqlite:///{db_path}"
    token = subprocess.run(
        cli_argv(
            "tokens", "create", "--agent", "soak-agent", "--workspace", "soak", "--db", db_url
        ),
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    env = {k: v for k, v in os.environ.items() if not k.startswith("BOUNDARY_AUDIT_")}
    collector_port = free_port()
    collector = component(
        ["collector", "--db", db_url, "--listen", f"127.0.0.1:{collector_port}"],
        workdir / "collector.log",
        env,
    )
    collector_http = httpx.Client(
        base_url=f"http://127.0.0.1:{collector_port}", timeout=SCRAPE_TIMEOUT_S
    )
    wait_healthy(
        f"http://127.0.0.1:{collector_port}/healthz", collector, "collector", START_TIMEOUT_S
    )
    socket_path = workdir / "run" / "agent.sock"
    socket_path.parent.mkdir(mode=0o700)
    agent_port = free_port()
    agent = component(
        [
            "agent",
            "--socket",
            str(socket_path),
            "--collector-url",
            f"http://127.0.0.1:{collector_port}",
            "--spool-dir",
            str(workdir / "spool"),
            "--metrics-listen",
            f"127.0.0.1:{agent_port}",
        ],
        workdir / "agent.log",
        {**env, CREDENTIAL_ENV: token},
    )
    agent_http = httpx.Client(base_url=f"http://127.0.0.1:{agent_port}", timeout=SCRAPE_TIMEOUT_S)
    wait_healthy(f"http://127.0.0.1:{agent_port}/healthz", agent, "agent", START_TIMEOUT_S)
    return Pipeline(workdir, db_path, socket_path, collector, agent, collector_http, agent_http)


def run_direct(pipe: Pipeline, sampler: Sampler, load: Load) -> LoadResult:
    """K SocketAuditor processes; the window runs from a common start to the last event."""
    ctx = mp.get_context("spawn")  # no inherited sampler threads or sockets
    go = ctx.Event()
    jobs = []
    for i in range(load.senders):
        parent, child = ctx.Pipe(duplex=False)
        proc = ctx.Process(target=direct_sender, args=(str(pipe.socket_path), i, load, go, child))
        proc.start()
        child.close()
        assert proc.pid is not None
        sampler.watch(f"sender {i}", proc.pid)
        jobs.append((proc, parent))
    for _, parent in jobs:
        parent.recv()  # "ready": imported, auditor made
    window = LoadResult([], scrape(pipe.agent_http), scrape(pipe.collector_http))
    t0 = time.monotonic()
    go.set()
    for _, parent in jobs:
        with contextlib.suppress(EOFError):  # a dead sender is reported below
            parent.recv()  # "generated"
    window.seconds = time.monotonic() - t0
    window.agent_end, window.collector_end = scrape(pipe.agent_http), scrape(pipe.collector_http)
    for i, (proc, parent) in enumerate(jobs):
        try:
            r: dict[str, Any] = parent.recv()
        except EOFError:
            proc.join()
            window.senders.append(SenderResult(f"sender {i}", note=f"died ({proc.exitcode})"))
            continue
        proc.join()
        window.senders.append(
            SenderResult(f"sender {i}", r["generated"], r["sent"], r["dropped"], r["undelivered"])
        )
    return window


def run_proxy(pipe: Pipeline, sampler: Sampler, load: Load) -> LoadResult:
    """K ``run`` processes; the window runs from their start to the last client's exit."""
    ctx = mp.get_context("spawn")
    up_port = free_port()
    upstream = ctx.Process(target=upstream_server, args=(up_port,), daemon=True)
    upstream.start()
    assert upstream.pid is not None
    sampler.watch("upstream", upstream.pid)

    def listening() -> bool:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", up_port)):
            return True
        return False

    eventually(listening, "the upstream to listen", within=START_TIMEOUT_S, interval=START_POLL_S)
    env = {k: v for k, v in os.environ.items() if not k.startswith("BOUNDARY_AUDIT_")}
    env.pop("DISABLE_AUDIT_LOGS", None)
    runs = []
    window = LoadResult([], scrape(pipe.agent_http), scrape(pipe.collector_http))
    t0 = time.monotonic()
    try:
        for i in range(load.senders):
            log = pipe.workdir / f"run-{i}.log"
            with log.open("wb") as stderr:
                proc = subprocess.Popen(
                    cli_argv(
                        "run",
                        "--allow",
                        PROXY_ALLOW_RULE,
                        "--audit-socket",
                        str(pipe.socket_path),
                        "--process-name",
                        f"soak-proxy-{i}",
                        # The per-request stderr lines would go to a file nobody
                        # reads; the summary line (run's own log) is still there.
                        "--audit-log-level",
                        "error",
                        "--audit-flush-timeout",
                        str(SENDER_CLOSE_TIMEOUT_S),
                        "--ca-dir",
                        str(pipe.workdir / "ca"),
                        "--",
                        sys.executable,
                        "-c",
                        PROXY_CLIENT,
                        f"127.0.0.1:{up_port}",
                        str(load.rate_each),
                        str(load.duration),
                        str(load.share(i)),
                        str(DENY_EVERY),
                        str(PACE_TICK_S),
                        str(CLIENT_TIMEOUT_S),
                    ),
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.PIPE,
                    stderr=stderr,
                    env=env,
                )
            sampler.watch(f"run {i}", proc.pid, children=True)
            runs.append((proc, log))
        for i, (proc, log) in enumerate(runs):
            out, _ = proc.communicate(timeout=load.duration + RUN_EXIT_GRACE_S)
            window.senders.append(proxy_result(f"run {i}", proc.returncode, out, log))
        window.seconds = time.monotonic() - t0
        window.agent_end = scrape(pipe.agent_http)
        window.collector_end = scrape(pipe.collector_http)
        return window
    finally:
        for proc, _ in runs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        upstream.terminate()
        upstream.join()


def proxy_result(name: str, code: int, stdout: bytes, log: Path) -> SenderResult:
    """The client's request count (stdout) and run's own ``audit summary`` (stderr)."""
    result = SenderResult(name)
    try:
        client = json.loads(stdout.decode().strip().splitlines()[-1])
        result.generated = int(client["requests"])
        statuses = ", ".join(f"{k}: {v}" for k, v in sorted(client["statuses"].items()))
        result.note = f"HTTP {statuses}; {client['errors']} client errors"
    except (ValueError, IndexError, KeyError):
        result.note = f"client printed no summary (exit {code})"
    for line in log.read_text(errors="replace").splitlines():
        with contextlib.suppress(ValueError):
            record = json.loads(line)
            if isinstance(record, dict) and record.get("event") == "audit summary":
                result.sent = int(record["sent_to_agent"])
                result.dropped = {"dropped (run summary)": int(record["dropped"])}
                result.undelivered = int(record["undelivered"])
    if code != 0:
        result.note += f"; run exited {code}"
    return result


def pause_agent(agent: subprocess.Popen[bytes], after: float, seconds: float) -> None:
    """Freeze the agent mid-load: senders' queues fill and drop, which must be reported."""
    time.sleep(after)
    with contextlib.suppress(ProcessLookupError):
        agent.send_signal(signal.SIGSTOP)
        time.sleep(seconds)
        agent.send_signal(signal.SIGCONT)


# -- drain and report ------------------------------------------------------------------
def drain(pipe: Pipeline, expected: int) -> tuple[float, bool]:
    """Wait until the collector has ``expected`` events or nothing moves with an empty spool."""
    t0 = time.monotonic()
    last_stored = -1.0
    last_change = t0
    while time.monotonic() - t0 < DRAIN_TIMEOUT_S:
        collector = scrape(pipe.collector_http)
        agent = scrape(pipe.agent_http)
        stored = total(collector, "boundary_audit_collector_events_stored_total")
        if stored >= expected:
            return time.monotonic() - t0, True
        now = time.monotonic()
        if stored != last_stored:
            last_stored, last_change = stored, now
        spool_empty = (
            total(agent, "boundary_audit_agent_spool_batches") == 0
            and total(agent, "boundary_audit_agent_pending_bytes") == 0
        )
        if spool_empty and now - last_change >= DRAIN_QUIET_S:
            return now - t0, False
        time.sleep(DRAIN_POLL_S)
    return time.monotonic() - t0, False


@dataclass
class Stored:
    events: int
    sessions: int
    gaps: int
    latencies_ns: list[int]
    drops: dict[tuple[str, str], int]


def read_db(path: Path) -> Stored:
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        latencies = sorted(r[0] for r in db.execute("SELECT received_ns - time_ns FROM events"))
        sessions = db.execute("SELECT COUNT(*) FROM sessions").fetchone()[0]
        gaps = db.execute(
            "SELECT COALESCE(SUM(s.max_seq + 1 - e.n), 0) FROM sessions s JOIN"
            " (SELECT session_id, COUNT(*) AS n FROM events GROUP BY session_id) e"
            " USING (session_id)"
        ).fetchone()[0]
        drops = {
            (source, reason): int(n)
            for source, reason, n in db.execute(
                "SELECT r.source, c.reason, SUM(c.count) FROM drop_counts c"
                " JOIN drop_reports r USING (report_id) GROUP BY r.source, c.reason"
            )
        }
    finally:
        db.close()
    return Stored(len(latencies), int(sessions), int(gaps), latencies, drops)


def percentile(sorted_values: list[int], p: float) -> int:
    """Nearest-rank percentile of an already sorted list."""
    if not sorted_values:
        return 0
    rank = max(1, -(-len(sorted_values) * p // 100))
    return sorted_values[int(rank) - 1]


def mib(n: float) -> str:
    return f"{n / (1 << 20):,.0f}"


def delta(name: str, start: Metrics, end: Metrics) -> float:
    return total(end, name) - total(start, name)


@dataclass
class Outcome:
    """Everything one soak run measured, for the tables."""

    mode: str
    paused_s: float
    load: Load
    result: LoadResult
    agent: Metrics
    collector: Metrics
    drain_s: float
    drained: bool
    stored: Stored
    sampler: Sampler
    #: The collector's completeness verdict of each session, by session id.
    completeness: dict[str, dict[str, Any]]


def stages_table(o: Outcome) -> Table:
    r = o.result
    table = Table(
        title=f"soak, {o.mode} mode: {o.load.senders} senders, target {o.load.rate:,.0f} "
        f"events/s; {r.seconds:.1f} s of load + {o.drain_s:.1f} s drain ({os.cpu_count()} CPUs)"
        + (f"; agent frozen for {o.paused_s:g} s" if o.paused_s else "")
    )
    for col in ("stage", "events during load", "events/s during load", "events in total"):
        table.add_column(col, justify="left" if col == "stage" else "right")
    rows: list[tuple[str, float, float]] = [("generated by the senders", r.generated, r.generated)]
    for name, metric, start, end, final in (
        (
            "received by the agent (incl. replays)",
            "boundary_audit_agent_events_received_total",
            r.agent_start,
            r.agent_end,
            o.agent,
        ),
        (
            "forwarded by the agent",
            "boundary_audit_agent_events_forwarded_total",
            r.agent_start,
            r.agent_end,
            o.agent,
        ),
        (
            "stored by the collector",
            "boundary_audit_collector_events_stored_total",
            r.collector_start,
            r.collector_end,
            o.collector,
        ),
    ):
        rows.append((name, delta(metric, start, end), total(final, metric)))
    for name, during, overall in rows:
        table.add_row(name, f"{during:,.0f}", f"{during / r.seconds:,.0f}", f"{overall:,.0f}")
    return table


def latency_table(stored: Stored) -> Table:
    table = Table(title=f"end-to-end latency, event time to stored ({stored.events:,} events)")
    for p in PERCENTILES:
        table.add_column(f"p{p:g} ms", justify="right")
    table.add_column("max ms", justify="right")
    lat = stored.latencies_ns
    table.add_row(
        *(f"{percentile(lat, p) / NS_PER_MS:,.1f}" for p in PERCENTILES),
        f"{(lat[-1] if lat else 0) / NS_PER_MS:,.1f}",
    )
    return table


def drops_table(o: Outcome) -> Table:
    table = Table(title="drops and losses by stage and reason")
    for col in ("stage", "reason", "count"):
        table.add_column(col, justify="right" if col == "count" else "left")
    at_sender: dict[str, int] = defaultdict(int)
    for s in o.result.senders:
        for reason, n in s.dropped.items():
            at_sender[reason] += n
        at_sender["undelivered at close"] += s.undelivered
    rows: list[tuple[str, str, float]] = [("sender", k, v) for k, v in sorted(at_sender.items())]
    for metric, stage, source in (
        ("boundary_audit_agent_dropped_events_total", "agent, events", o.agent),
        ("boundary_audit_agent_dropped_frames_total", "agent, frames", o.agent),
        ("boundary_audit_agent_connections_rejected_total", "agent, connections", o.agent),
        ("boundary_audit_collector_ingest_rejected_total", "collector, requests", o.collector),
    ):
        rows += [(stage, k, v) for k, v in sorted(by_label(source, metric, "reason").items())]
    rows += [(f"collector, reported by {src}", k, v) for (src, k), v in o.stored.drops.items()]
    rows.append(("collector", "sequence gaps", o.stored.gaps))
    rows.append(
        (
            "collector",
            "duplicates ignored (replays)",
            total(o.collector, "boundary_audit_collector_events_duplicate_total"),
        )
    )
    for stage, reason, count in rows:
        table.add_row(stage, reason, f"{count:,.0f}")
    return table


def processes_table(sampler: Sampler) -> Table:
    table = Table(title="processes")
    for col in ("process", "peak RSS MiB", "CPU s"):
        table.add_column(col, justify="left" if col == "process" else "right")
    for w in sampler.watched:
        table.add_row(w.name, mib(w.peak_rss), f"{w.cpu_s:.1f}")
    return table


def senders_table(senders: list[SenderResult]) -> Table:
    table = Table(title="senders")
    for col in ("sender", "generated", "sent to agent", "dropped", "undelivered", "note"):
        table.add_column(col, justify="left" if col in ("sender", "note") else "right")
    for s in senders:
        table.add_row(
            s.name,
            f"{s.generated:,}",
            f"{s.sent:,}",
            f"{sum(s.dropped.values()):,}",
            f"{s.undelivered:,}",
            s.note,
        )
    return table


def timeline_table(sampler: Sampler, seconds: float) -> Table:
    """About TIMELINE_ROWS windows over the run: is the rate steady, does memory grow?"""
    step = max(1, math.ceil(seconds / TIMELINE_ROWS / SAMPLE_S))
    table = Table(title=f"timeline ({step * SAMPLE_S:g} s windows, rates in events/s)")
    for col in (
        "t s",
        "agent received",
        "agent forwarded",
        "collector stored",
        "spool backlog",
        "agent RSS MiB",
        "collector RSS MiB",
    ):
        table.add_column(col, justify="right")
    points = [p for p in sampler.timeline if p[1] and p[2]]  # both answered
    marks = list(range(step, len(points), step))
    if points and (not marks or marks[-1] != len(points) - 1):
        marks.append(len(points) - 1)
    for prev_i, i in zip([0, *marks], marks, strict=False):
        t0, a0, c0, _ = points[prev_i]
        t, a, c, rss = points[i]
        dt = t - t0
        table.add_row(
            f"{t:.0f}",
            f"{delta('boundary_audit_agent_events_received_total', a0, a) / dt:,.0f}",
            f"{delta('boundary_audit_agent_events_forwarded_total', a0, a) / dt:,.0f}",
            f"{delta('boundary_audit_collector_events_stored_total', c0, c) / dt:,.0f}",
            f"{total(a, 'boundary_audit_agent_spool_events'):,.0f}",
            mib(rss.get("agent", 0)),
            mib(rss.get("collector", 0)),
        )
    return table


def session_completeness(collector: httpx.Client) -> dict[str, dict[str, Any]]:
    """Every session's completeness as the collector's API reports it."""
    verdicts: dict[str, dict[str, Any]] = {}
    cursor: str | None = None
    while True:
        params = {"limit": str(SESSIONS_PAGE)} | ({"cursor": cursor} if cursor else {})
        page = collector.get("/api/v1/sessions", params=params).raise_for_status().json()
        for row in page["sessions"]:
            verdicts[row["session_id"]] = row.get("completeness") or {"state": "missing"}
        cursor = page.get("next_cursor")
        if not cursor:
            return verdicts


def completeness_table(o: Outcome) -> Table:
    table = Table(title="completeness per session (the collector's verdict)")
    for col in ("session", "state", "made", "stored", "lost", "unaccounted", "summary"):
        table.add_column(col, justify="left" if col in ("session", "state", "summary") else "right")
    for sid, v in sorted(o.completeness.items()):
        table.add_row(
            sid[:8],
            str(v.get("state")),
            f"{v.get('events_made', 0):,}",
            f"{v.get('stored', 0):,}",
            f"{v.get('lost', 0):,}",
            f"{v.get('unaccounted', 0):,}",
            str(v.get("summary", "")),
        )
    return table


def report(console: Console, o: Outcome) -> bool:
    """Print every table and the verdict; True when the books balance."""
    console.print(stages_table(o))
    console.print(latency_table(o.stored))
    console.print(drops_table(o))
    console.print(processes_table(o.sampler))
    console.print(senders_table(o.result.senders))
    console.print(timeline_table(o.sampler, o.result.seconds + o.drain_s))
    console.print(completeness_table(o))
    generated = o.result.generated
    reported = sum(o.stored.drops.values())
    undelivered = o.result.undelivered
    accounted = o.stored.events + reported + undelivered
    # A dropped event keeps its sequence number, so it leaves a gap; every gap
    # must be covered by a reported drop, or something vanished unreported.
    gaps_explained = o.stored.gaps <= reported
    # Every sender closed: each session must be sealed and fully accounted for.
    not_complete = sorted(sid for sid, v in o.completeness.items() if v.get("state") != "complete")
    ok = generated == accounted and gaps_explained and o.drained and not not_complete
    console.print(
        f"verdict: generated {generated:,} == stored {o.stored.events:,} + reported drops "
        f"{reported:,} + undelivered at sender close {undelivered:,} = {accounted:,}; "
        f"sequence gaps {o.stored.gaps:,} <= reported drops: "
        + ("[bold green]OK, nothing lost silently[/]" if ok else "[bold red]MISMATCH[/]")
        + ("" if o.drained else " (the pipeline did not drain in time)")
    )
    console.print(
        f"completeness: {len(o.completeness) - len(not_complete)} of {len(o.completeness)} "
        "sessions complete"
        + (f"; not complete: {', '.join(s[:8] for s in not_complete)}" if not_complete else "")
    )
    return ok


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mode", choices=("direct", "proxy"), default="direct")
    parser.add_argument("--duration", type=float, default=DEFAULT_DURATION_S, help="seconds")
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_DURATION_S:g} s of load")
    parser.add_argument("--rate", type=float, default=None, help="target events/s, in total")
    parser.add_argument("--senders", type=int, default=DEFAULT_SENDERS)
    parser.add_argument("--max-events", type=int, default=DEFAULT_MAX_EVENTS)
    parser.add_argument(
        "--pause-agent",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="freeze the agent (SIGSTOP) this long, a third into the load: overload on purpose",
    )
    parser.add_argument("--keep", action="store_true", help="keep the work dir (DB, logs)")
    args = parser.parse_args()
    if args.quick:
        args.duration = QUICK_DURATION_S
    if args.rate is None:
        args.rate = DEFAULT_DIRECT_RATE if args.mode == "direct" else DEFAULT_PROXY_RATE
    if not 0 < args.duration <= MAX_DURATION_S:
        parser.error(f"--duration must be in (0, {MAX_DURATION_S:g}]")
    if args.rate <= 0 or args.senders < 1 or args.max_events < args.senders:
        parser.error("--rate must be > 0, --senders >= 1, --max-events >= --senders")
    if not 0 <= args.pause_agent < args.duration:
        parser.error("--pause-agent must be >= 0 and shorter than --duration")
    load = Load(args.senders, args.rate, args.duration, args.max_events)
    console = Console(width=CONSOLE_WIDTH)
    workdir = Path(tempfile.mkdtemp(prefix="ba-soak-"))
    pipe: Pipeline | None = None
    try:
        console.print(f"starting collector and agent in {workdir} ...")
        pipe = start_pipeline(workdir)
        sampler = Sampler(pipe.agent_http, pipe.collector_http)
        sampler.watch("collector", pipe.collector.pid)
        sampler.watch("agent", pipe.agent.pid)
        sampler.start()
        console.print(
            f"{args.mode} load: {load.senders} senders, {load.rate:,.0f} events/s "
            f"for {load.duration:g} s ..."
        )
        pause = threading.Thread(
            target=pause_agent, args=(pipe.agent, load.duration / 3, args.pause_agent), daemon=True
        )
        if args.pause_agent:
            pause.start()
        result = (run_direct if args.mode == "direct" else run_proxy)(pipe, sampler, load)
        if args.pause_agent:
            pause.join()
        console.print(f"load done in {result.seconds:.1f} s; draining ...")
        drain_s, drained = drain(pipe, result.expected_stored)
        agent, collector = scrape(pipe.agent_http), scrape(pipe.collector_http)
        verdicts = session_completeness(pipe.collector_http)
        sampler.close()
        stop_process(pipe.agent, STOP_TIMEOUT_S)
        stop_process(pipe.collector, STOP_TIMEOUT_S)
        stored = read_db(pipe.db_path)
        outcome = Outcome(
            args.mode,
            args.pause_agent,
            load,
            result,
            agent,
            collector,
            drain_s,
            drained,
            stored,
            sampler,
            verdicts,
        )
        return 0 if report(console, outcome) else 1
    finally:
        if pipe is not None:
            with contextlib.suppress(ProcessLookupError):
                pipe.agent.send_signal(signal.SIGCONT)  # never leave it frozen
            stop_process(pipe.agent, STOP_TIMEOUT_S)
            stop_process(pipe.collector, STOP_TIMEOUT_S)
            pipe.agent_http.close()
            pipe.collector_http.close()
        if args.keep:
            console.print(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())

"""The ingest load the collector benchmarks share: requests, clients, a collector process.

``bench_collector.py``, ``evidence_cost.py`` and ``ingest_cost.py`` post the
same protobuf requests (100 events each, spread over 16 sessions, one in five
denied) to a real ``boundary-audit collector`` process by concurrent HTTP
clients, and read the process's own CPU time.
"""

from __future__ import annotations

import asyncio
import random
import re
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import psutil

from boundary_audit.collector import Storage, open_storage
from boundary_audit.collector.model import INGEST_PATH, EventIn, Identity
from boundary_audit.wire import IngestRequest, chain

#: Events per ingest request, as the issue's goal states it.
EVENTS_PER_REQUEST = 100
#: Concurrent HTTP clients: a handful of agents posting at once; more only
#: queue behind SQLite's single writer.
CLIENTS = 4
#: Sessions the ingest load is spread over (agents each have a few).
INGEST_SESSIONS = 16
#: Each session reaches its own few hosts out of a large pool, most requests
#: going to the first of them (a coding agent talks mostly to its forge and
#: package registries); one request in five is denied.
HOST_POOL = 500
HOSTS_PER_SESSION = 8
DENIED_RATIO = 0.2
#: The confined process name every benchmark session reports.
PROCESS_NAME = "bench"
LISTEN_TIMEOUT_SECONDS = 30
COLLECTOR_COMMAND = [sys.executable, "-m", "boundary_audit", "collector"]


def session_hosts(rng: random.Random) -> list[str]:
    return [f"host{rng.randrange(HOST_POOL)}.example" for _ in range(HOSTS_PER_SESSION)]


def make_events(
    seq0: int, n: int, rng: random.Random, now: int, hosts: list[str] | None = None
) -> list[EventIn]:
    """Events ``seq0 .. seq0 + n - 1`` of one session (no chain digests)."""
    hosts = hosts or session_hosts(rng)
    out = []
    for seq in range(seq0, seq0 + n):
        # Geometric-ish skew: the first host takes about half the requests.
        host = hosts[min(int(rng.expovariate(0.7)), len(hosts) - 1)]
        allowed = rng.random() >= DENIED_RATIO
        out.append(
            EventIn(
                sequence_number=seq,
                time_ns=now + seq * 1_000_000,
                allowed=allowed,
                method="GET",
                url=f"https://{host}/path/{seq}?q=1",
                host=host,
                matched_rule=f"domain={host}" if allowed else "",
            )
        )
    return out


def request_bodies(total_events: int, rng: random.Random, *, chained: bool = False) -> list[bytes]:
    """Serialized IngestRequests of EVENTS_PER_REQUEST events, sessions taking turns.

    ``chained``: each event carries its sender's chain digest, as
    ``boundary-audit run`` sends them, and one last request seals every
    session (so the collector also judges each chain against its seal).
    """
    sessions = [str(uuid.uuid4()) for _ in range(INGEST_SESSIONS)]
    hosts = {sid: session_hosts(rng) for sid in sessions}
    next_seq = dict.fromkeys(sessions, 0)
    heads = {sid: chain.genesis(sid) for sid in sessions}
    now = time.time_ns()
    bodies = []
    for i in range(total_events // EVENTS_PER_REQUEST):
        sid = sessions[i % INGEST_SESSIONS]
        request = IngestRequest(batch_id=str(uuid.uuid4()))
        report = request.logs.add(session_id=sid, confined_process_name=PROCESS_NAME)
        for e in make_events(next_seq[sid], EVENTS_PER_REQUEST, rng, now, hosts[sid]):
            log = report.logs.add(allowed=e.allowed, sequence_number=e.sequence_number)
            log.time.FromNanoseconds(e.time_ns)
            log.http_request.method = e.method
            log.http_request.url = e.url
            log.http_request.matched_rule = e.matched_rule
            if chained:
                heads[sid] = chain.next_digest(
                    heads[sid],
                    chain.ChainedEvent(
                        e.sequence_number, e.time_ns, e.allowed, e.method, e.url,
                        e.matched_rule, PROCESS_NAME,
                    ),
                )  # fmt: skip
                log.chain_digest = heads[sid]
        next_seq[sid] += EVENTS_PER_REQUEST
        bodies.append(request.SerializeToString())
    if chained:
        bodies.append(_seals(next_seq, heads, now))
    return bodies


def _seals(made: Mapping[str, int], heads: Mapping[str, bytes], now: int) -> bytes:
    request = IngestRequest(batch_id=str(uuid.uuid4()))
    for sid, n in made.items():
        record = request.sessions.add(
            record_id=str(uuid.uuid4()), session_id=sid, confined_process_name=PROCESS_NAME
        )
        seal = record.seal
        seal.events_made = seal.events_sent = seal.chain_count = n
        seal.chain_head = heads[sid]
        seal.sealed_at.FromNanoseconds(now + n * 1_000_000)
        record.observed_at.FromNanoseconds(now + n * 1_000_000)
    return request.SerializeToString()


def listening_url(
    log: Path, proc: subprocess.Popen[bytes], timeout: float = LISTEN_TIMEOUT_SECONDS
) -> str:
    """The URL a collector process announces in its log ``log``, once it listens."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        # Only the first lines matter; audit lines follow once load starts.
        with log.open("rb") as f:
            head = f.read(65536).decode(errors="replace")
        match = re.search(r'"url": "(http://[^"]+)"[^\n]*collector_listening', head)
        if match:
            return match.group(1)
        time.sleep(0.05)
    raise RuntimeError(f"collector did not start: {log.read_text()[:2000]}")


@dataclass(frozen=True)
class CollectorProcess:
    url: str
    pid: int


@contextmanager
def collector_process(
    db_url: str,
    *extra: str,
    env: Mapping[str, str] | None = None,
    under: Sequence[str] = (),
    listen_timeout: float = LISTEN_TIMEOUT_SECONDS,
) -> Iterator[CollectorProcess]:
    """A ``boundary-audit collector`` on a free loopback port, stopped (SIGTERM) on exit.

    ``under``: a command the collector runs under (valgrind), same process id.
    """
    log = Path(tempfile.mkstemp(prefix="bench-collector-", suffix=".log")[1])
    with log.open("wb") as sink:
        proc = subprocess.Popen(
            [*under, *COLLECTOR_COMMAND, "--db", db_url, "--listen", "127.0.0.1:0", *extra],
            stdout=subprocess.DEVNULL,
            stderr=sink,
            env=None if env is None else dict(env),
        )
    try:
        yield CollectorProcess(listening_url(log, proc, listen_timeout), proc.pid)
    finally:
        proc.terminate()
        proc.wait()
        log.unlink(missing_ok=True)


#: Seconds one ingest request may take (a seal request judges every chain).
REQUEST_TIMEOUT_SECONDS = 60
#: The collector's switch that turns the evidence off (only benchmarks use it).
NO_EVIDENCE_FLAG = "--no-evidence"


def evidence_flags(evidence: bool) -> tuple[str, ...]:
    """A benchmark collector's flags: no event log lines, the evidence on or off."""
    return ("--no-event-log",) if evidence else ("--no-event-log", NO_EVIDENCE_FLAG)


def bench_identity(storage: Storage) -> Identity:
    """The identity of a fresh benchmark token, for ingest through the storage layer."""
    ident = storage.authenticate(storage.create_token("bench"))
    if ident is None:
        raise RuntimeError("a token just created does not authenticate")
    return ident


def new_token(db_url: str) -> str:
    """A token for the benchmark's requests, stored in ``db_url`` (migrated if new)."""
    with open_storage(db_url) as storage:
        return storage.create_token("bench")


async def _post(
    targets: Sequence[tuple[str, str]], bodies: list[bytes]
) -> tuple[float, list[float]]:
    """(wall seconds, seconds each target's requests took): every body to every
    ``(url, token)`` target, back to back, the first target rotating by request."""
    spent = [0.0] * len(targets)
    queue = list(enumerate(bodies))[::-1]
    headers = [
        {"Authorization": f"Bearer {token}", "Content-Type": "application/x-protobuf"}
        for _, token in targets
    ]

    async def worker(client: httpx.AsyncClient) -> None:
        while queue:
            i, body = queue.pop()
            for k in range(len(targets)):
                side = (i + k) % len(targets)
                start = time.perf_counter()
                response = await client.post(
                    targets[side][0] + INGEST_PATH, content=body, headers=headers[side]
                )
                spent[side] += time.perf_counter() - start
                if response.status_code != 200:
                    raise RuntimeError(f"ingest answered {response.status_code}: {response.text}")

    limits = httpx.Limits(max_connections=CLIENTS * len(targets))
    async with httpx.AsyncClient(limits=limits, timeout=REQUEST_TIMEOUT_SECONDS) as client:
        start = time.perf_counter()
        await asyncio.gather(*(worker(client) for _ in range(CLIENTS)))
        return time.perf_counter() - start, spent


def post_all(url: str, token: str, bodies: list[bytes]) -> float:
    """Post every body by CLIENTS concurrent clients, in order; the wall seconds it took."""
    return asyncio.run(_post([(url, token)], bodies))[0]


def post_to_each(targets: Sequence[tuple[str, str]], bodies: list[bytes]) -> list[float]:
    """Post every body to each ``(url, token)`` target by CLIENTS concurrent clients,
    back to back, which target goes first rotating by request (side by side: a busy
    moment of the machine weighs on all alike); the seconds each target's requests took."""
    return asyncio.run(_post(targets, bodies))[1]


def cpu_seconds(pid: int) -> float:
    """User + system CPU of ``pid`` and every process below it (all threads).

    Unlike events/s, it does not count the time the process waited for a
    core, so it moves far less on a shared machine.
    """
    root = psutil.Process(pid)
    total = 0.0
    for proc in [root, *root.children(recursive=True)]:
        times = proc.cpu_times()
        total += times.user + times.system
    return total


__all__ = [
    "CLIENTS",
    "EVENTS_PER_REQUEST",
    "INGEST_SESSIONS",
    "NO_EVIDENCE_FLAG",
    "CollectorProcess",
    "bench_identity",
    "collector_process",
    "cpu_seconds",
    "evidence_flags",
    "make_events",
    "new_token",
    "post_all",
    "post_to_each",
    "request_bodies",
    "session_hosts",
]

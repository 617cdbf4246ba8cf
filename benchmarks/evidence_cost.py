"""What the evidence (store log, chain check at ingest) costs ingest: off and on, side by side.

The same chained requests (``ingest_load.request_bodies(chained=True)``:
every event with its sender's digest, then a seal per session) go to two
real ``boundary-audit collector`` processes running at once on fresh
databases, one started with ``--no-evidence`` (no leaves, no chain check:
what the collector did before issue 12) and one without. Each request goes
to both, back to back, which one first alternating, so whatever else the
shared machine does at a moment (another tenant on the host moves single
runs by 20% and more) weighs on both alike. The figure that decides is each
collector's CPU time per stored event (it does not count waiting for a
core); a round's slowdown is its own on/off ratio, and the report shows the
median round with the middle half of them. Events/s is each collector's
from the time its requests took. The storage layer alone (no HTTP, no
protobuf; ``Storage.record_evidence`` off and on) is measured the same way,
batch by batch alternating between two stores in this process, to show the
share evidence takes of the part of ingest it lives in.
"""

from __future__ import annotations

import contextlib
import random
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.table import Table

from benchmarks import evidence_instructions
from benchmarks.bench_store_evidence import ingest_batches, verify_row
from benchmarks.ingest_load import (
    CLIENTS,
    EVENTS_PER_REQUEST,
    NO_EVIDENCE_FLAG,
    bench_identity,
    collector_process,
    cpu_seconds,
    evidence_flags,
    new_token,
    post_to_each,
    request_bodies,
)
from boundary_audit.collector import open_storage
from boundary_audit.collector.model import IngestBatch

#: The issue's targets: ingest with the evidence on at most this much slower
#: (CPU per event of the collector process), and ``verify --db`` on the
#: 1M-event store at least this fast.
GOAL_SLOWDOWN = 0.15
GOAL_VERIFY_EVENTS_PER_S = 200_000
#: Rounds of a full report, each running off and on side by side: five give
#: a median and quartiles; side by side, rounds differ by a few points.
ROUNDS = 5
#: Events per run: 300 requests, so the collector's CPU for them dwarfs its
#: start; five rounds on two backends, both paths, take about four minutes.
EVENTS = 30_000
#: Events of the instruction counts: the collector runs some 50x slower
#: under callgrind; with 10,000, two reports' on/off ratios agreed within two points.
INSTRUCTION_EVENTS = 10_000
#: The same for a smoke run (``--quick``).
QUICK_INSTRUCTION_EVENTS = 2_000
#: Rounds from which quartiles mean something; fewer show their range instead.
QUARTILE_ROUNDS = 4
HTTP_PATH = "HTTP (collector process)"


@dataclass(frozen=True)
class CostRow:
    backend: str
    path: str
    #: Median CPU microseconds per stored event, evidence off and on.
    cpu_off: float
    cpu_on: float
    #: Median events/s (wall), evidence off and on.
    rate_off: float
    rate_on: float
    #: Each round's extra CPU per event with the evidence on, as a share of it off.
    paired: tuple[float, ...]

    @property
    def slowdown(self) -> float:
        """The median round's slowdown: what decides the goal."""
        return statistics.median(self.paired)

    @property
    def middle_half(self) -> tuple[float, float]:
        """The rounds' slowdowns between the first and third quartile."""
        if len(self.paired) < QUARTILE_ROUNDS:
            return min(self.paired), max(self.paired)
        q1, _, q3 = statistics.quantiles(self.paired, n=4)
        return q1, q3


Pair = tuple[tuple[float, float], tuple[float, float]]


def _http_round(new_db: Callable[[], str], bodies: list[bytes], events: int) -> Pair:
    """((CPU µs per event, events/s) off, (the same) on) of two collectors side by side."""
    targets, pids = [], []
    with contextlib.ExitStack() as stack:
        for evidence in (False, True):
            db_url = new_db()
            token = new_token(db_url)
            collector = stack.enter_context(collector_process(db_url, *evidence_flags(evidence)))
            targets.append((collector.url, token))
            pids.append(collector.pid)
        before = [cpu_seconds(pid) for pid in pids]
        # The seals last, once every event is stored: each chain is then
        # judged once, from its running state.
        spent = post_to_each(targets, bodies[:-1])
        seals = post_to_each(targets, bodies[-1:])
        cpu = [cpu_seconds(pid) - b for pid, b in zip(pids, before, strict=True)]
    # Each collector served CLIENTS requests at a time.
    rates = [events * CLIENTS / (s + t) for s, t in zip(spent, seals, strict=True)]
    return (cpu[0] / events * 1e6, rates[0]), (cpu[1] / events * 1e6, rates[1])


def _storage_round(new_db: Callable[[], str], batches: list[IngestBatch], events: int) -> Pair:
    """The same for the storage layer alone: two stores in this process, batch by batch."""
    with open_storage(new_db()) as off, open_storage(new_db()) as on:
        off.record_evidence = False
        stores = [off, on]
        idents = [bench_identity(s) for s in stores]
        cpu, wall = [0.0, 0.0], [0.0, 0.0]
        for i, batch in enumerate(batches):
            for side in (0, 1) if i % 2 == 0 else (1, 0):
                cpu0, wall0 = time.thread_time(), time.perf_counter()
                stores[side].ingest(batch, idents[side])
                cpu[side] += time.thread_time() - cpu0
                wall[side] += time.perf_counter() - wall0
    return (cpu[0] / events * 1e6, events / wall[0]), (cpu[1] / events * 1e6, events / wall[1])


def evidence_rows(
    databases: list[tuple[str, Callable[[], str]]], events: int, rounds: int
) -> list[CostRow]:
    """Over HTTP and through the storage layer, for each ``(backend, new database URL)``."""
    bodies = request_bodies(events, random.Random(1), chained=True)
    batches = ingest_batches(events)  # built once: every run stores the same
    stored = (len(bodies) - 1) * EVENTS_PER_REQUEST  # every request but the seals
    rows = []
    for backend, new_db in databases:

        def over_http(db: Callable[[], str] = new_db) -> Pair:
            return _http_round(db, bodies, stored)

        def storage_only(db: Callable[[], str] = new_db) -> Pair:
            return _storage_round(db, batches, stored)

        paths = {HTTP_PATH: over_http, "storage layer only": storage_only}
        for path, run in paths.items():
            cpu: dict[bool, list[float]] = {False: [], True: []}
            rate: dict[bool, list[float]] = {False: [], True: []}
            for _ in range(rounds):
                for evidence, (c, r) in zip((False, True), run(), strict=True):
                    cpu[evidence].append(c)
                    rate[evidence].append(r)
            med = statistics.median
            paired = tuple(on / off - 1 for off, on in zip(cpu[False], cpu[True], strict=True))
            rows.append(
                CostRow(
                    backend, path, med(cpu[False]), med(cpu[True]), med(rate[False]),
                    med(rate[True]), paired,
                )
            )  # fmt: skip
    return rows


def report(
    console: Console,
    databases: list[tuple[str, Callable[[], str]]],
    *,
    events: int,
    rounds: int,
    store_events: int,
    instruction_events: int = 0,
) -> None:
    """Print the cost table, the instruction counts (of ``instruction_events``; 0:
    none) and ``verify --db``'s speed on a SQLite store of ``store_events``."""
    with console.status("ingest, evidence off and on..."):
        rows = evidence_rows(databases, events, rounds)
    table = Table(
        title=f"Evidence cost: {events:,} chained events and a seal per session, "
        f"{NO_EVIDENCE_FLAG} vs on side by side, median of {rounds} rounds"
    )
    for column in ("backend", "path"):
        table.add_column(column)
    columns = ("CPU µs/event off", "on", "slowdown", "middle half", "events/s off", "on")
    for column in (*columns, "goal <= 15%"):
        table.add_column(column, justify="right")
    for r in rows:
        verdict = "met" if r.slowdown <= GOAL_SLOWDOWN else "MISSED"
        low, high = r.middle_half
        table.add_row(
            r.backend, r.path, f"{r.cpu_off:.1f}", f"{r.cpu_on:.1f}", f"{r.slowdown:+.1%}",
            f"{low:+.0%}..{high:+.0%}", f"{r.rate_off:,.0f}", f"{r.rate_on:,.0f}",
            verdict if r.path == HTTP_PATH else f"({verdict})",
        )  # fmt: skip
    console.print(table)
    console.print(
        "Slowdown: the median of the rounds' own on/off CPU ratios (each round runs both "
        "side by side, each request to both); middle half: their quartiles. The goal is "
        "judged over HTTP (what a collector does per request); the storage layer alone, in "
        "brackets, shows evidence's share of the part of ingest it lives in."
    )
    if instruction_events:
        _instruction_table(console, databases, instruction_events)
    with console.status(f"verify --db: building a store of {store_events:,} events..."):
        checked, built_s, rates = verify_row(store_events)
    rate = statistics.median(rates)
    verdict = "met" if rate >= GOAL_VERIFY_EVENTS_PER_S else "MISSED"
    console.print(
        f"verify --db on {checked:,} stored events (SQLite, built in {built_s:.0f} s), "
        f"median of {len(rates)} runs (CLI start-up included): {rate:,.0f} events/s "
        f"(fastest {max(rates):,.0f}); goal >= {GOAL_VERIFY_EVENTS_PER_S:,}: {verdict}"
    )


def _instruction_table(
    console: Console, databases: list[tuple[str, Callable[[], str]]], events: int
) -> None:
    missing = evidence_instructions.missing_tools()
    if missing:
        console.print(f"Instruction counts left out: {', '.join(missing)} not installed")
        return
    bodies = request_bodies(events, random.Random(1), chained=True)
    with console.status("ingest under callgrind, evidence off and on..."):
        rows = evidence_instructions.instruction_rows(databases, bodies)
    table = Table(
        title=f"Evidence cost in instructions: {events:,} chained events over HTTP, "
        f"the collector under callgrind, {NO_EVIDENCE_FLAG} vs on"
    )
    table.add_column("backend")
    columns = ("instructions/event off", "on", "more", "in libcrypto off", "on", "more outside it")
    for column in columns:
        table.add_column(column, justify="right")
    for r in rows:
        table.add_row(
            r.backend, f"{r.off:,.0f}", f"{r.on:,.0f}", f"{r.slowdown:+.1%}",
            f"{r.crypto_off:,.0f}", f"{r.crypto_on:,.0f}", f"{r.slowdown_outside_crypto:+.1%}",
        )  # fmt: skip
    console.print(table)
    console.print(
        "Counted, not timed: no other tenant moves it. The whole errs against the evidence: "
        "under valgrind OpenSSL hashes in software, without the CPU's SHA instructions a "
        "real run uses, and the evidence is what hashes; the last column leaves libcrypto out."
    )


def sqlite_databases(tmp: Path) -> Callable[[], str]:
    """Fresh SQLite database URLs under ``tmp``."""
    counter = iter(range(1_000_000))
    return lambda: f"sqlite:///{tmp / f'evidence{next(counter)}.db'}"


__all__ = [
    "EVENTS",
    "GOAL_SLOWDOWN",
    "GOAL_VERIFY_EVENTS_PER_S",
    "INSTRUCTION_EVENTS",
    "QUICK_INSTRUCTION_EVENTS",
    "ROUNDS",
    "CostRow",
    "evidence_rows",
    "report",
    "sqlite_databases",
]

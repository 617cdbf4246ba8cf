"""What the evidence (store log, chain check at ingest) costs ingest: off and on, side by side.

The same chained requests (``ingest_load.request_bodies(chained=True)``:
every event with its sender's digest, then a seal per session) go to a real
``boundary-audit collector`` started with ``--no-evidence`` (no leaves, no
chain check: what the collector did before issue 12) and without it, the two
alternated round by round on fresh databases (which goes first swaps each
round, so neither always runs on a warmer machine). The figure that decides is
the collector process's CPU time per stored event (it does not count waiting
for a core on a shared machine), compared within each round: the slowdown is
the median of the rounds' own on/off ratios, shown with the middle half of
them, since two runs of the same code on this shared machine differ by as much
as the goal. Events/s is shown beside it. The storage layer
alone (no HTTP, no protobuf; ``Storage.record_evidence`` off and on) is
measured the same way, to show the share evidence takes of the part of
ingest it lives in.
"""

from __future__ import annotations

import random
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.table import Table

from benchmarks.bench_store_evidence import ingest_batches, verify_row
from benchmarks.ingest_load import (
    EVENTS_PER_REQUEST,
    collector_process,
    cpu_seconds,
    post_all,
    request_bodies,
)
from boundary_audit.collector import open_storage
from boundary_audit.collector.model import IngestBatch

#: The issue's targets: ingest with the evidence on at most this much slower
#: (CPU per event of the collector process), and ``verify --db`` on the
#: 1M-event store at least this fast.
GOAL_SLOWDOWN = 0.15
GOAL_VERIFY_EVENTS_PER_S = 200_000
#: The evidence switch of ``boundary-audit collector``.
OFF_FLAG = "--no-evidence"
#: Rounds of a full report: each of off and on this many times, alternated.
#: Nine, because single runs on a shared machine differ by as much as the
#: goal; the median of nine paired rounds moves a few points between reports.
ROUNDS = 9
#: Events per run: 300 requests, so the collector's CPU for them dwarfs its
#: start; nine rounds of both modes on two backends take about three minutes.
EVENTS = 30_000
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


def _http_run(db_url: str, bodies: list[bytes], events: int, evidence: bool) -> tuple[float, float]:
    """(CPU µs per event, events/s) of one collector process on a fresh database."""
    with open_storage(db_url) as storage:
        token = storage.create_token("bench")
    extra = ("--no-event-log",) if evidence else ("--no-event-log", OFF_FLAG)
    with collector_process(db_url, *extra) as collector:
        before = cpu_seconds(collector.pid)
        # The seals last, once every event is stored: each chain is then
        # judged once, from its running state.
        wall = post_all(collector.url, token, bodies[:-1])
        wall += post_all(collector.url, token, bodies[-1:])
        cpu = cpu_seconds(collector.pid) - before
    return cpu / events * 1e6, events / wall


def _storage_run(
    db_url: str, batches: list[IngestBatch], events: int, evidence: bool
) -> tuple[float, float]:
    """(CPU µs per event, events/s) of the storage layer alone, in this process."""
    with open_storage(db_url) as storage:
        storage.record_evidence = evidence
        ident = storage.authenticate(storage.create_token("bench"))
        assert ident is not None
        cpu0, wall0 = time.process_time(), time.perf_counter()
        for batch in batches:
            storage.ingest(batch, ident)
        cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    return cpu / events * 1e6, events / wall


def evidence_rows(
    databases: list[tuple[str, Callable[[], str]]], events: int, rounds: int
) -> list[CostRow]:
    """Over HTTP and through the storage layer, for each ``(backend, new database URL)``."""
    bodies = request_bodies(events, random.Random(1), chained=True)
    batches = ingest_batches(events)  # built once: every run stores the same
    stored = (len(bodies) - 1) * EVENTS_PER_REQUEST  # every request but the seals
    rows = []
    for backend, new_db in databases:

        def over_http(on: bool, db: Callable[[], str] = new_db) -> tuple[float, float]:
            return _http_run(db(), bodies, stored, on)

        def storage_only(on: bool, db: Callable[[], str] = new_db) -> tuple[float, float]:
            return _storage_run(db(), batches, stored, on)

        paths = {HTTP_PATH: over_http, "storage layer only": storage_only}
        for path, run in paths.items():
            cpu: dict[bool, list[float]] = {False: [], True: []}
            rate: dict[bool, list[float]] = {False: [], True: []}
            for i in range(rounds):
                for evidence in (False, True) if i % 2 == 0 else (True, False):
                    c, r = run(evidence)
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
) -> None:
    """Print the cost table and ``verify --db``'s speed on a SQLite store of ``store_events``."""
    with console.status("ingest, evidence off and on..."):
        rows = evidence_rows(databases, events, rounds)
    table = Table(
        title=f"Evidence cost: {events:,} chained events and a seal per session, "
        f"{OFF_FLAG} vs on, median of {rounds} alternated rounds"
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
        "Slowdown: the median of the rounds' own on/off CPU ratios (each round runs both, "
        "back to back); middle half: their quartiles. The goal is judged over HTTP (what a "
        "collector does per request); the storage layer alone, in brackets, shows "
        "evidence's share of the part of ingest it lives in."
    )
    with console.status(f"verify --db: building a store of {store_events:,} events..."):
        checked, built_s, rate = verify_row(store_events)
    verdict = "met" if rate >= GOAL_VERIFY_EVENTS_PER_S else "MISSED"
    console.print(
        f"verify --db on {checked:,} stored events (SQLite, built in {built_s:.0f} s): "
        f"{rate:,.0f} events/s; goal >= {GOAL_VERIFY_EVENTS_PER_S:,}: {verdict}"
    )


def sqlite_databases(tmp: Path) -> Callable[[], str]:
    """Fresh SQLite database URLs under ``tmp``."""
    counter = iter(range(1_000_000))
    return lambda: f"sqlite:///{tmp / f'evidence{next(counter)}.db'}"


__all__ = [
    "EVENTS",
    "GOAL_SLOWDOWN",
    "GOAL_VERIFY_EVENTS_PER_S",
    "ROUNDS",
    "CostRow",
    "evidence_rows",
    "report",
    "sqlite_databases",
]

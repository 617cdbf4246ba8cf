"""What the evidence (store log, chain check at ingest) costs ingest: off and on, side by side.

The same chained requests (``ingest_load.request_bodies(chained=True)``:
every event with its sender's digest, then a seal per session) go to a real
``boundary-audit collector`` started with ``--no-evidence`` (no leaves, no
chain check: what the collector did before issue 12) and without it, the two
alternated round by round on fresh databases. The figure that decides is the
collector process's CPU time per stored event (it does not count waiting for
a core on a shared machine); events/s is shown beside it. The storage layer
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

from benchmarks.bench_store_evidence import ingest_batches
from benchmarks.ingest_load import collector_process, cpu_seconds, post_all, request_bodies
from boundary_audit.collector import open_storage

#: The issue's target: ingest with the evidence on at most this much slower.
GOAL_SLOWDOWN = 0.15
#: The evidence switch of ``boundary-audit collector``.
OFF_FLAG = "--no-evidence"


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

    @property
    def slowdown(self) -> float:
        """Extra CPU per event with the evidence on, as a share of it off."""
        return self.cpu_on / self.cpu_off - 1


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


def _storage_run(db_url: str, events: int, evidence: bool) -> tuple[float, float]:
    """(CPU µs per event, events/s) of the storage layer alone, in this process."""
    batches = ingest_batches(events)
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
    stored = (len(bodies) - 1) * (events // (len(bodies) - 1))
    rows = []
    for backend, new_db in databases:

        def over_http(on: bool, db: Callable[[], str] = new_db) -> tuple[float, float]:
            return _http_run(db(), bodies, stored, on)

        def storage_only(on: bool, db: Callable[[], str] = new_db) -> tuple[float, float]:
            return _storage_run(db(), stored, on)

        paths = {"HTTP (collector process)": over_http, "storage layer only": storage_only}
        for path, run in paths.items():
            cpu: dict[bool, list[float]] = {False: [], True: []}
            rate: dict[bool, list[float]] = {False: [], True: []}
            for _ in range(rounds):
                for evidence in (False, True):
                    c, r = run(evidence)
                    cpu[evidence].append(c)
                    rate[evidence].append(r)
            med = statistics.median
            rows.append(
                CostRow(
                    backend, path, med(cpu[False]), med(cpu[True]), med(rate[False]),
                    med(rate[True]),
                )
            )  # fmt: skip
    return rows


def sqlite_databases(tmp: Path) -> Callable[[], str]:
    """Fresh SQLite database URLs under ``tmp``."""
    counter = iter(range(1_000_000))
    return lambda: f"sqlite:///{tmp / f'evidence{next(counter)}.db'}"


__all__ = ["GOAL_SLOWDOWN", "CostRow", "evidence_rows", "sqlite_databases"]

"""Benchmark of the evidence layer: chain checks, verify_store, Merkle appends and proofs.

Run from the repository root::

    .venv/bin/python benchmarks/bench_evidence.py [--quick] [--events N]

Builds a synthetic store in memory (sessions of chained events stored in
batches, a seal and a drop report per session, the store log, a signed
checkpoint), then prints one table of rates. Goal (issue 12): verifying
runs at >= 200,000 events/s on 1M events.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import platform
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from rich.console import Console
from rich.table import Table

from boundary_audit.collector.testing import PostgresUnavailableError, throwaway_postgres
from boundary_audit.evidence import (
    Frontier,
    MerkleTree,
    StoredDrop,
    StoredEvent,
    StoredSeal,
    batch_leaf,
    drop_leaf,
    leaf_hash,
    make_bundle,
    parse_leaf,
    seal_leaf,
    sign,
    verify_bundle,
    verify_consistency,
    verify_inclusion,
    verify_store,
)
from boundary_audit.wire import chain

#: 1M events: the issue's store size for the verify target.
DEFAULT_EVENTS = 1_000_000
QUICK_EVENTS = 100_000
#: Events per session and per stored batch: a long agent session, and the
#: agent's typical forward batch.
EVENTS_PER_SESSION = 1_000
EVENTS_PER_BATCH = 50
#: Proofs generated and verified per proof row.
PROOFS = 5_000
#: Leaves appended per Merkle append row.
APPENDS = 200_000
GOAL_EVENTS_PER_SECOND = 200_000
T0 = 1_700_000_000_000_000_000
URL = "https://github.com/boundary-audit/boundary-audit/pull/1234/files?diff=split&w=1"


@dataclasses.dataclass
class Store:
    events: dict[str, list[StoredEvent]]
    seals: dict[str, list[StoredSeal]]
    drops: dict[str, list[StoredDrop]]
    leaves: list[bytes]


def build(n: int) -> Store:
    store = Store({}, {}, {}, [])
    for s in range(max(1, n // EVENTS_PER_SESSION)):
        sid = str(uuid.UUID(int=s + 1))
        plain = [
            chain.ChainedEvent(
                i, T0 + i, i % 4 != 0, "GET", f"{URL}&i={i}", "domain=github.com", "codex"
            )
            for i in range(EVENTS_PER_SESSION)
        ]
        digests = list(chain.digests(sid, plain))
        events = [
            StoredEvent(
                e.sequence_number,
                e.time_ns,
                e.allowed,
                e.method,
                e.url,
                e.matched_rule,
                e.confined_process_name,
                d,
            )
            for e, d in zip(plain, digests, strict=True)
        ]
        store.events[sid] = events
        for i in range(0, len(events), EVENTS_PER_BATCH):
            store.leaves.append(batch_leaf(sid, events[i : i + EVENTS_PER_BATCH]))
        seal = StoredSeal(len(events), len(events), 0, 0, T0, digests[-1], len(events), {})
        store.seals[sid] = [seal]
        store.leaves.append(seal_leaf(sid, seal))
        drop = StoredDrop(f"r-{s}", "boundary", T0, {"channel_full": 1})
        store.drops[sid] = [drop]
        store.leaves.append(drop_leaf(sid, drop))
    return store


def timed(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_EVENTS:,} events")
    parser.add_argument("--events", type=int, default=None)
    parser.add_argument(
        "--store",
        action="store_true",
        help="the collector's evidence on real databases instead: ingest with it off and on, "
        "and verify --db on a SQLite store of --events (bench_store_evidence.py)",
    )
    args = parser.parse_args()
    if args.store:
        store_main(args.events or (QUICK_EVENTS if args.quick else DEFAULT_EVENTS), args.quick)
        return
    n = args.events or (QUICK_EVENTS if args.quick else DEFAULT_EVENTS)
    console = Console()
    console.print(f"machine: {platform.platform()}, python {platform.python_version()}")
    with console.status(f"building a store of {n:,} events..."):
        t_build = time.perf_counter()
        store = build(n)
        t_build = time.perf_counter() - t_build
    events = sum(len(v) for v in store.events.values())
    key = Ed25519PrivateKey.generate()
    tree = MerkleTree.of(store.leaves)
    checkpoint = sign(key, origin="bench", tree_size=tree.size, root_hash=tree.root(), time_ns=T0)
    rows: list[tuple[str, float, str, str]] = []

    def check_all() -> None:
        for sid, evs in store.events.items():
            seal = store.seals[sid][0]
            pairs = ((e.chained(), e.chain_digest) for e in evs)
            assert chain.check(sid, pairs, seal.chain_head, seal.chain_count).ok

    s = timed(check_all)
    rows.append(("wire.chain.check (ChainedEvent per event)", events / s, "events/s", f"{s:.2f} s"))

    report = None

    def verify() -> None:
        nonlocal report
        report = verify_store(
            store.events, store.seals, store.leaves, checkpoint, key.public_key(), drops=store.drops
        )

    s = timed(verify)
    assert report is not None
    assert report.ok, report.findings
    verify_rate = events / s
    rows.append(("verify_store (log, leaves, chains)", verify_rate, "events/s", f"{s:.2f} s"))

    hashes = [leaf_hash(i.to_bytes(8, "big")) for i in range(APPENDS)]

    def frontier() -> None:
        f = Frontier()
        for h in hashes:
            f.append_hash(h)
        f.root()

    s = timed(frontier)
    rows.append(("Frontier.append_hash (compact state)", APPENDS / s, "leaves/s", f"{s:.2f} s"))
    big = MerkleTree()
    s = timed(lambda: [big.append_hash(h) for h in hashes])
    rows.append(("MerkleTree.append_hash (all levels)", APPENDS / s, "leaves/s", f"{s:.2f} s"))
    size = big.size
    head = big.root()
    step = max(1, size // PROOFS)
    proofs: list[tuple[int, list[bytes]]] = []
    s = timed(lambda: proofs.extend((i, big.inclusion_proof(i)) for i in range(0, size, step)))
    rows.append(("inclusion_proof", len(proofs) / s, "proofs/s", f"tree of {size:,}"))
    s = timed(lambda: all(verify_inclusion(big.leaf(i), i, size, p, head) for i, p in proofs))
    rows.append(("verify_inclusion", len(proofs) / s, "proofs/s", f"tree of {size:,}"))
    olds = list(range(1, size, step))
    cons: list[tuple[int, list[bytes]]] = []
    s = timed(lambda: cons.extend((m, big.consistency_proof(m)) for m in olds))
    rows.append(("consistency_proof", len(cons) / s, "proofs/s", f"to {size:,}"))
    s = timed(lambda: all(verify_consistency(m, size, big.root(m), head, p) for m, p in cons))
    rows.append(("verify_consistency (incl. old heads)", len(cons) / s, "proofs/s", f"to {size:,}"))
    sid = next(iter(store.events))
    mine = [(i, leaf) for i, leaf in enumerate(store.leaves) if parse_leaf(leaf).session_id == sid]
    bundle = b""

    def export() -> None:
        nonlocal bundle
        bundle = make_bundle(
            sid,
            events=store.events[sid],
            seals=store.seals[sid],
            drops=store.drops[sid],
            tree=tree,
            leaves=mine,
            checkpoint=checkpoint,
        )

    s = timed(export)
    rows.append(
        ("make_bundle (one session)", EVENTS_PER_SESSION / s, "events/s", f"{len(bundle):,} B")
    )
    s = timed(lambda: verify_bundle(bundle, key.public_key()))
    rows.append(
        ("verify_bundle (one session)", EVENTS_PER_SESSION / s, "events/s", f"{s * 1e3:.1f} ms")
    )

    table = Table(
        title=f"Evidence: {events:,} events in {len(store.events):,} sessions, "
        f"{len(store.leaves):,} leaves (built in {t_build:.1f} s)"
    )
    for col in ("operation", "rate", "unit", "note"):
        table.add_column(col, justify="left" if col in ("operation", "unit") else "right")
    for name, rate, unit, note in rows:
        table.add_row(name, f"{rate:,.0f}", unit, note)
    console.print(table)
    met = "met" if verify_rate >= GOAL_EVENTS_PER_SECOND else "MISSED"
    console.print(
        f"goal verify >= {GOAL_EVENTS_PER_SECOND:,} events/s: {verify_rate:,.0f} -> {met}"
    )


#: Chained events per ingest run of ``--store --quick`` (a full run: evidence_cost.EVENTS).
QUICK_INGEST_EVENTS = 16_000
#: Columns of the evidence report: its table has eight (a pipe gets 80 otherwise).
REPORT_WIDTH = 120


def store_main(n: int, quick: bool) -> None:
    """``--store``: evidence_cost.report on SQLite (and PostgreSQL when a server can start)."""
    # Run as a script, the repository root is not on the path: put it there.
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from benchmarks import evidence_cost

    console = Console(width=REPORT_WIDTH)
    console.print(f"machine: {platform.platform()}, python {platform.python_version()}")
    with tempfile.TemporaryDirectory(prefix="bench-evidence-") as tmp:
        databases = [("sqlite", evidence_cost.sqlite_databases(Path(tmp)))]
        with contextlib.ExitStack() as stack:
            try:
                pg = stack.enter_context(throwaway_postgres(durable=True))
                databases.append(("postgresql", pg.new_database))
            except PostgresUnavailableError as exc:
                console.print(f"PostgreSQL left out: {exc}")
            evidence_cost.report(
                console,
                databases,
                events=QUICK_INGEST_EVENTS if quick else evidence_cost.EVENTS,
                rounds=1 if quick else evidence_cost.ROUNDS,
                store_events=n,
                instruction_events=evidence_cost.QUICK_INSTRUCTION_EVENTS
                if quick
                else evidence_cost.INSTRUCTION_EVENTS,
            )


if __name__ == "__main__":
    main()

"""A synthetic store for the evidence tests: sessions, their leaves, a signed checkpoint."""

from __future__ import annotations

import dataclasses
import uuid
from dataclasses import dataclass, field

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from boundary_audit.evidence import (
    MerkleTree,
    SignedCheckpoint,
    StoredDrop,
    StoredEvent,
    StoredSeal,
    VerifyReport,
    batch_leaf,
    drop_leaf,
    make_bundle,
    parse_leaf,
    seal_leaf,
    sign,
    verify_store,
)
from boundary_audit.evidence.running import ChainRun, batch_and_run
from boundary_audit.wire import chain

KEY = Ed25519PrivateKey.generate()
T0 = 1_700_000_000_000_000_000


def session_events(session_id: str, n: int, *, chained: bool = True) -> list[StoredEvent]:
    plain = [
        StoredEvent(
            i, T0 + i, i % 3 != 0, "GET", f"https://h.example/{i}", "r" if i % 3 else "", "codex"
        )
        for i in range(n)
    ]
    if not chained:
        return plain
    digests = chain.digests(session_id, [e.chained() for e in plain])
    return [dataclasses.replace(e, chain_digest=d) for e, d in zip(plain, digests, strict=True)]


def rechain(session_id: str, events: list[StoredEvent]) -> list[StoredEvent]:
    """What an attacker with the database does: digests recomputed over edited events."""
    ordered = sorted(events, key=lambda e: e.sequence_number)
    digests = chain.digests(session_id, [e.chained() for e in ordered])
    return [dataclasses.replace(e, chain_digest=d) for e, d in zip(ordered, digests, strict=True)]


def seal_of(events: list[StoredEvent], session_id: str) -> StoredSeal:
    return StoredSeal(
        events_made=len(events),
        events_sent=len(events),
        undelivered=0,
        spilled=0,
        sealed_at_ns=T0 + 10**9,
        chain_head=chain.head(session_id, [e.chained() for e in events]),
        chain_count=len(events),
        dropped={"channel_full": 2},
    )


@dataclass
class Store:
    """What a collector would hold, in plain values."""

    events: dict[str, list[StoredEvent]] = field(default_factory=dict)
    seals: dict[str, list[StoredSeal]] = field(default_factory=dict)
    drops: dict[str, list[StoredDrop]] = field(default_factory=dict)
    leaves: list[bytes] = field(default_factory=list)
    checkpoint: SignedCheckpoint | None = None
    #: Each session's running chain, as the collector keeps it (:meth:`collect`).
    runs: dict[str, ChainRun] = field(default_factory=dict)

    def ingest(self, session_id: str, events: list[StoredEvent], batch: int) -> None:
        self.events.setdefault(session_id, []).extend(events)
        for i in range(0, len(events), batch):
            self.leaves.append(batch_leaf(session_id, events[i : i + batch]))

    def collect(self, session_id: str, batch: list[StoredEvent]) -> bytes:
        """Store one batch as the collector does: its leaf and the session's running
        chain from ``running.batch_and_run`` (chained entries where the chain holds)."""
        self.events.setdefault(session_id, []).extend(batch)
        ordered = sorted(batch, key=lambda e: e.sequence_number)
        leaf, self.runs[session_id] = batch_and_run(
            session_id, ordered, self.runs.get(session_id, ChainRun())
        )
        self.leaves.append(leaf)
        return leaf

    def seal(self, session_id: str, seal: StoredSeal) -> None:
        self.seals.setdefault(session_id, []).append(seal)
        self.leaves.append(seal_leaf(session_id, seal))

    def drop(self, session_id: str, drop: StoredDrop) -> None:
        self.drops.setdefault(session_id, []).append(drop)
        self.leaves.append(drop_leaf(session_id, drop))

    def sign(self) -> SignedCheckpoint:
        tree = MerkleTree.of(self.leaves)
        self.checkpoint = sign(
            KEY, origin="test collector", tree_size=tree.size, root_hash=tree.root(), time_ns=T0
        )
        return self.checkpoint

    def verify(self) -> VerifyReport:
        return verify_store(
            self.events,
            self.seals,
            self.leaves,
            self.checkpoint,
            KEY.public_key(),
            drops=self.drops,
        )


def build_store(
    sessions: int = 3, events: int = 25, batch: int = 7, *, running: bool = False
) -> tuple[Store, list[str]]:
    """Sealed chained sessions; ``running``: leaves as the collector makes them (chained
    entries), else ``batch_leaf``'s content entries (what every store held before)."""
    store = Store()
    ids = [str(uuid.UUID(int=i + 1)) for i in range(sessions)]
    for sid in ids:
        evs = session_events(sid, events)
        if running:
            for i in range(0, len(evs), batch):
                store.collect(sid, evs[i : i + batch])
        else:
            store.ingest(sid, evs, batch)
        store.drop(sid, StoredDrop(f"drop-{sid[-4:]}", "boundary", T0, {"channel_full": 2}))
        store.seal(sid, seal_of(evs, sid))
    store.sign()
    return store, ids


def export(store: Store, session_id: str) -> bytes:
    """The bundle of one session of ``store`` (its leaves, their proofs, the checkpoint)."""
    assert store.checkpoint is not None
    tree = MerkleTree.of(store.leaves)
    mine = [
        (i, leaf)
        for i, leaf in enumerate(store.leaves)
        if parse_leaf(leaf).session_id == session_id
    ]
    return make_bundle(
        session_id,
        events=store.events[session_id],
        seals=store.seals[session_id],
        drops=store.drops[session_id],
        tree=tree,
        leaves=mine,
        checkpoint=store.checkpoint,
    )

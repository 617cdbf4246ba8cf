"""Appending to the store log without reading its state first (storelog.KnownFrontier).

Each collector remembers the frontier it last wrote and swaps it only if the
row still holds exactly that; these tests make the hint wrong in each way it
can be (another writer, a rolled-back transaction, a hand edit) and check the
log never forks and ``verify`` still passes.
"""

from __future__ import annotations

import threading
import uuid

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from boundary_audit.collector import Storage, open_storage
from boundary_audit.collector.ingest import parse_ingest_request
from boundary_audit.collector.model import Identity
from boundary_audit.collector.storelog import KnownFrontier, append_leaves
from boundary_audit.collector.trail import read_leaves, verify_db
from boundary_audit.evidence import Frontier

from .helpers import chained_request

pytestmark = pytest.mark.timeout(120)
#: Requests in the alternating-writers test: enough for every kind of turn.
ROUNDS = 12


def _store(storage: Storage, ident: Identity, *, sealed: bool) -> None:
    """One session's request: one leaf, or two with a seal (a batch and a seal)."""
    request = chained_request(str(uuid.uuid4()), 4, sealed=sealed)
    storage.ingest(parse_ingest_request(request.SerializeToString()), ident)


def _state_matches_leaves(storage: Storage) -> int:
    """The log_state row is the frontier of exactly the stored leaves; their number."""
    leaves = read_leaves(storage)
    frontier = Frontier()
    for leaf in leaves:
        frontier.append(leaf)
    ((size, state),) = storage.query("SELECT size, frontier FROM log_state")
    assert (int(size), bytes.fromhex(state)) == (len(leaves), frontier.to_bytes())
    return len(leaves)


def test_alternating_writers_keep_one_log(db_url: str) -> None:
    """Two collectors on one database take turns: each one's hint is stale every
    other time, single- and two-leaf appends alike; no index is lost or reused."""
    a, b = open_storage(db_url), open_storage(db_url)
    key = Ed25519PrivateKey.generate()
    try:
        ident = a.authenticate(a.create_token("agent-1"))
        assert ident is not None
        expected = 0
        for i in range(ROUNDS):
            writer = (a, b)[(i // 2) % 2]  # a, a, b, b, ...: fresh and stale hints
            sealed = i % 3 == 0
            _store(writer, ident, sealed=sealed)
            expected += 2 if sealed else 1
            assert _state_matches_leaves(a) == expected
        a.checkpoint(key)
        report = verify_db(b, key.public_key())
        assert report.ok, report.failures()
        assert report.events_checked == 4 * ROUNDS
    finally:
        a.close()
        b.close()


def test_a_hint_from_a_rolled_back_append_is_not_trusted(storage: Storage) -> None:
    """A transaction that appended and then failed leaves the hint ahead of the
    row; the next append must notice and extend what was committed."""
    key = Ed25519PrivateKey.generate()
    ident = storage.authenticate(storage.create_token("agent-1"))
    assert ident is not None
    _store(storage, ident, sealed=False)

    class Abort(Exception):
        pass

    def append_then_fail(tx: object) -> None:
        append_leaves(
            tx,  # type: ignore[arg-type]  # a Tx of this storage
            storage.select_log_sql,
            [b"never committed"],
            storage.known_frontier,
            fused_sql=storage.fused_append_sql,
        )
        raise Abort

    with pytest.raises(Abort):
        storage.write_grouped(append_then_fail)
    assert _state_matches_leaves(storage) == 1
    _store(storage, ident, sealed=True)
    assert _state_matches_leaves(storage) == 3
    storage.checkpoint(key)
    report = verify_db(storage, key.public_key())
    assert report.ok, report.failures()


def test_a_hand_edited_state_is_read_not_overwritten(storage: Storage) -> None:
    """Someone rewrites log_state behind the collector's back: the next append
    builds on what the row says now (and verify names the rewrite)."""
    key = Ed25519PrivateKey.generate()
    ident = storage.authenticate(storage.create_token("agent-1"))
    assert ident is not None
    _store(storage, ident, sealed=False)
    storage.checkpoint(key)
    forged = Frontier()
    forged.append(b"a forged first leaf")
    with storage.transaction() as tx:
        tx.execute("UPDATE log_state SET frontier = ? WHERE id = 1", (forged.to_bytes().hex(),))
    _store(storage, ident, sealed=False)
    forged.append(read_leaves(storage)[-1])
    ((state,),) = storage.query("SELECT frontier FROM log_state")
    assert bytes.fromhex(state) == forged.to_bytes()
    storage.checkpoint(key)
    report = verify_db(storage, key.public_key())
    assert not report.ok
    assert {str(f.kind) for f in report.failures()} >= {"log_mismatch"}


#: Threads ingesting at once through one collector, and requests each: the
#: collector's own threads share its hint (PostgreSQL runs them in parallel).
THREADS, REQUESTS_PER_THREAD = 4, 25


def test_threads_of_one_collector_share_the_hint_safely(db_url: str) -> None:
    """Many requests at once through one storage: every append reads the hint
    once, so no two leaves get one index and the state is the leaves' frontier."""
    storage = open_storage(db_url)
    key = Ed25519PrivateKey.generate()
    errors: list[BaseException] = []
    try:
        ident = storage.authenticate(storage.create_token("agent-1"))
        assert ident is not None

        def run() -> None:
            try:
                for _ in range(REQUESTS_PER_THREAD):
                    _store(storage, ident, sealed=False)
            except BaseException as exc:  # reported below, in the test's thread
                errors.append(exc)

        threads = [threading.Thread(target=run) for _ in range(THREADS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []
        assert _state_matches_leaves(storage) == THREADS * REQUESTS_PER_THREAD
        storage.checkpoint(key)
        report = verify_db(storage, key.public_key())
        assert report.ok, report.failures()
    finally:
        storage.close()


class _MovingHint(KnownFrontier):
    """A hint another thread moves right after this append first looks at it."""

    def __init__(self, first: bytes, then: bytes) -> None:
        self._reads = [first]
        self._then = then

    @property
    def frontier(self) -> bytes | None:
        return self._reads.pop() if self._reads else self._then

    @frontier.setter
    def frontier(self, value: bytes | None) -> None:
        self._then = value or b""


def test_an_append_extends_the_hint_it_read_even_when_it_moves(storage: Storage) -> None:
    """The hint is read once: swapping on a newer frontier than the one it
    extended would write a wrong state (what two reads of it once did)."""
    ident = storage.authenticate(storage.create_token("agent-1"))
    assert ident is not None
    _store(storage, ident, sealed=False)
    ((before,),) = storage.query("SELECT frontier FROM log_state")
    _store(storage, ident, sealed=False)  # the "other thread": the row moves on
    ((now,),) = storage.query("SELECT frontier FROM log_state")
    hint = _MovingHint(first=bytes.fromhex(before), then=bytes.fromhex(now))
    with storage.transaction() as tx:
        append_leaves(
            tx, storage.select_log_sql, [b"a third leaf"], hint,
            fused_sql=storage.fused_append_sql,
        )  # fmt: skip
    assert _state_matches_leaves(storage) == 3

"""The store log: every stored batch, seal and drop report as a leaf of one Merkle tree.

Appended in the ingest transaction that stores the rows (so a row is
never committed without its leaf, nor a leaf without its row), under the
lock of the one-row ``log_state`` table that holds the tree's frontier
(PostgreSQL: ``SELECT ... FOR UPDATE``; SQLite has one writer): several
replicas on one database append to one log, never forked. Signed
checkpoints are taken under the same lock. Leaves: ``evidence.leaves``.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any, Protocol

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from boundary_audit.evidence import Frontier, SignedCheckpoint, sign

#: The session of drop reports that name none (leaves need a UUID).
NO_SESSION = str(uuid.UUID(int=0))
#: The ``origin`` line of every checkpoint this collector signs.
ORIGIN = "boundary-audit collector store log v1"
#: The frontier of an empty log, hex (what migration 4 seeds).
EMPTY_FRONTIER_HEX = Frontier().to_bytes().hex()


class _Tx(Protocol):
    def execute(self, sql: str, params: Sequence[Any] = ()) -> int: ...
    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> int: ...
    def one(self, sql: str, params: Sequence[Any] = ()) -> tuple[Any, ...] | None: ...


def _frontier(tx: _Tx, select_sql: str) -> Frontier:
    row = tx.one(select_sql)
    if row is None:
        raise RuntimeError("log_state has no row: the schema was not migrated")
    return Frontier.from_bytes(bytes.fromhex(row[0]))


#: Compare-and-swap of the log's state: only when it is still the frontier
#: this process last wrote (the row lock is taken, as FOR UPDATE would).
SWAP_SQL = "UPDATE log_state SET size = ?, frontier = ? WHERE id = 1 AND frontier = ?"
INSERT_SQL = "INSERT INTO log_leaves (leaf_index, leaf) VALUES (?, ?)"


class KnownFrontier:
    """The frontier this process last appended to, so the next append need not read it.

    Only a hint: an append swaps the state only if the row still holds exactly
    this frontier (another replica's append, a rolled-back transaction or a
    hand edit make it differ; the append then reads the row under its lock).
    A frontier is the whole tree's state, so equal frontiers mean equal logs.
    """

    def __init__(self) -> None:
        self.frontier: bytes | None = None


def append_leaves(
    tx: _Tx,
    select_sql: str,
    leaves: Sequence[bytes],
    known: KnownFrontier | None = None,
    *,
    fused_sql: str | None = None,
) -> int:
    """Append ``leaves`` in order (locking the log until commit); the new tree size.

    With ``known``, first tries the compare-and-swap (no read of the row);
    ``fused_sql`` is the engine's one-statement swap-and-insert of a single
    leaf, the common case of one session per request (parameters: size, new
    frontier, old frontier, index, leaf; row count 0 when the swap did not
    match). PostgreSQL's client spends about half the CPU on it that it
    spends on read, insert and update (benchmarks/evidence_cost.py).
    """
    if not leaves:
        return -1
    # Read once: the collector's other threads move the hint meanwhile, and a
    # swap conditioned on a newer frontier than the one extended would match
    # and write a wrong state (the leaf index's key then refuses it).
    hint = known.frontier if known is not None else None
    if known is not None and hint is not None:
        frontier = Frontier.from_bytes(hint)
        rows = [(frontier.append(leaf), leaf) for leaf in leaves]
        new = frontier.to_bytes()
        swap = (frontier.size, new.hex(), hint.hex())
        if fused_sql is not None and len(rows) == 1:
            done = tx.execute(fused_sql, (*swap, *rows[0])) == 1
        elif done := tx.execute(SWAP_SQL, swap) == 1:
            _insert(tx, rows)
        if done:
            known.frontier = new
            return frontier.size
    frontier = _frontier(tx, select_sql)
    rows = [(frontier.append(leaf), leaf) for leaf in leaves]
    _insert(tx, rows)
    new = frontier.to_bytes()
    tx.execute(
        "UPDATE log_state SET size = ?, frontier = ? WHERE id = 1", (frontier.size, new.hex())
    )
    if known is not None:
        known.frontier = new
    return frontier.size


def _insert(tx: _Tx, rows: list[tuple[int, bytes]]) -> None:
    # One row (the common case) as a plain statement: psycopg's executemany
    # runs a pipeline, several times the client CPU for a single row.
    if len(rows) == 1:
        tx.execute(INSERT_SQL, rows[0])
    else:
        tx.executemany(INSERT_SQL, rows)


def take_checkpoint(
    tx: _Tx, select_sql: str, key: Ed25519PrivateKey, now_ns: int, *, force: bool = False
) -> SignedCheckpoint | None:
    """Sign and store a checkpoint of the log as it is; None when the last one is current.

    Under the log's lock, so checkpoints of all replicas are in order of
    size; the time never goes back (a replica whose clock is behind signs
    the last checkpoint's time).
    """
    frontier = _frontier(tx, select_sql)
    last = tx.one("SELECT tree_size, time_ns FROM checkpoints ORDER BY id DESC LIMIT 1")
    if last is not None and int(last[0]) == frontier.size and not force:
        return None
    when = max(now_ns, int(last[1]) if last is not None else 0)
    signed = sign(
        key, origin=ORIGIN, tree_size=frontier.size, root_hash=frontier.root(), time_ns=when
    )
    tx.execute(
        "INSERT INTO checkpoints (tree_size, time_ns, text) VALUES (?, ?, ?)",
        (frontier.size, when, signed.to_text()),
    )
    return signed


__all__ = [
    "EMPTY_FRONTIER_HEX",
    "NO_SESSION",
    "ORIGIN",
    "KnownFrontier",
    "append_leaves",
    "take_checkpoint",
]

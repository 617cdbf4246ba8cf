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


def append_leaves(tx: _Tx, select_sql: str, leaves: Sequence[bytes]) -> int:
    """Append ``leaves`` in order (locking the log until commit); the new tree size."""
    if not leaves:
        return -1
    frontier = _frontier(tx, select_sql)
    rows = [(frontier.append(leaf), leaf) for leaf in leaves]
    tx.executemany("INSERT INTO log_leaves (leaf_index, leaf) VALUES (?, ?)", rows)
    tx.execute(
        "UPDATE log_state SET size = ?, frontier = ? WHERE id = 1",
        (frontier.size, frontier.to_bytes().hex()),
    )
    return frontier.size


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


__all__ = ["EMPTY_FRONTIER_HEX", "NO_SESSION", "ORIGIN", "append_leaves", "take_checkpoint"]

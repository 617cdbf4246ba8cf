"""Verify a whole store, whatever the database: records, the log, and the signed checkpoint.

:func:`verify_store` takes plain values (any mapping or iterable: a database
adaptor can produce them lazily, a session at a time) and checks, in order:

1. the checkpoint's signature (with the public key given, never one from
   the store);
2. that the first ``tree_size`` stored leaves have the checkpoint's head
   (the log was not rewritten, truncated or forked since it was signed);
   leaves after it are in the log but not yet signed (``not_checkpointed``);
3. for every session, that its stored events, seals and drop reports are
   exactly what its leaves committed to (naming each altered, deleted or
   inserted event by session and sequence number), and that its hash chain
   matches its seal.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Mapping, Sequence

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from .checkpoint import CheckpointError, SignedCheckpoint, parse, verify
from .compare import check_session
from .leaves import (
    EventRow,
    LeafError,
    ParsedLeaf,
    StoredDrop,
    StoredEvent,
    StoredSeal,
    parse_leaf,
)
from .merkle import Frontier, leaf_hash
from .report import FindingKind, VerifyReport

Progress = Callable[[int], None]


def authenticate_checkpoint(
    report: VerifyReport,
    checkpoint: SignedCheckpoint | str | bytes | None,
    public_key: Ed25519PublicKey,
) -> SignedCheckpoint | None:
    """The checkpoint if it parses and its signature verifies; findings otherwise."""
    if checkpoint is None:
        report.add(FindingKind.CHECKPOINT_MISSING, detail="no signed checkpoint to verify against")
        return None
    try:
        signed = checkpoint if isinstance(checkpoint, SignedCheckpoint) else parse(checkpoint)
        verify(signed, public_key)
    except CheckpointError as exc:
        report.add(FindingKind.CHECKPOINT_INVALID, detail=str(exc))
        return None
    report.checkpoint_size = signed.checkpoint.tree_size
    report.checkpoint_time_ns = signed.checkpoint.timestamp_ns
    return signed


def verify_store(
    events_by_session: Mapping[str, Iterable[StoredEvent] | Iterable[EventRow]],
    seals: Mapping[str, Sequence[StoredSeal]],
    leaves: Sequence[bytes],
    checkpoint: SignedCheckpoint | str | bytes | None,
    public_key: Ed25519PublicKey,
    *,
    drops: Mapping[str, Sequence[StoredDrop]] | None = None,
    sessions: Collection[str] | None = None,
    progress: Progress | None = None,
    earlier: Sequence[SignedCheckpoint | str | bytes] = (),
) -> VerifyReport:
    """Check a store against its log and the latest signed checkpoint.

    ``events_by_session``: every stored event, by session; ``seals`` and
    ``drops``: the stored seals and drop reports, by session; ``leaves``:
    the stored log, leaf bytes in index order. ``sessions`` limits the
    per-session checks (the log is always checked whole). ``progress`` is
    called with the number of events checked after each session.
    ``earlier``: older checkpoints kept by the collector; each must verify
    and still match the first leaves of the log (one that does not names a
    rewrite of the history it covered, even if the latest was re-signed).
    """
    report = VerifyReport()
    drops = drops or {}
    signed = authenticate_checkpoint(report, checkpoint, public_key)
    if signed is not None:
        _check_log(report, leaves, signed)
        _check_earlier(report, leaves, signed, earlier, public_key)
    by_session: dict[str, list[tuple[int, ParsedLeaf]]] = {}
    for index, data in enumerate(leaves):
        try:
            leaf = parse_leaf(data)
        except LeafError as exc:
            report.add(FindingKind.LEAF_MALFORMED, None, None, f"leaf {index}: {exc}")
            continue
        by_session.setdefault(leaf.session_id, []).append((index, leaf))
    report.leaves_checked = len(leaves)
    every = set(events_by_session) | set(seals) | set(drops) | set(by_session)
    chosen = sorted(every if sessions is None else every & set(sessions))
    for session_id in chosen:
        check_session(
            report,
            session_id,
            events=events_by_session.get(session_id, ()),
            seals=seals.get(session_id, ()),
            drops=drops.get(session_id, ()),
            leaves=by_session.get(session_id, ()),
        )
        if progress is not None:
            progress(report.events_checked)
    return report


def _check_earlier(
    report: VerifyReport,
    leaves: Sequence[bytes],
    latest: SignedCheckpoint,
    earlier: Sequence[SignedCheckpoint | str | bytes],
    public_key: Ed25519PublicKey,
) -> None:
    """Each older checkpoint verifies, precedes the latest, and still matches the log."""
    good: list[SignedCheckpoint] = []
    for i, text in enumerate(earlier):
        try:
            c = text if isinstance(text, SignedCheckpoint) else parse(text)
            verify(c, public_key)
        except CheckpointError as exc:
            report.add(FindingKind.CHECKPOINT_INVALID, detail=f"earlier checkpoint {i}: {exc}")
            continue
        cp, last = c.checkpoint, latest.checkpoint
        if cp.tree_size > last.tree_size or cp.timestamp_ns > last.timestamp_ns:
            report.add(
                FindingKind.CHECKPOINT_INVALID,
                detail=f"earlier checkpoint {i} (size {cp.tree_size}) is not before the latest",
            )
            continue
        good.append(c)
    heads = _heads(leaves, {c.checkpoint.tree_size for c in good})
    for c in good:
        cp = c.checkpoint
        if heads.get(cp.tree_size) != cp.root_hash:
            report.add(
                FindingKind.LOG_MISMATCH,
                detail=f"the first {cp.tree_size} leaves no longer have the head signed at "
                f"{cp.timestamp_ns} ns: the history it covered was rewritten",
            )


def _heads(leaves: Sequence[bytes], sizes: set[int]) -> dict[int, bytes]:
    """The tree head at each of ``sizes`` (those the log reaches), in one pass."""
    heads: dict[int, bytes] = {}
    frontier = Frontier()
    if 0 in sizes:
        heads[0] = frontier.root()
    top = min(max(sizes, default=0), len(leaves))
    for data in leaves[:top]:
        frontier.append_hash(leaf_hash(data))
        if frontier.size in sizes:
            heads[frontier.size] = frontier.root()
    return heads


def _check_log(report: VerifyReport, leaves: Sequence[bytes], signed: SignedCheckpoint) -> None:
    size = signed.checkpoint.tree_size
    if len(leaves) < size:
        report.add(
            FindingKind.LOG_TRUNCATED,
            detail=f"the log holds {len(leaves)} leaves; the checkpoint signed {size}",
        )
        return
    frontier = Frontier()
    for data in leaves[:size]:
        frontier.append_hash(leaf_hash(data))
    if frontier.root() != signed.checkpoint.root_hash:
        report.add(
            FindingKind.LOG_MISMATCH,
            detail=f"the first {size} leaves do not have the signed head: the log was rewritten",
        )
    if len(leaves) > size:
        report.add(
            FindingKind.NOT_CHECKPOINTED,
            detail=f"{len(leaves) - size} leaves appended after the checkpoint, not yet signed",
        )


__all__ = ["Progress", "authenticate_checkpoint", "verify_store"]

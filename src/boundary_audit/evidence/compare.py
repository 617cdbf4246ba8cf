"""One session's stored records against the leaves the log committed to, and its hash chain.

Shared by :func:`~.store.verify_store` (a whole store) and
:func:`~.bundle.verify_bundle` (one exported session). Pure.
"""

from __future__ import annotations

import collections
import hashlib
from collections.abc import Iterable, Sequence

from ..wire import chain
from .leaves import (
    LeafKind,
    ParsedLeaf,
    StoredDrop,
    StoredEvent,
    StoredSeal,
    drop_body,
    entry_digest,
    entry_from_body,
    entry_sequence,
    event_body,
    seal_body,
)
from .report import FindingKind, VerifyReport

_sha256 = hashlib.sha256
#: Bytes of an entry's sequence number and event hash (the rest is the digest).
_CONTENT_END = 8 + 32


def _seq(e: StoredEvent) -> int:
    return e.sequence_number


class _Chain:
    """wire.chain.check(), computed in the same pass as the entries (one encoding per event)."""

    __slots__ = ("bad", "checked", "count", "done", "head", "last", "limit")

    def __init__(self, session_id: str, limit: int) -> None:
        self.head = chain.genesis(session_id)
        self.count = 0
        self.last = -1
        self.limit = limit
        self.done = False
        #: First bad sequence number once done (None: placed nowhere).
        self.bad: int | None = None
        self.checked = 0

    def add(self, seq: int, body: bytes, claimed: bytes) -> None:
        if seq <= self.last or self.count >= self.limit:
            self.done, self.bad, self.checked = True, seq, self.count
            return
        self.last = seq
        self.head = digest = _sha256(self.head + body).digest()
        if claimed and claimed != digest:
            self.done, self.bad, self.checked = True, seq, self.count + 1
            return
        self.count += 1

    def result(self, seal_head: bytes) -> chain.ChainCheck:
        if self.done:
            return chain.ChainCheck(False, self.bad, self.checked)
        if self.count != self.limit:
            return chain.ChainCheck(False, self.last + 1, self.count)
        return chain.ChainCheck(self.head == seal_head, None, self.count)


def latest_seal(seals: Sequence[StoredSeal]) -> StoredSeal | None:
    """The seal that counts: the later ``sealed_at`` supersedes."""
    return max(seals, key=lambda s: s.sealed_at_ns) if seals else None


def check_session(
    report: VerifyReport,
    session_id: str,
    *,
    events: Iterable[StoredEvent],
    seals: Sequence[StoredSeal],
    drops: Sequence[StoredDrop],
    leaves: Sequence[tuple[int, ParsedLeaf]],
) -> None:
    """Add to ``report`` every difference between the stored records and ``leaves``."""
    stored = sorted(events, key=_seq)
    seal = latest_seal(seals)
    use_chain = seal is not None and bool(seal.chain_head)
    ch = _Chain(session_id, seal.chain_count if seal is not None and use_chain else 0)
    entries: list[bytes] = []
    append = entries.append
    any_digest = False
    for e in stored:
        body = event_body(e)
        digest = e.chain_digest
        append(entry_from_body(e.sequence_number, body, digest))
        if digest:
            any_digest = True
        if use_chain and not ch.done:
            ch.add(e.sequence_number, body, digest)
    report.events_checked += len(stored)
    report.sessions_checked += 1
    logged = sorted(x for _, leaf in leaves if leaf.kind is LeafKind.BATCH for x in leaf.entries)
    has_records = bool(stored) or bool(seals) or bool(drops)
    if leaves and not has_records:
        report.add(FindingKind.SESSION_DELETED, session_id, None, "in the log, not in the store")
    if b"".join(logged) != b"".join(entries):
        _diff_events(report, session_id, logged, entries)
    _diff_seals(report, session_id, seals, leaves)
    _diff_drops(report, session_id, drops, leaves)
    if seal is None:
        if stored:
            kind = FindingKind.UNSEALED if any_digest else FindingKind.UNVERIFIED
            report.add(kind, session_id, None, "no seal: the chain cannot be checked")
        return
    if not use_chain:
        report.add(FindingKind.UNVERIFIED, session_id, None, "the sender does not chain")
        return
    _report_chain(report, session_id, ch.result(seal.chain_head), seal)


def _report_chain(
    report: VerifyReport, session_id: str, result: chain.ChainCheck, seal: StoredSeal
) -> None:
    if result.ok:
        return
    missing = seal.chain_count - result.checked
    if (
        result.first_bad_sequence is not None
        and result.checked < seal.chain_count
        and 0 < missing <= seal.undelivered
        and result.first_bad_sequence > 0
    ):
        report.add(
            FindingKind.CHAIN_SHORT,
            session_id,
            result.first_bad_sequence,
            f"chain ends {missing} short; the seal says {seal.undelivered} undelivered",
        )
        return
    where = (
        f"first bad sequence number {result.first_bad_sequence}"
        if result.first_bad_sequence is not None
        else "every event matches its digest but the chain does not end in the seal's head"
    )
    report.add(
        FindingKind.CHAIN_BROKEN,
        session_id,
        result.first_bad_sequence,
        f"{where} ({result.checked} of {seal.chain_count} chained events checked)",
    )


def _diff_events(
    report: VerifyReport, session_id: str, logged: list[bytes], stored: list[bytes]
) -> None:
    want: dict[int, bytes] = {}
    for entry in logged:
        want.setdefault(entry_sequence(entry), entry)
    have = {entry_sequence(e): e for e in stored}
    for seq in sorted(want.keys() | have.keys()):
        w, h = want.get(seq), have.get(seq)
        if h is None:
            report.add(FindingKind.DELETED, session_id, seq, "in the log, not in the store")
        elif w is None:
            report.add(FindingKind.INSERTED, session_id, seq, "in the store, never in the log")
        elif w != h:
            what = (
                "content differs from the logged event"
                if w[:_CONTENT_END] != h[:_CONTENT_END]
                else f"chain digest differs (logged {entry_digest(w).hex()[:16]}...)"
            )
            report.add(FindingKind.ALTERED, session_id, seq, what)


def _diff_seals(
    report: VerifyReport,
    session_id: str,
    seals: Sequence[StoredSeal],
    leaves: Sequence[tuple[int, ParsedLeaf]],
) -> None:
    logged = collections.Counter(leaf.body for _, leaf in leaves if leaf.kind is LeafKind.SEAL)
    have = collections.Counter(seal_body(s) for s in seals)
    missing = list((logged - have).elements())
    extra = list((have - logged).elements())
    paired = min(len(missing), len(extra))
    for _ in range(paired):
        report.add(FindingKind.SEAL_ALTERED, session_id, None, "seal differs from the logged one")
    for _ in missing[paired:]:
        report.add(FindingKind.SEAL_DELETED, session_id, None, "a logged seal is not stored")
    for _ in extra[paired:]:
        report.add(FindingKind.SEAL_INSERTED, session_id, None, "a stored seal was never logged")


def _diff_drops(
    report: VerifyReport,
    session_id: str,
    drops: Sequence[StoredDrop],
    leaves: Sequence[tuple[int, ParsedLeaf]],
) -> None:
    logged = {leaf.report_id: leaf.body for _, leaf in leaves if leaf.kind is LeafKind.DROP}
    have = {d.report_id: drop_body(d) for d in drops}
    for rid in sorted(logged.keys() | have.keys()):
        w, h = logged.get(rid), have.get(rid)
        if h is None:
            report.add(FindingKind.DROP_DELETED, session_id, None, f"drop report {rid} not stored")
        elif w is None:
            report.add(FindingKind.DROP_INSERTED, session_id, None, f"drop report {rid} not logged")
        elif w != h:
            report.add(FindingKind.DROP_ALTERED, session_id, None, f"drop report {rid} differs")


__all__ = ["check_session", "latest_seal"]

"""One session's stored records against the leaves the log committed to, and its hash chain.

Shared by :func:`~.store.verify_store` (a whole store) and
:func:`~.bundle.verify_bundle` (one exported session). Pure.
"""

from __future__ import annotations

import collections
import hashlib
import operator
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from ..wire import chain
from .leaves import (
    EVENT_PREFIX,
    EventRow,
    LeafKind,
    ParsedLeaf,
    StoredDrop,
    StoredEvent,
    StoredSeal,
    _pack_head_truth,
    drop_body,
    entry_digest,
    entry_sequence,
    seal_body,
    text,
)
from .report import FindingKind, VerifyReport

_sha256 = hashlib.sha256
_SEQ = operator.itemgetter(0)
_pack_len = struct.Struct(">I").pack
_NO_CLAIM = b"\x00" + bytes(chain.DIGEST_SIZE)
#: Bytes of an entry's sequence number and event hash (the rest is the digest).
_CONTENT_END = 8 + 32


@dataclass(slots=True)
class Scan:
    """One pass over a session's stored events: their leaf entries and its chain check."""

    entries: list[bytes]
    #: wire.chain.check()'s verdict (None when there is no chain to check).
    chain: chain.ChainCheck | None
    #: Some event carried a chain digest.
    any_digest: bool


def scan(
    session_id: str, stored: Sequence[StoredEvent], seal_head: bytes | None, seal_count: int
) -> Scan:
    """:func:`scan_rows` over StoredEvents."""
    return scan_rows(session_id, [e.row() for e in stored], seal_head, seal_count)


def as_rows(events: Iterable[StoredEvent] | Iterable[EventRow]) -> list[EventRow]:
    """Events as :data:`.leaves.EventRow` tuples (rows pass through as they are)."""
    rows = events if isinstance(events, list) else list(events)
    if not rows or isinstance(rows[0], tuple):
        return rows  # type: ignore[return-value]  # one kind or the other, never mixed
    return [e.row() for e in rows]  # type: ignore[union-attr]


def scan_rows(
    session_id: str, stored: Sequence[EventRow], seal_head: bytes | None, seal_count: int
) -> Scan:
    """Entries (leaves.event_entry) and wire.chain.check() in one pass, one encoding per event.

    ``stored`` in increasing sequence order. With ``seal_head`` None the
    chain is not checked. Inlined (no call per event): the verifier's hot loop.
    """
    entries: list[bytes] = []
    append = entries.append
    texts: dict[
        str, bytes
    ] = {}  # text(s) (never empty) of the few distinct methods, rules and names
    checking = seal_head is not None
    head = chain.genesis(session_id) if checking else b""
    count = checked = 0
    last = -1
    bad: int | None = None
    any_digest = False
    for seq, time_ns, allowed, method, url, rule, name, digest in stored:
        m = texts.get(method) or texts.setdefault(method, text(method))
        r = texts.get(rule) or texts.setdefault(rule, text(rule))
        n = texts.get(name) or texts.setdefault(name, text(name))
        u = url.encode("utf-8", "surrogatepass")
        body = b"".join((_pack_head_truth(seq, time_ns, allowed), m, _pack_len(len(u)), u, r, n))
        content = body[:8] + _sha256(EVENT_PREFIX + body).digest()  # body starts u64(seq)
        if digest:
            any_digest = True
            append(content + b"\x01" + digest)
        else:
            append(content + _NO_CLAIM)
        if checking:
            if seq <= last or count >= seal_count:
                checking, bad, checked = False, seq, count
                continue
            last = seq
            head = _sha256(head + body).digest()
            if digest and digest != head:
                checking, bad, checked = False, seq, count + 1
                continue
            count += 1
    if seal_head is None:
        return Scan(entries, None, any_digest)
    if bad is not None:
        verdict = chain.ChainCheck(False, bad, checked)
    elif count != seal_count:
        verdict = chain.ChainCheck(False, last + 1, count)
    else:
        verdict = chain.ChainCheck(head == seal_head, None, count)
    return Scan(entries, verdict, any_digest)


def latest_seal(seals: Sequence[StoredSeal]) -> StoredSeal | None:
    """The seal that counts: the later ``sealed_at`` supersedes."""
    return max(seals, key=lambda s: s.sealed_at_ns) if seals else None


def check_session(
    report: VerifyReport,
    session_id: str,
    *,
    events: Iterable[StoredEvent] | Iterable[EventRow],
    seals: Sequence[StoredSeal],
    drops: Sequence[StoredDrop],
    leaves: Sequence[tuple[int, ParsedLeaf]],
) -> None:
    """Add to ``report`` every difference between the stored records and ``leaves``."""
    stored = sorted(as_rows(events), key=_SEQ)
    seal = latest_seal(seals)
    use_chain = seal is not None and bool(seal.chain_head)
    result = scan_rows(
        session_id,
        stored,
        seal.chain_head if seal is not None and use_chain else None,
        seal.chain_count if seal is not None else 0,
    )
    any_digest = result.any_digest
    report.events_checked += len(stored)
    report.sessions_checked += 1
    has_records = bool(stored) or bool(seals) or bool(drops)
    if leaves and not has_records:
        report.add(FindingKind.SESSION_DELETED, session_id, None, "in the log, not in the store")
    batches = [leaf.body for _, leaf in leaves if leaf.kind is LeafKind.BATCH]
    mine = b"".join(result.entries)
    # The common case in one comparison: batches logged in sequence order.
    if b"".join(batches) != mine:
        logged = sorted(e for _, leaf in leaves for e in leaf.entries)
        if b"".join(logged) != mine:
            _diff_events(report, session_id, logged, result.entries)
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
    assert result.chain is not None
    _report_chain(report, session_id, result.chain, seal)


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

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
from dataclasses import dataclass, field

from ..wire import chain
from .leaves import (
    _NO_CLAIM,
    DIGEST_AT,
    ENTRY_SIZE,
    EVENT_PREFIX,
    FLAG_AT,
    FLAG_CHAINED,
    EventRow,
    LeafKind,
    ParsedLeaf,
    StoredDrop,
    StoredEvent,
    StoredSeal,
    _pack_entry,
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
#: Where a stored event stands against the logged entry at its place (SAME: false).
SAME, CONTENT_DIFFERS, DIGEST_DIFFERS, MISPLACED = 0, 1, 2, 3
#: The stand-in for "no logged entry" at a stored event's place (slow path):
#: its number never matches, so the event is never judged against it.
_ABSENT = b"\xff" * ENTRY_SIZE


@dataclass(slots=True)
class Scan:
    """One pass over a session's stored events: their chain check and how each meets the log."""

    #: wire.chain.check()'s verdict (None when there is no chain to check).
    chain: chain.ChainCheck | None
    #: Some event carried a chain digest.
    any_digest: bool
    #: (index in the stored events, CONTENT_DIFFERS / DIGEST_DIFFERS / MISPLACED)
    #: of each stored event that is not what the logged entry at its place says.
    differ: list[tuple[int, int]]
    #: False: a strict scan stopped at a logged entry of another number
    #: (``differ`` and ``chain`` are then incomplete).
    aligned: bool = True
    #: Each event's content entry, when asked for (else empty).
    entries: list[bytes] = field(default_factory=list)


def scan(
    session_id: str, stored: Sequence[StoredEvent], seal_head: bytes | None, seal_count: int
) -> Scan:
    """The chain verdict over StoredEvents (:func:`scan_rows` with no log to meet)."""
    return scan_rows(session_id, [e.row() for e in stored], seal_head, seal_count)


def as_rows(events: Iterable[StoredEvent] | Iterable[EventRow]) -> list[EventRow]:
    """Events as :data:`.leaves.EventRow` tuples (rows pass through as they are)."""
    rows = events if isinstance(events, list) else list(events)
    if not rows or isinstance(rows[0], tuple):
        return rows  # type: ignore[return-value]  # one kind or the other, never mixed
    return [e.row() for e in rows]  # type: ignore[union-attr]


def scan_rows(
    session_id: str,
    stored: Sequence[EventRow],
    seal_head: bytes | None,
    seal_count: int,
    logged: bytes | None = None,
    *,
    strict: bool = False,
) -> Scan:
    """wire.chain.check() and each event against its logged entry, in one pass.

    ``stored`` in increasing sequence order. With ``seal_head`` None the
    chain is not checked. ``logged``: the logged entries in lockstep with
    ``stored`` (entry i is ENTRY_SIZE * i bytes in); None: no entries to
    meet. ``strict``: stop (``aligned`` False) at the first entry of another
    number. A stored event meets a chained entry (flag 2) iff hashing it onto
    the entry's own P gives the entry's D and its stored digest is D; else it
    must be the content form. When P is the running head (the normal case),
    that one SHA-256 is the chain's step too: one hash per event.
    """
    if logged is not None and len(logged) != ENTRY_SIZE * len(stored):
        if strict:
            return Scan(None, False, [], aligned=False)
        raise ValueError("the logged entries are not one per stored event")
    # Only content entries (every store logged before chained entries existed):
    # build them all and compare once, as then; walk entry by entry only if they differ.
    if logged is not None and FLAG_CHAINED not in logged[FLAG_AT::ENTRY_SIZE]:
        built = _scan(session_id, stored, seal_head, seal_count, None, strict=strict, build=True)
        if b"".join(built.entries) == logged:
            return Scan(built.chain, built.any_digest, [])
    return _scan(session_id, stored, seal_head, seal_count, logged, strict=strict, build=False)


def _scan(  # noqa: PLR0912, PLR0915 - the verifier's hot loop, inlined on purpose
    session_id: str,
    stored: Sequence[EventRow],
    seal_head: bytes | None,
    seal_count: int,
    logged: bytes | None,
    *,
    strict: bool,
    build: bool,
) -> Scan:
    """:func:`scan_rows`'s pass; ``build``: make each event's content entry instead
    (``Scan.entries``). Inlined (no call per event): the verifier's hot loop."""
    texts: dict[str, bytes] = {}  # text(s) (never empty) of the few methods, rules and names
    checking = seal_head is not None
    count = checked = 0
    last = -1
    bad: int | None = None
    any_digest = False
    differ: list[tuple[int, int]] = []
    mark = differ.append
    sha256, prefix, pack_head, pack_len = _sha256, EVENT_PREFIX, _pack_head_truth, _pack_len
    meeting = logged is not None
    log = logged or b""
    size, flag_at, digest_at, chained, pack_entry = (
        ENTRY_SIZE,
        FLAG_AT,
        DIGEST_AT,
        FLAG_CHAINED,
        _pack_entry,
    )
    entries: list[bytes] = []
    append = entries.append
    genesis = chain.genesis(session_id) if checking or meeting else b""
    head = genesis
    #: The P the next chained entry should hold: the D of the entry before it
    #: (the head the collector had then), None when unknown.
    guess: bytes | None = genesis
    at = 0
    for i, (seq, time_ns, allowed, method, url, rule, name, digest) in enumerate(stored):
        m = texts.get(method) or texts.setdefault(method, text(method))
        r = texts.get(rule) or texts.setdefault(rule, text(rule))
        n = texts.get(name) or texts.setdefault(name, text(name))
        u = url.encode("utf-8", "surrogatepass")
        body = b"".join((pack_head(seq, time_ns, allowed), m, pack_len(len(u)), u, r, n))
        if digest:
            any_digest = True
        step = before = None
        if build:
            claim = b"\x01" + digest if digest else _NO_CLAIM
            append(body[:8] + sha256(prefix + body).digest() + claim)
        elif meeting:
            entry = log[at : at + size]
            at += size
            what = SAME
            if entry[flag_at] == chained:
                met = False
                if guess is None and at > size and log[at - 2 * size + flag_at]:
                    # After a content entry with a digest (a store logged by content
                    # before chained entries existed), that digest.
                    guess = log[at - 2 * size + digest_at : at - size]
                if guess is not None:
                    # The common case in one comparison: the entry is this event chained
                    # onto the D before it (body starts u64(seq), as an entry does).
                    step = sha256(guess + body).digest()
                    # (guess and step are 32-byte hashes: the pack neither pads nor cuts.)
                    met = entry == pack_entry(seq, guess, chained, step)
                if met:
                    before, guess = guess, step
                    if digest != step:
                        what = DIGEST_DIFFERS
                else:
                    what, before, step = _judge_chained(entry, body, digest, guess, step)
                    guess = entry[digest_at:]
            else:
                content = sha256(prefix + body).digest()
                # Concatenated, not packed: a stored digest may have any length.
                if entry != body[:8] + content + (b"\x01" + digest if digest else _NO_CLAIM):
                    what = _judge_content(entry, body, content)
                guess = None
            if what:
                if what == MISPLACED:
                    if strict:
                        return Scan(None, any_digest, differ, aligned=False)
                    before = step = guess = None
                mark((i, what))
        if checking:
            if seq <= last or count >= seal_count:
                checking, bad, checked = False, seq, count
                continue
            last = seq
            # The logged entry's P was the running head (the normal case): its hash is the step.
            head = step if step is not None and before == head else sha256(head + body).digest()
            if digest and digest != head:
                checking, bad, checked = False, seq, count + 1
                continue
            count += 1
    if seal_head is None:
        return Scan(None, any_digest, differ, entries=entries)
    if bad is not None:
        verdict = chain.ChainCheck(False, bad, checked)
    elif count != seal_count:
        verdict = chain.ChainCheck(False, last + 1, count)
    else:
        verdict = chain.ChainCheck(head == seal_head, None, count)
    return Scan(verdict, any_digest, differ, entries=entries)


def _judge_chained(
    entry: bytes, body: bytes, digest: bytes | None, guess: bytes | None, step: bytes | None
) -> tuple[int, bytes | None, bytes | None]:
    """(what differs, P, SHA-256(P || body)) of a chained entry the fast comparison missed;
    ``step`` is the hash over ``guess`` (reused when the entry's P is the guess)."""
    if entry[:8] != body[:8]:
        return MISPLACED, None, None
    before = entry[8:FLAG_AT]
    if step is None or before != guess:
        step = _sha256(before + body).digest()
    if step != entry[DIGEST_AT:]:
        return CONTENT_DIFFERS, before, step
    return (DIGEST_DIFFERS if digest != step else SAME), before, step


def _judge_content(entry: bytes, body: bytes, content: bytes) -> int:
    """What differs between a content entry and the event it does not match."""
    if entry[:8] != body[:8]:
        return MISPLACED
    return CONTENT_DIFFERS if entry[8:FLAG_AT] != content else DIGEST_DIFFERS


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
    seal_head = seal.chain_head if seal is not None and use_chain else None
    seal_count = seal.chain_count if seal is not None else 0
    report.events_checked += len(stored)
    report.sessions_checked += 1
    has_records = bool(stored) or bool(seals) or bool(drops)
    if leaves and not has_records:
        report.add(FindingKind.SESSION_DELETED, session_id, None, "in the log, not in the store")
    # The common case: batches logged in sequence order, one entry per stored
    # event, walked in lockstep (no entry is cut out, no mapping is built).
    joined = b"".join(leaf.body for _, leaf in leaves if leaf.kind is LeafKind.BATCH)
    result = None
    if len(joined) == ENTRY_SIZE * len(stored):
        result = scan_rows(session_id, stored, seal_head, seal_count, joined, strict=True)
    if result is not None and result.aligned:
        for i, what in result.differ:
            report.add(FindingKind.ALTERED, session_id, stored[i][0], _detail(what, joined, i))
    else:
        result = _diff_events(report, session_id, stored, leaves, seal_head, seal_count)
    _diff_seals(report, session_id, seals, leaves)
    _diff_drops(report, session_id, drops, leaves)
    if seal is None:
        if stored:
            kind = FindingKind.UNSEALED if result.any_digest else FindingKind.UNVERIFIED
            report.add(kind, session_id, None, "no seal: the chain cannot be checked")
        return
    if not use_chain:
        report.add(FindingKind.UNVERIFIED, session_id, None, "the sender does not chain")
        return
    assert result.chain is not None
    _report_chain(report, session_id, result.chain, seal)


def _detail(what: int, logged: bytes, i: int) -> str:
    """What differs in the event at place ``i`` of the lockstep ``logged`` entries."""
    if what == DIGEST_DIFFERS:
        entry = logged[i * ENTRY_SIZE : (i + 1) * ENTRY_SIZE]
        return f"chain digest differs (logged {entry_digest(entry).hex()[:16]}...)"
    return "content differs from the logged event"


def _diff_events(  # noqa: PLR0917 - a private helper of check_session
    report: VerifyReport,
    session_id: str,
    stored: list[EventRow],
    leaves: Sequence[tuple[int, ParsedLeaf]],
    seal_head: bytes | None,
    seal_count: int,
) -> Scan:
    """The slow path (batches out of order, or events deleted or inserted): each
    stored event meets the logged entry of its number, found by number."""
    want: dict[int, bytes] = {}
    for entry in sorted(e for _, leaf in leaves for e in leaf.entries):
        want.setdefault(entry_sequence(entry), entry)
    places: list[bytes] = []
    extra: dict[int, str] = {}  # index in stored -> why it is not in the log
    seen: set[int] = set()
    for i, row in enumerate(stored):
        seq = row[0]
        mine = want.get(seq)
        if mine is None or seq in seen:
            extra[i] = "in the store, never in the log" if mine is None else "stored twice"
            mine = _ABSENT
        seen.add(seq)
        places.append(mine)
    logged = b"".join(places)
    result = scan_rows(session_id, stored, seal_head, seal_count, logged)
    found: list[tuple[int, FindingKind, str]] = [
        (stored[i][0], FindingKind.ALTERED, _detail(what, logged, i))
        for i, what in result.differ
        if i not in extra
    ]
    found += [(stored[i][0], FindingKind.INSERTED, why) for i, why in extra.items()]
    found += [
        (seq, FindingKind.DELETED, "in the log, not in the store") for seq in want.keys() - seen
    ]
    for seq, kind, detail in sorted(found, key=_SEQ):
        report.add(kind, session_id, seq, detail)
    return result


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


__all__ = [
    "CONTENT_DIFFERS",
    "DIGEST_DIFFERS",
    "MISPLACED",
    "SAME",
    "Scan",
    "check_session",
    "latest_seal",
    "scan",
    "scan_rows",
]

"""One pass at ingest: a stored batch's leaf and the session's running chain.

A collector stores a session's events batch by batch, mostly in sequence
order. Keeping the chain's running state (events chained so far, the last
number, the head, the first event whose stored digest disagreed) lets it
judge the session when its seal arrives without reading the session back:
the same verdict as :func:`.compare.scan` over every stored event. A batch
below the last number (a late event filling a gap) breaks the run
(``count`` -1): then, and when more events than the seal counts arrived,
the verdict needs a full scan (:func:`run_verdict` returns None). While the
run is intact, an event whose stored digest is the chain's gets the chained
entry (:mod:`.leaves`, flag 2): one SHA-256 per event for both. Pure.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

from ..wire import chain
from .leaves import (
    _NO_DIGEST,
    EVENT_PREFIX,
    FLAG_CHAINED,
    FLAG_DIGEST,
    FLAG_NO_DIGEST,
    EventRow,
    LeafError,
    LeafKind,
    StoredEvent,
    _header,
    _pack_entry,
    _pack_head_truth,
    _u32,
    text,
)

_sha256 = hashlib.sha256
DIGEST_SIZE = chain.DIGEST_SIZE
#: ``count`` of a run that lost its order: only a full scan can judge the session.
BROKEN = -1


@dataclass(frozen=True, slots=True)
class ChainRun:
    """The chain over a session's stored events so far, in sequence order."""

    #: Events chained (BROKEN: an event arrived below the last number).
    count: int = 0
    #: The last number chained (-1: none yet).
    last: int = -1
    #: The head after ``count`` events (b"": the session's genesis).
    head: bytes = b""
    #: The first number whose stored digest is not the chain's (None: none).
    bad: int | None = None


def batch_and_run(
    session_id: str, events: Sequence[StoredEvent], run: ChainRun
) -> tuple[bytes, ChainRun]:
    """The batch leaf of ``events`` (increasing numbers) and the run extended by them."""
    return batch_and_run_rows(
        session_id,
        [e.row() for e in events],
        run,
    )  # fmt: skip


def batch_and_run_rows(
    session_id: str, rows: Sequence[EventRow], run: ChainRun
) -> tuple[bytes, ChainRun]:
    """:func:`batch_and_run` over :data:`EventRow` tuples: the collector's hot path.

    Each event is encoded once (:func:`.leaves.event_body`'s bytes), each
    distinct method, rule and name once per batch, in one loop. While the run
    is intact and an event's stored digest is the recomputed head, its entry
    is the chained form (flag 2, :mod:`.leaves`): the chain's one SHA-256
    commits it. Any other event (no digest, a disagreeing one, the run broken
    or judged bad) gets :func:`.leaves.batch_leaf`'s content form.
    """
    count, last, bad = run.count, run.last, run.bad
    head = run.head or chain.genesis(session_id)
    if len(head) != DIGEST_SIZE:
        # Not a head this code stored (a hand-edited row): judge by a full scan.
        count = BROKEN
    chaining = count != BROKEN and bad is None
    #: While judged (not BROKEN), ``last`` is the last number chained, or
    #: the bad one: an event below it changes what a full scan would say.
    ordered = count != BROKEN
    texts: dict[str, bytes] = {}
    entries: list[bytes] = []
    append = entries.append
    sha256 = _sha256
    pack_head, pack_len, pack_entry = _pack_head_truth, _u32.pack, _pack_entry
    prefix = EVENT_PREFIX
    for seq, time_ns, allowed, method, url, rule, name, digest in rows:
        m = texts.get(method) or texts.setdefault(method, text(method))
        r = texts.get(rule) or texts.setdefault(rule, text(rule))
        n = texts.get(name) or texts.setdefault(name, text(name))
        u = url.encode("utf-8", "surrogatepass")
        body = b"".join((pack_head(seq, time_ns, allowed), m, pack_len(len(u)), u, r, n))
        if ordered:
            if seq <= last:
                chaining, ordered, count = False, False, BROKEN
            elif chaining:
                last = seq
                before = head
                head = sha256(before + body).digest()
                count += 1
                if digest == head:  # the common case (so the digest is 32 bytes)
                    append(pack_entry(seq, before, FLAG_CHAINED, head))
                    continue
                if digest:
                    chaining, bad = False, seq
        if not digest:
            append(pack_entry(seq, sha256(prefix + body).digest(), FLAG_NO_DIGEST, _NO_DIGEST))
        elif len(digest) == DIGEST_SIZE:
            append(pack_entry(seq, sha256(prefix + body).digest(), FLAG_DIGEST, digest))
        else:
            raise LeafError(f"event {seq}: a chain digest is 32 bytes")
    entries.sort()  # already in order from a collector: a linear check
    leaf = _header(LeafKind.BATCH, session_id) + pack_len(len(entries)) + b"".join(entries)
    if count == BROKEN:
        return leaf, ChainRun(BROKEN, -1, b"", None)
    return leaf, ChainRun(count, last, head, bad)


def run_verdict(run: ChainRun, seal_head: bytes, seal_count: int) -> chain.ChainCheck | None:
    """The session's chain verdict from its run (None: a full scan must decide).

    The same answer as ``compare.scan(...).chain`` over every stored event.
    """
    if run.count == BROKEN:
        return None
    if run.bad is not None:
        return None if run.count > seal_count else chain.ChainCheck(False, run.bad, run.count)
    if run.count > seal_count:
        return None
    if run.count < seal_count:
        return chain.ChainCheck(False, run.last + 1, run.count)
    return chain.ChainCheck(run.head == seal_head, None, run.count)


__all__ = ["BROKEN", "ChainRun", "EventRow", "batch_and_run", "batch_and_run_rows", "run_verdict"]

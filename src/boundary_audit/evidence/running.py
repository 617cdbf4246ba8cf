"""One pass at ingest: a stored batch's leaf and the session's running chain.

A collector stores a session's events batch by batch, mostly in sequence
order. Keeping the chain's running state (events chained so far, the last
number, the head, the first event whose stored digest disagreed) lets it
judge the session when its seal arrives without reading the session back:
the same verdict as :func:`.compare.scan` over every stored event. A batch
below the last number (a late event filling a gap) breaks the run
(``count`` -1): then, and when more events than the seal counts arrived,
the verdict needs a full scan (:func:`run_verdict` returns None). Pure.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

from ..wire import chain
from .leaves import LeafKind, StoredEvent, _header, _u32, encoded_events

_sha256 = hashlib.sha256
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
    """The batch leaf of ``events`` (increasing numbers) and the run extended by them.

    The leaf is :func:`.leaves.batch_leaf`'s bytes; each event is encoded once for both.
    """
    count, last, bad = run.count, run.last, run.bad
    head = run.head or chain.genesis(session_id)
    chaining = count != BROKEN and bad is None
    #: While judged (not BROKEN), ``last`` is the last number chained, or
    #: the bad one: an event below it changes what a full scan would say.
    ordered = count != BROKEN
    entries: list[bytes] = []
    append = entries.append
    for e, body, entry in encoded_events(events):
        append(entry)
        seq = e.sequence_number
        digest = e.chain_digest
        if not ordered:
            continue
        if seq <= last:
            chaining, ordered, count = False, False, BROKEN
            continue
        if not chaining:
            continue
        last = seq
        head = _sha256(head + body).digest()
        count += 1
        if digest and digest != head:
            chaining, bad = False, seq
    entries.sort()  # already in order from a collector: a linear check
    leaf = _header(LeafKind.BATCH, session_id) + _u32.pack(len(entries)) + b"".join(entries)
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


__all__ = ["BROKEN", "ChainRun", "batch_and_run", "run_verdict"]

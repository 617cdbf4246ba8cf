"""The sender's side of the per-session hash chain, decided without I/O.

The canonical encoding and the digest are :mod:`boundary_audit.wire.chain`'s;
here is only *which* events the sender chains, and what the seal commits to:

- An event is chained when its frame is written (on the socket, or into the
  spill file), in the order the frames go, with the values as sent (a URL
  cut to fit a frame is chained as cut). The digest is computed while the
  frame is encoded; a frame that is then not written (no room, a failed
  write) is encoded again later from the last *committed* mark, so the
  digests always continue from what actually went out.
- A number dropped before a frame (queue full, invalid event) is a gap the
  chain does not cover. So is an event whose number is not above the last
  one chained in its session (a caller that brought its own numbers out of
  order): the chain needs increasing numbers, and such an event is dropped
  as ``invalid_event``, counted and logged, never sent unchained.
- Re-sent frames are the same bytes, so they carry the same digests.

A :class:`ChainMark` is where a chain stands after some event (immutable,
so a frame can carry the mark before and after it at no cost).
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass

from ..wire import chain

# wire.chain's encoding (version 1), inlined for the sender's hot loop; a
# test checks every digest against wire.chain itself.
_pack_head = struct.Struct(">QqB").pack
_pack_len = struct.Struct(">I").pack
_sha256 = hashlib.sha256


@dataclass(frozen=True, slots=True)
class ChainMark:
    """A session's chain after some prefix of its events."""

    session_id: str
    #: Digest after the last chained event (the genesis when none).
    head: bytes
    #: Events chained.
    count: int
    #: Sequence number of the last chained event (-1 when none).
    last_sequence: int

    def accepts(self, sequence_number: int) -> bool:
        """May an event with this number be chained next? (Numbers increase.)"""
        return sequence_number > self.last_sequence

    def then(self, event: chain.ChainedEvent) -> ChainMark:
        """The mark after chaining ``event`` (its number must be accepted)."""
        return ChainMark(
            self.session_id,
            chain.next_digest(self.head, event),
            self.count + 1,
            event.sequence_number,
        )


class Chainer:
    """A chain being extended event by event (inside one frame being encoded).

    The same digests as :func:`boundary_audit.wire.chain.next_digest`,
    without building a ChainedEvent and a ChainMark per event.
    """

    __slots__ = ("count", "head", "last", "name", "session_id")

    def __init__(self, mark: ChainMark, process_name: str) -> None:
        self.session_id = mark.session_id
        self.head = mark.head
        self.count = mark.count
        self.last = mark.last_sequence
        raw = process_name.encode("utf-8")
        #: text(confined_process_name), the same for every event of a frame.
        self.name = _pack_len(len(raw)) + raw

    def add(  # noqa: PLR0917 - once per event sent: positional is the cheap call
        self, sequence_number: int, time_ns: int, allowed: bool, method: str, url: str, rule: str
    ) -> bytes:
        """Chain one event (its number above ``last``); return its digest."""
        m = method.encode("utf-8")
        u = url.encode("utf-8")
        r = rule.encode("utf-8")
        digest = _sha256(
            b"".join(
                (
                    self.head,
                    _pack_head(sequence_number, time_ns, 1 if allowed else 0),
                    _pack_len(len(m)),
                    m,
                    _pack_len(len(u)),
                    u,
                    _pack_len(len(r)),
                    r,
                    self.name,
                )
            )
        ).digest()
        self.head = digest
        self.count += 1
        self.last = sequence_number
        return digest

    def mark(self) -> ChainMark:
        return ChainMark(self.session_id, self.head, self.count, self.last)


def start(session_id: str) -> ChainMark:
    """The mark of a session with nothing chained yet."""
    return ChainMark(session_id, chain.genesis(session_id), 0, -1)


def mark_for(committed: ChainMark | None, session_id: str) -> ChainMark:
    """Where ``session_id``'s chain stands: the committed mark if it is that session's."""
    if committed is not None and committed.session_id == session_id:
        return committed
    return start(session_id)


@dataclass(frozen=True, slots=True)
class ChainSpan:
    """The marks before and after one frame's events (all of one session)."""

    before: ChainMark
    after: ChainMark


class OutOfOrderError(ValueError):
    """An event whose number is not above the last one chained in its session."""

    def __init__(self, sequence_number: int, last: int) -> None:
        super().__init__(
            f"sequence number {sequence_number} is not above {last}, the last one chained "
            "in this session (a chain needs increasing numbers)"
        )
        self.sequence_number = sequence_number
        self.last = last


def seal_mark(
    spans: list[ChainSpan | None], kept: int, committed: ChainMark | None, session_id: str
) -> ChainMark:
    """What a spill file's seal commits to.

    ``spans`` are the chain spans of the frames that were candidates for the
    spill, in chain order (None for frames without events): first the
    frames written on the socket and not known delivered, then the frames
    encoded at close; ``kept`` of them (a prefix) fit the spill bound. The
    seal covers every event known delivered and those kept: it ends after
    the last kept frame with events, or, when none was kept, before the
    first candidate with events (the rest are ``spill_full`` drops, given up
    on). With no candidate with events, everything chained was delivered:
    the committed mark. A mark of another session (rotated away) is never
    used: the seal is for ``session_id``.
    """
    ours = [
        (i, s) for i, s in enumerate(spans) if s is not None and s.after.session_id == session_id
    ]
    kept_spans = [s for i, s in ours if i < kept]
    if kept_spans:
        return kept_spans[-1].after
    if ours:
        return ours[0][1].before
    return mark_for(committed, session_id)

"""Per-session hash chains: the canonical encoding of an event and its digest.

The sender (outside the sandbox) chains every event of a session as it puts
it on the wire; the collector recomputes the chain over what it stored and
compares it with the digests the sender claimed and with the head in the
session's seal. Pure functions over plain values, so that anyone can
re-implement the check from this docstring alone:

Encoding (version 1), all integers big-endian::

    genesis    = SHA-256( b"boundary-audit/chain/v1\\x00" || session_uuid_16_bytes )
    event(e)   = u64(sequence_number) || i64(time_unix_ns) || u8(allowed ? 1 : 0)
                 || text(method) || text(url) || text(matched_rule)
                 || text(confined_process_name)
    text(s)    = u32(len(utf8(s))) || utf8(s)
    digest_0   = SHA-256( genesis || event(e_0) )
    digest_i   = SHA-256( digest_(i-1) || event(e_i) )     for i >= 1

``e_0, e_1, ...`` are the events the sender put into frames, in the order
it did (increasing sequence numbers). A number dropped before it reached a
frame (queue full, invalid event) is not chained: it is a gap the chain
does not cover, counted in the seal's drops instead. So a missing number
whose successor's claimed digest still matches was never chained, while an
event lost or removed after it was chained breaks the successor's digest.
``matched_rule`` is exactly what was sent (empty for denied events, as
Coder's schema says). Strings are the values as sent: a URL the sender cut
to fit a frame is chained as cut.
"""

from __future__ import annotations

import hashlib
import struct
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

#: Version tag hashed into the genesis: a future encoding gets a new tag, so
#: digests of different versions can never be confused.
CHAIN_VERSION = 1
GENESIS_PREFIX = b"boundary-audit/chain/v1\x00"
#: Bytes of a SHA-256 digest.
DIGEST_SIZE = 32

_HEAD = struct.Struct(">QqB")
_LEN = struct.Struct(">I")


@dataclass(frozen=True, slots=True)
class ChainedEvent:
    """The fields of one event that its digest covers."""

    sequence_number: int
    time_ns: int
    allowed: bool
    method: str
    url: str
    matched_rule: str
    confined_process_name: str


def genesis(session_id: str | uuid.UUID) -> bytes:
    """The digest a session's chain starts from (before event 0)."""
    sid = session_id if isinstance(session_id, uuid.UUID) else uuid.UUID(session_id)
    return hashlib.sha256(GENESIS_PREFIX + sid.bytes).digest()


def _text(value: str) -> bytes:
    raw = value.encode("utf-8", errors="surrogatepass")
    return _LEN.pack(len(raw)) + raw


def encode_event(event: ChainedEvent) -> bytes:
    """The canonical bytes of ``event`` (see the module docstring)."""
    return (
        _HEAD.pack(event.sequence_number, event.time_ns, 1 if event.allowed else 0)
        + _text(event.method)
        + _text(event.url)
        + _text(event.matched_rule)
        + _text(event.confined_process_name)
    )


def next_digest(previous: bytes, event: ChainedEvent) -> bytes:
    """The digest of ``event`` chained onto ``previous``."""
    return hashlib.sha256(previous + encode_event(event)).digest()


def digests(session_id: str | uuid.UUID, events: Iterable[ChainedEvent]) -> Iterator[bytes]:
    """Every digest of a chain, in order; sequence numbers must increase."""
    digest = genesis(session_id)
    previous = -1
    for event in events:
        if event.sequence_number <= previous:
            raise ValueError(
                f"a chain's sequence numbers increase: {event.sequence_number} after {previous}"
            )
        previous = event.sequence_number
        digest = next_digest(digest, event)
        yield digest


def head(session_id: str | uuid.UUID, events: Iterable[ChainedEvent]) -> bytes:
    """The last digest of the chain (the genesis for an empty session)."""
    last = genesis(session_id)
    for last in digests(session_id, events):  # noqa: B007 - only the last one is kept
        pass
    return last


@dataclass(frozen=True, slots=True)
class ChainCheck:
    """Outcome of recomputing a chain against what the sender claimed."""

    ok: bool
    #: First sequence number whose recomputed digest differs from the one
    #: the sender claimed (the altered event itself, or the successor of a
    #: removed one), or the first one beyond the seal's count (an inserted
    #: tail), or the end of the chain when events are missing from the tail.
    #: None when ``ok``, and
    #: None too when every claim matched but the head did not (claims absent,
    #: or forged consistently along with the events: the break cannot be
    #: placed, only detected).
    first_bad_sequence: int | None
    #: Events recomputed before the verdict.
    checked: int


def check(
    session_id: str | uuid.UUID,
    events: Iterable[tuple[ChainedEvent, bytes | None]],
    seal_head: bytes,
    seal_count: int,
) -> ChainCheck:
    """Recompute the chain over ``(event, claimed digest)`` pairs and compare.

    ``events`` in increasing sequence order. The chain must hold exactly
    ``seal_count`` events and end in ``seal_head``.
    """
    digest = genesis(session_id)
    count = 0
    last = -1
    for event, claimed in events:
        if event.sequence_number <= last or count >= seal_count:
            return ChainCheck(False, event.sequence_number, count)
        last = event.sequence_number
        digest = next_digest(digest, event)
        if claimed is not None and claimed != digest:
            return ChainCheck(False, event.sequence_number, count + 1)
        count += 1
    if count != seal_count:
        return ChainCheck(False, last + 1, count)
    if digest != seal_head:
        return ChainCheck(False, None, count)
    return ChainCheck(True, None, count)


__all__ = [
    "CHAIN_VERSION",
    "DIGEST_SIZE",
    "GENESIS_PREFIX",
    "ChainCheck",
    "ChainedEvent",
    "check",
    "digests",
    "encode_event",
    "genesis",
    "head",
    "next_digest",
]

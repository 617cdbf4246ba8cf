"""What the store log commits to: stored records as plain values, and their canonical leaves.

A leaf of the store log (:mod:`.merkle`) is the canonical encoding of one
thing the collector stored. All integers big-endian; ``text(s)`` is
``u32(len(utf8(s))) || utf8(s)`` as in :mod:`boundary_audit.wire.chain`::

    leaf        = b"boundary-audit/leaf/v1\\x00" || u8(kind) || session_uuid_16_bytes || body

    kind 1, a stored batch (the events of one session stored by one ingest):
      body      = u32(n) || entry_1 || ... || entry_n      (increasing sequence numbers)
      entry     = one of two forms, ENTRY_SIZE (73) bytes each; the content form is
                  u64(sequence_number) || SHA-256(b"boundary-audit/event/v1\\x00" || event(e))
                  || u8(1 if the sender's chain digest was stored else 0)
                  || the 32-byte chain digest (32 zero bytes when none)
      event(e)  = wire.chain's canonical event encoding (sequence number, time,
                  allowed, method, url, matched rule, confined process name)

    kind 2, a stored seal:
      body      = u64(events_made) || u64(events_sent) || u64(undelivered)
                  || u64(spilled) || i64(sealed_at_ns) || u8(len(chain_head)) || chain_head
                  || u64(chain_count) || counts(dropped)

    kind 3, a stored drop report:
      body      = text(report_id) || text(source) || i64(time_ns) || counts(dropped)

    counts(m)   = u32(len(m)) || for each reason in sorted order: text(reason) || u64(m[reason])

An entry has one of two forms, told apart by its flag byte (offset 40):

- content form, flag 0 or 1: the event's own hash, as above. It covers the
  event directly (not through the chain), so events of a sender that does
  not chain are covered as well;
- chained form, flag 2 (the collector's ingest, :mod:`.running`)::

      entry     = u64(sequence_number) || P || u8(2) || D
      where     D = SHA-256(P || event(e)) is the sender's chain digest as stored

  ``P`` is the chain head the collector recomputed just before this event
  (``chain.genesis(session)`` for the session's first event), so ``D`` is
  the chain's own step: the event's content is committed through it, and
  ingest hashes each event once. The collector writes this form only while
  the session's chain is intact (every earlier stored event in sequence
  order, no disagreeing digest yet) and the stored digest is the
  recomputed head; otherwise the content form. A stored event matches a
  flag-2 entry iff ``SHA-256(P || event(e)) == D`` and its stored digest
  is ``D``; ``P`` is taken from the entry itself, so an altered event never
  makes later ones look altered.

Every entry of a batch leaf is ``ENTRY_SIZE`` bytes and starts with its
big-endian sequence number, so sorting entries as bytes sorts them by
number. :func:`batch_leaf` and :func:`event_entry` (no chain state) always
make the content form; readers accept both.
"""

from __future__ import annotations

import enum
import functools
import hashlib
import operator
import struct
import uuid
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field

from ..wire import chain

LEAF_PREFIX = b"boundary-audit/leaf/v1\x00"
EVENT_PREFIX = b"boundary-audit/event/v1\x00"
#: u64 number, 32-byte event hash (or chain head before it), u8 flag, 32-byte digest.
ENTRY_SIZE = 8 + 32 + 1 + 32
#: Offsets in an entry: the flag byte, and the digest after it.
FLAG_AT = 8 + 32
DIGEST_AT = FLAG_AT + 1
#: Flag values: content form without / with the sender's digest; chained form.
FLAG_NO_DIGEST, FLAG_DIGEST, FLAG_CHAINED = 0, 1, 2
_NO_DIGEST = bytes(chain.DIGEST_SIZE)
_NO_CLAIM = b"\x00" + _NO_DIGEST
_HEADER_SIZE = len(LEAF_PREFIX) + 1 + 16
#: Batch sizes whose number readers are kept: every size a collector makes
#: (at most wire.MAX_EVENTS_PER_FRAME per frame, a few frames per batch).
_NUMBERS_CACHE = 4096

_u8 = struct.Struct(">B")
_u32 = struct.Struct(">I")
_u64 = struct.Struct(">Q")
_i64 = struct.Struct(">q")
_pack_head = struct.Struct(">QqB").pack
#: The same bytes as _pack_head with u8(1 if allowed else 0): "?" packs the
#: truth value of any object as 0 or 1, without a branch in the hot loops.
_pack_head_truth = struct.Struct(">Qq?").pack
_pack_len = _u32.pack
#: One entry, either form: u64 number, 32 bytes (event hash or P), u8 flag, 32-byte digest.
_pack_entry = struct.Struct(">Q32sB32s").pack
_sha256 = hashlib.sha256


class LeafKind(enum.IntEnum):
    BATCH = 1
    SEAL = 2
    DROP = 3


class LeafError(ValueError):
    """Bytes that are not a canonical leaf."""


# -- stored records, as plain values (whatever the database) ---------------------------------


#: A stored event as a plain tuple, in :class:`StoredEvent`'s field order
#: (sequence number, time, allowed, method, url, rule, process name, digest;
#: ``allowed`` any truthy value, the digest b"" or None when none): ingest and
#: ``verify --db`` pass database rows as they come, building no object per event.
EventRow = tuple[int, int, bool | int, str, str, str, str, bytes | None]


@dataclass(slots=True)
class StoredEvent:
    """One stored event: every field the chain covers, and the digest the sender claimed.

    Not frozen: one is built per event read or stored, and a frozen
    dataclass costs four times as much to build (treat it as a value).
    """

    sequence_number: int
    time_ns: int
    allowed: bool
    method: str
    url: str
    matched_rule: str
    confined_process_name: str
    #: The sender's chain digest as stored (b"": none).
    chain_digest: bytes = b""

    def row(self) -> EventRow:
        """The same fields as a plain tuple (what the hot loops take)."""
        return (
            self.sequence_number,
            self.time_ns,
            self.allowed,
            self.method,
            self.url,
            self.matched_rule,
            self.confined_process_name,
            self.chain_digest,
        )

    def chained(self) -> chain.ChainedEvent:
        seq, time_ns, _, method, url, rule, name, _ = self.row()
        return chain.ChainedEvent(seq, time_ns, self.allowed, method, url, rule, name)


@dataclass(frozen=True, slots=True)
class StoredSeal:
    events_made: int
    events_sent: int
    undelivered: int
    spilled: int
    sealed_at_ns: int
    chain_head: bytes = b""
    chain_count: int = 0
    dropped: Mapping[str, int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class StoredDrop:
    report_id: str
    source: str
    time_ns: int
    dropped: Mapping[str, int] = field(default_factory=dict)


# -- encodings ----------------------------------------------------------------------------------


def text(value: str) -> bytes:
    """``u32(len(utf8(s))) || utf8(s)``."""
    raw = value.encode("utf-8", errors="surrogatepass")
    return _pack_len(len(raw)) + raw


def event_body(e: StoredEvent) -> bytes:
    """wire.chain's canonical event(e) (inlined: the verifier's hot loop)."""
    m = e.method.encode("utf-8", errors="surrogatepass")
    u = e.url.encode("utf-8", errors="surrogatepass")
    r = e.matched_rule.encode("utf-8", errors="surrogatepass")
    n = e.confined_process_name.encode("utf-8", errors="surrogatepass")
    return b"".join(
        (
            _pack_head(e.sequence_number, e.time_ns, 1 if e.allowed else 0),
            _pack_len(len(m)),
            m,
            _pack_len(len(u)),
            u,
            _pack_len(len(r)),
            r,
            _pack_len(len(n)),
            n,
        )
    )


def entry_from_body(sequence_number: int, body: bytes, digest: bytes | None) -> bytes:
    """The content-form entry of an event's canonical ``body``; ``digest`` b"",
    None or 32 bytes (the callers check: the pack would pad or cut another length)."""
    flag = FLAG_DIGEST if digest else FLAG_NO_DIGEST
    content = _sha256(EVENT_PREFIX + body).digest()
    return _pack_entry(sequence_number, content, flag, digest or _NO_DIGEST)


def event_entry(e: StoredEvent) -> bytes:
    """The ENTRY_SIZE bytes a batch leaf holds for ``e``."""
    if e.chain_digest and len(e.chain_digest) != chain.DIGEST_SIZE:
        raise LeafError(f"event {e.sequence_number}: a chain digest is 32 bytes")
    return entry_from_body(e.sequence_number, event_body(e), e.chain_digest)


def _header(kind: LeafKind, session_id: str) -> bytes:
    return LEAF_PREFIX + _u8.pack(kind) + uuid.UUID(session_id).bytes


def encoded_events(events: Iterable[StoredEvent]) -> Iterator[tuple[StoredEvent, bytes, bytes]]:
    """Each event with its canonical body (``wire.chain``'s encoding) and its
    batch-leaf entry, each distinct method, rule and name encoded once: the
    one pass :func:`batch_leaf` and the running chain (``running.py``) share.
    """
    texts: dict[str, bytes] = {}
    for e in events:
        digest = e.chain_digest
        if digest and len(digest) != chain.DIGEST_SIZE:
            raise LeafError(f"event {e.sequence_number}: a chain digest is 32 bytes")
        m = texts.get(e.method) or texts.setdefault(e.method, text(e.method))
        r = texts.get(e.matched_rule) or texts.setdefault(e.matched_rule, text(e.matched_rule))
        n = texts.get(e.confined_process_name) or texts.setdefault(
            e.confined_process_name, text(e.confined_process_name)
        )
        u = e.url.encode("utf-8", "surrogatepass")
        seq = e.sequence_number
        body = b"".join(
            (_pack_head(seq, e.time_ns, 1 if e.allowed else 0), m, _pack_len(len(u)), u, r, n)
        )
        yield e, body, entry_from_body(seq, body, digest)


def batch_leaf(session_id: str, events: Iterable[StoredEvent]) -> bytes:
    """The leaf of one stored batch (its events in any order; sorted here).

    The same bytes as sorting :func:`event_entry` of each event, in one pass
    (:func:`encoded_events`): the collector builds one per ingest transaction.
    """
    entries = sorted(entry for _, _, entry in encoded_events(events))
    return _header(LeafKind.BATCH, session_id) + _u32.pack(len(entries)) + b"".join(entries)


def _counts(m: Mapping[str, int]) -> bytes:
    return _u32.pack(len(m)) + b"".join(text(k) + _u64.pack(m[k]) for k in sorted(m))


def seal_body(s: StoredSeal) -> bytes:
    return (
        _u64.pack(s.events_made)
        + _u64.pack(s.events_sent)
        + _u64.pack(s.undelivered)
        + _u64.pack(s.spilled)
        + _i64.pack(s.sealed_at_ns)
        + _u8.pack(len(s.chain_head))
        + s.chain_head
        + _u64.pack(s.chain_count)
        + _counts(s.dropped)
    )


def seal_leaf(session_id: str, seal: StoredSeal) -> bytes:
    return _header(LeafKind.SEAL, session_id) + seal_body(seal)


def drop_body(d: StoredDrop) -> bytes:
    return text(d.report_id) + text(d.source) + _i64.pack(d.time_ns) + _counts(d.dropped)


def drop_leaf(session_id: str, drop: StoredDrop) -> bytes:
    return _header(LeafKind.DROP, session_id) + drop_body(drop)


# -- parsing ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ParsedLeaf:
    kind: LeafKind
    session_id: str
    #: kind BATCH: the entries, ENTRY_SIZE bytes each, one after another;
    #: kinds SEAL and DROP: the body (compared with the stored record's encoding).
    body: bytes = b""
    #: kind DROP: the report id (to pair it with the stored report).
    report_id: str = ""

    @property
    def entries(self) -> list[bytes]:
        """kind BATCH: each entry (increasing sequence numbers in a canonical leaf)."""
        if self.kind is not LeafKind.BATCH:
            return []
        body = self.body
        return [body[i : i + ENTRY_SIZE] for i in range(0, len(body), ENTRY_SIZE)]


def _readtext(data: bytes, at: int) -> tuple[str, int]:
    (n,) = _u32.unpack_from(data, at)
    end = at + 4 + n
    if end > len(data):
        raise LeafError("text runs past the leaf")
    return data[at + 4 : end].decode("utf-8", errors="surrogatepass"), end


@functools.lru_cache(maxsize=_NUMBERS_CACHE)
def _numbers(n: int) -> struct.Struct:
    """Reads the sequence numbers of ``n`` entries in one call (they are ENTRY_SIZE apart)."""
    return struct.Struct(">" + f"Q{ENTRY_SIZE - 8}x" * n)


def parse_leaf(data: bytes) -> ParsedLeaf:
    """The parts of a leaf; LeafError for bytes that are not a canonical leaf."""
    if len(data) < _HEADER_SIZE or not data.startswith(LEAF_PREFIX):
        raise LeafError("not a boundary-audit leaf")
    try:
        kind = LeafKind(data[len(LEAF_PREFIX)])
    except ValueError:
        raise LeafError(f"unknown leaf kind {data[len(LEAF_PREFIX)]}") from None
    session = str(uuid.UUID(bytes=data[len(LEAF_PREFIX) + 1 : _HEADER_SIZE]))
    body = data[_HEADER_SIZE:]
    try:
        if kind is LeafKind.BATCH:
            (n,) = _u32.unpack_from(body)
            if len(body) != 4 + n * ENTRY_SIZE:
                raise LeafError(f"a batch of {n} events is {4 + n * ENTRY_SIZE} bytes")
            numbers = _numbers(n).unpack_from(body, 4)
            if not all(map(operator.lt, numbers, numbers[1:])):
                raise LeafError("batch entries are not in increasing sequence order")
            return ParsedLeaf(kind, session, body=body[4:])
        if kind is LeafKind.DROP:
            report_id, _ = _readtext(body, 0)
            return ParsedLeaf(kind, session, body=body, report_id=report_id)
    except struct.error as exc:
        raise LeafError(f"truncated leaf: {exc}") from None
    return ParsedLeaf(kind, session, body=body)


def entry_sequence(entry: bytes) -> int:
    (n,) = _u64.unpack_from(entry)
    return int(n)


def entry_digest(entry: bytes) -> bytes:
    """The chain digest an entry recorded (b"" when none; ``D`` of a chained entry)."""
    return entry[DIGEST_AT:] if entry[FLAG_AT] else b""


__all__ = [
    "DIGEST_AT",
    "ENTRY_SIZE",
    "EVENT_PREFIX",
    "FLAG_AT",
    "FLAG_CHAINED",
    "FLAG_DIGEST",
    "FLAG_NO_DIGEST",
    "LEAF_PREFIX",
    "EventRow",
    "LeafError",
    "LeafKind",
    "ParsedLeaf",
    "StoredDrop",
    "StoredEvent",
    "StoredSeal",
    "batch_leaf",
    "drop_body",
    "drop_leaf",
    "entry_digest",
    "entry_sequence",
    "event_body",
    "event_entry",
    "parse_leaf",
    "seal_body",
    "seal_leaf",
    "text",
]

"""An answering DNS stub for a network-isolated command (pure).

Under ``--isolate-network`` there is no resolver; tools that look a name up
before they use the proxy (or just to check it) would fail. The stub
answers every query on the namespace's ``127.0.0.1:53`` (its
``/etc/resolv.conf`` points there): an ``A`` query gets :data:`STUB_ADDRESS`
(the command's own loopback, where only the proxy's port listens), any other
type an empty success, so clients fall back to ``A``. Nothing is resolved
for real and nothing leaves the sandbox; each query is recorded as a denied
``DNS`` event ``dns://NAME?type=TYPE``.

:func:`answer` is the whole protocol, sans I/O; the launcher's reader
(:mod:`.launch`) sends what it returns.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

#: What every A query is answered with (see the module docstring).
STUB_ADDRESS = bytes([127, 0, 0, 1])
#: Seconds a resolver may cache an answer: short, it is not a real one.
STUB_TTL = 1
#: Header: id, flags, qdcount, ancount, nscount, arcount.
_HEADER = struct.Struct("!HHHHHH")
_QUESTION_TAIL = struct.Struct("!HH")
_ANSWER = struct.Struct("!HHHIH")
#: Flag bits: response, opcode (4 bits), recursion desired/available.
_QR = 0x8000
_OPCODE_MASK = 0x7800
_RD = 0x0100
_RA = 0x0080
#: A pointer to the question's name at offset 12 (name compression).
_NAME_POINTER = 0xC00C
TYPE_A = 1
CLASS_IN = 1
#: Names of common query types, for the record.
TYPE_NAMES = {1: "A", 28: "AAAA", 5: "CNAME", 15: "MX", 16: "TXT", 33: "SRV", 65: "HTTPS"}
#: Longest name (RFC 1035) and label.
MAX_NAME = 255
MAX_LABEL = 63


@dataclass(frozen=True, slots=True)
class Answered:
    """The response to send, and what was asked (for the record)."""

    response: bytes
    name: str
    qtype: str


def _name(query: bytes, offset: int) -> tuple[str, int] | None:
    labels: list[str] = []
    length = 0
    while True:
        if offset >= len(query):
            return None
        size = query[offset]
        offset += 1
        if size == 0:
            break
        if size > MAX_LABEL or offset + size > len(query):
            return None  # also refuses compression pointers (not used in questions)
        length += size + 1
        if length > MAX_NAME:
            return None
        labels.append(query[offset : offset + size].decode("ascii", "backslashreplace"))
        offset += size
    return ".".join(labels), offset


def answer(query: bytes) -> Answered | None:
    """The stub's response to ``query``, or None for something that is not
    one standard query with one question (dropped)."""
    if len(query) < _HEADER.size:
        return None
    ident, flags, qdcount, _an, _ns, _ar = _HEADER.unpack_from(query)
    if flags & (_QR | _OPCODE_MASK) or qdcount != 1:
        return None
    parsed = _name(query, _HEADER.size)
    if parsed is None:
        return None
    name, offset = parsed
    if offset + _QUESTION_TAIL.size > len(query):
        return None
    qtype, qclass = _QUESTION_TAIL.unpack_from(query, offset)
    question = query[_HEADER.size : offset + _QUESTION_TAIL.size]
    answers = b""
    if qtype == TYPE_A and qclass == CLASS_IN:
        answers = (
            _ANSWER.pack(_NAME_POINTER, TYPE_A, CLASS_IN, STUB_TTL, len(STUB_ADDRESS))
            + STUB_ADDRESS
        )
    header = _HEADER.pack(ident, _QR | (flags & _RD) | _RA, 1, 1 if answers else 0, 0, 0)
    return Answered(header + question + answers, name, TYPE_NAMES.get(qtype, str(qtype)))


__all__ = ["STUB_ADDRESS", "Answered", "answer"]

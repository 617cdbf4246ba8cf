"""The isolated command's DNS stub (pure)."""

from __future__ import annotations

import struct

from hypothesis import given
from hypothesis import strategies as st

from boundary_audit.confine.dnsstub import STUB_ADDRESS, answer


def _query(name: bytes, qtype: int, ident: int = 0x1234, flags: int = 0x0100) -> bytes:
    labels = b"".join(bytes([len(p)]) + p for p in name.split(b".")) + b"\0"
    return struct.pack("!HHHHHH", ident, flags, 1, 0, 0, 0) + labels + struct.pack("!HH", qtype, 1)


def test_an_a_query_gets_the_stub_address_with_the_id_and_question_echoed() -> None:
    query = _query(b"example.com", 1)
    got = answer(query)
    assert got is not None
    assert (got.name, got.qtype) == ("example.com", "A")
    ident, flags, qd, an, _ns, _ar = struct.unpack_from("!HHHHHH", got.response)
    assert (ident, qd, an) == (0x1234, 1, 1)
    assert flags & 0x8000  # a response
    assert flags & 0x000F == 0  # NOERROR
    assert got.response[12 : len(query)] == query[12:]
    assert got.response.endswith(STUB_ADDRESS)


def test_other_types_get_an_empty_success() -> None:
    got = answer(_query(b"example.com", 28))
    assert got is not None
    assert got.qtype == "AAAA"
    assert struct.unpack_from("!HHHHHH", got.response)[3] == 0


def test_responses_and_odd_queries_are_dropped() -> None:
    assert answer(_query(b"example.com", 1, flags=0x8100)) is None  # a response
    assert answer(b"\x00" * 5) is None
    assert answer(_query(b"example.com", 1)[:-2]) is None  # cut short


@given(st.binary(max_size=600))
def test_answer_never_raises(data: bytes) -> None:
    answer(data)

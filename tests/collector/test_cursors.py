"""Pagination cursors, sans I/O: they round-trip, and nothing else decodes."""

from __future__ import annotations

import base64

import pytest
from hypothesis import given
from hypothesis import strategies as st

from boundary_audit.collector.model import (
    INT64_MAX,
    InvalidCursorError,
    decode_cursor,
    encode_cursor,
)

KINDS = st.sampled_from(["sessions", "session", "all"])
KEYS = st.lists(
    st.integers(min_value=-INT64_MAX, max_value=INT64_MAX) | st.text(max_size=40),
    min_size=1,
    max_size=3,
)


@given(kind=KINDS, key=KEYS)
def test_a_cursor_decodes_to_its_key(kind: str, key: list[int | str]) -> None:
    cursor = encode_cursor(kind, key)
    assert decode_cursor(cursor, kind, len(key)) == key
    # URL-safe as it stands: no padding, no characters a query string must escape.
    assert set(cursor) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


@given(kind=KINDS, key=KEYS)
def test_a_cursor_belongs_to_one_listing_and_key_size(kind: str, key: list[int | str]) -> None:
    cursor = encode_cursor(kind, key)
    with pytest.raises(InvalidCursorError):
        decode_cursor(cursor, kind + "x", len(key))
    with pytest.raises(InvalidCursorError):
        decode_cursor(cursor, kind, len(key) + 1)


@given(st.text(max_size=200) | st.binary(max_size=150).map(lambda b: base64.b64encode(b).decode()))
def test_any_other_text_is_refused_as_a_cursor(text: str) -> None:
    try:
        key = decode_cursor(text, "all", 1)
    except InvalidCursorError:
        return
    # The rare text that is a cursor must decode to a well-formed key.
    assert len(key) == 1


@pytest.mark.parametrize(
    "payload",
    [
        b'{"o":"all","k":[true]}',  # a bool is not a position
        b'{"o":"all","k":[9223372036854775808]}',  # beyond int64
        b'{"o":"all","k":[1.5]}',
        b'{"o":"all","k":{"a":1}}',
        b'["o","all"]',
        b"[" * 5_000,  # nesting deeper than the JSON parser's recursion limit
    ],
)
def test_crafted_cursors_are_refused(payload: bytes) -> None:
    cursor = base64.urlsafe_b64encode(payload).decode()
    with pytest.raises(InvalidCursorError):
        decode_cursor(cursor, "all", 1)

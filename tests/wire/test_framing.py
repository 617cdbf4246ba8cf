from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from boundary_audit import wire
from boundary_audit.wire import (
    HEADER_SIZE,
    MAX_FRAME_SIZE,
    MAX_PAYLOAD_SIZE,
    Frame,
    FrameDecoder,
    OversizeFrameError,
    Tag,
    TruncatedFrameError,
    UnknownTagError,
    encode_frame,
    parse_header,
)


def test_constants_match_the_protocol() -> None:
    assert HEADER_SIZE == 4
    assert wire.LENGTH_BITS == 24
    assert wire.LENGTH_MASK == 0xFFFFFF
    assert MAX_PAYLOAD_SIZE == 32768
    assert int(Tag.V1_LOGS) == 1
    assert int(Tag.V2_ENVELOPE) == 2


def test_header_is_big_endian_tag_in_high_byte() -> None:
    frame = encode_frame(Tag.V2_ENVELOPE, b"x" * 300)
    assert frame[:4] == bytes([2, 0x00, 0x01, 0x2C])
    assert parse_header(frame[:4]) == (2, 300)


def test_encode_refuses_what_a_receiver_would_reject() -> None:
    with pytest.raises(OversizeFrameError) as exc:
        encode_frame(Tag.V2_ENVELOPE, b"\0" * (MAX_PAYLOAD_SIZE + 1))
    assert exc.value.length == MAX_PAYLOAD_SIZE + 1
    assert exc.value.limit == MAX_PAYLOAD_SIZE
    with pytest.raises(UnknownTagError):
        encode_frame(3, b"")
    assert len(encode_frame(Tag.V1_LOGS, b"\0" * MAX_PAYLOAD_SIZE)) == MAX_FRAME_SIZE


def test_oversize_length_rejected_from_the_header_alone() -> None:
    decoder = FrameDecoder()
    header = struct.pack(">I", (2 << 24) | (MAX_PAYLOAD_SIZE + 1))
    with pytest.raises(OversizeFrameError) as exc:
        decoder.feed(header)  # no payload byte was ever supplied
    assert exc.value.length == MAX_PAYLOAD_SIZE + 1
    assert exc.value.tag == 2
    assert "32769" in str(exc.value)
    assert decoder.failed
    assert decoder.buffered == 0
    with pytest.raises(OversizeFrameError):
        decoder.feed(b"more")


def test_unknown_tag_is_a_protocol_error_with_numbers() -> None:
    decoder = FrameDecoder()
    with pytest.raises(UnknownTagError) as exc:
        decoder.feed(struct.pack(">I", (7 << 24) | 5) + b"hello")
    assert exc.value.tag == 7
    assert exc.value.length == 5
    assert isinstance(exc.value, wire.ProtocolError)


def test_frames_before_a_bad_header_are_kept() -> None:
    decoder = FrameDecoder()
    good = encode_frame(2, b"whole") + encode_frame(1, b"also whole")
    bad = struct.pack(">I", (9 << 24) | 1) + b"x"
    assert decoder.feed(good + bad) == [Frame(2, b"whole"), Frame(1, b"also whole")]
    assert decoder.failed
    assert isinstance(decoder.error, UnknownTagError)
    with pytest.raises(UnknownTagError):
        decoder.feed(b"")
    deferred = FrameDecoder()
    deferred.feed(good + bad)
    with pytest.raises(UnknownTagError):
        deferred.eof()  # raised once, even when the stream just ends


def test_truncated_frame_reported_at_eof() -> None:
    decoder = FrameDecoder()
    assert decoder.feed(encode_frame(1, b"abcdef")[:7]) == []
    with pytest.raises(TruncatedFrameError) as exc:
        decoder.eof()
    assert (exc.value.expected, exc.value.received, exc.value.tag) == (6, 3, 1)
    partial_header = FrameDecoder()
    partial_header.feed(b"\x02\x00")
    with pytest.raises(TruncatedFrameError) as exc2:
        partial_header.eof()
    assert exc2.value.tag is None
    assert exc2.value.received == 2


def test_empty_payload_frames() -> None:
    decoder = FrameDecoder()
    assert decoder.feed(encode_frame(2, b"") * 3) == [Frame(2, b"")] * 3
    decoder.eof()


frames_strategy = st.lists(
    st.tuples(
        st.sampled_from([1, 2]),
        st.binary(max_size=600)
        # Full-size payloads built from a short pattern: random 32 KiB blobs
        # would exhaust hypothesis's entropy budget without testing more.
        | st.binary(min_size=1, max_size=16).map(
            lambda b: (b * MAX_PAYLOAD_SIZE)[:MAX_PAYLOAD_SIZE]
        ),
    ),
    max_size=8,
)


@given(frames=frames_strategy, data=st.data())
@settings(max_examples=150, deadline=None)
def test_round_trip_for_any_split(frames: list[tuple[int, bytes]], data: st.DataObject) -> None:
    stream = b"".join(encode_frame(t, p) for t, p in frames)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=20)))
    decoder = FrameDecoder()
    out: list[Frame] = []
    prev = 0
    for cut in [*cuts, len(stream)]:
        out += decoder.feed(stream[prev:cut])
        assert decoder.buffered < MAX_FRAME_SIZE
        prev = cut
    decoder.eof()
    assert out == [Frame(t, p) for t, p in frames]


def test_byte_at_a_time() -> None:
    frames = [(2, b"first"), (1, bytes(range(256))), (2, b"")]
    stream = b"".join(encode_frame(t, p) for t, p in frames)
    decoder = FrameDecoder()
    out: list[Frame] = []
    for i in range(len(stream)):
        out += decoder.feed(stream[i : i + 1])
    assert out == [Frame(t, p) for t, p in frames]


@given(chunks=st.lists(st.binary(max_size=5000), max_size=30))
@settings(max_examples=300, deadline=None)
def test_random_bytes_never_crash_or_overallocate(chunks: list[bytes]) -> None:
    decoder = FrameDecoder()
    for chunk in chunks:
        try:
            for frame in decoder.feed(chunk):
                assert len(frame.payload) <= MAX_PAYLOAD_SIZE
        except wire.ProtocolError:
            assert decoder.failed
            assert decoder.buffered == 0
            return
        if decoder.failed:  # frames came first; the error waits for the next call
            assert decoder.buffered == 0
            with pytest.raises(wire.ProtocolError):
                decoder.feed(b"")
            return
        # At most one incomplete frame is ever held.
        assert decoder.buffered < MAX_FRAME_SIZE
    if decoder.mid_frame:
        with pytest.raises(TruncatedFrameError) as exc:
            decoder.eof()
        assert exc.value.received < exc.value.expected <= MAX_PAYLOAD_SIZE
    else:
        decoder.eof()

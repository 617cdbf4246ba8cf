"""Sans-I/O framing for the boundary -> agent Unix-socket stream.

A frame is a 4-byte big-endian header followed by a protobuf payload. The
header's high 8 bits are the tag (which message the payload holds), its low 24
bits the payload length. Nothing here touches a socket: :func:`encode_frame`
turns a payload into bytes and :class:`FrameDecoder` turns bytes, fed in any
split, back into frames. The blocking and asyncio helpers in ``blocking`` and
``aio`` are thin wrappers over this module.
"""

from __future__ import annotations

import enum
import struct
from typing import NamedTuple

from .errors import OversizeFrameError, ProtocolError, TruncatedFrameError, UnknownTagError


class Tag(enum.IntEnum):
    """Which message a frame's payload holds."""

    #: Protocol v1: a bare ``coder.agent.v2.ReportBoundaryLogsRequest``.
    #: Receivers accept it so that older senders keep working.
    V1_LOGS = 1
    #: Protocol v2: a ``coder.boundarylogproxy.codec.v1.BoundaryMessage``
    #: envelope (logs or status). The only tag senders write.
    V2_ENVELOPE = 2


#: The header is one uint32: big enough for a tag and a length, small enough
#: that a reader needs only 4 bytes before it can judge the whole frame.
HEADER_SIZE = 4
#: Bits of the header that hold the payload length; the remaining high 8 hold
#: the tag. 24 bits could express ~16 MiB, far more than either side accepts.
LENGTH_BITS = 24
LENGTH_MASK = (1 << LENGTH_BITS) - 1
#: The tag occupies the top 8 bits, so 255 tags are possible.
MAX_TAG = (1 << (32 - LENGTH_BITS)) - 1
#: Largest payload either tag may carry (32 KiB). Both Coder's sender and
#: receiver enforce it: a batch of 10 typical events is ~1-2 KiB, so 32 KiB
#: leaves room for long URLs while bounding what a hostile local peer can make
#: the receiver allocate per connection.
MAX_PAYLOAD_SIZE = 1 << 15
#: Largest whole frame on the wire.
MAX_FRAME_SIZE = HEADER_SIZE + MAX_PAYLOAD_SIZE
#: Most events one frame carries. Coder's control plane refuses a request of
#: more than 1,000 logs (coderd's maxBoundaryLogsPerBatch) and Coder's agent
#: forwards one request per frame, so a frame of tiny events must stop here
#: even when the 32 KiB payload would hold more.
MAX_EVENTS_PER_FRAME = 1000

KNOWN_TAGS = frozenset(int(t) for t in Tag)

_HEADER = struct.Struct(">I")


class Frame(NamedTuple):
    tag: int
    payload: bytes


def encode_header(tag: int, length: int) -> bytes:
    """The 4-byte header for a payload of ``length`` bytes.

    Raises :class:`UnknownTagError` or :class:`OversizeFrameError` rather than
    produce a frame that a conforming receiver would reject.
    """
    if tag not in KNOWN_TAGS:
        raise UnknownTagError(tag)
    if length > MAX_PAYLOAD_SIZE:
        raise OversizeFrameError(length, MAX_PAYLOAD_SIZE)
    return _HEADER.pack((tag << LENGTH_BITS) | length)


def encode_frame(tag: int, payload: bytes) -> bytes:
    """Header plus payload, ready to write whole."""
    return encode_header(tag, len(payload)) + payload


def parse_header(header: bytes | bytearray | memoryview) -> tuple[int, int]:
    """Split a 4-byte header into ``(tag, length)`` and validate both.

    This is the single place where a length is judged, so every reader
    rejects an oversize frame before it reads or allocates the payload.
    """
    if len(header) != HEADER_SIZE:
        raise ValueError(f"a frame header is {HEADER_SIZE} bytes, got {len(header)}")
    (word,) = _HEADER.unpack(header)
    tag = word >> LENGTH_BITS
    length = word & LENGTH_MASK
    if tag not in KNOWN_TAGS:
        raise UnknownTagError(tag, length)
    if length > MAX_PAYLOAD_SIZE:
        raise OversizeFrameError(length, MAX_PAYLOAD_SIZE, tag)
    return tag, length


class FrameDecoder:
    """Incremental frame decoder: feed it bytes, get whole frames back.

    Bytes may arrive in any split (a byte at a time included). The decoder
    holds at most one incomplete frame, so it never buffers more than
    :data:`MAX_FRAME_SIZE` - 1 bytes between calls.

    A protocol error (unknown tag, oversize length) leaves the decoder failed:
    the stream cannot be resynchronised, so the caller should close it. Frames
    completed before the bad header in the same ``feed`` are still returned
    (they were sent whole and must not be lost); the error is then available
    as :attr:`error` and raised by the next ``feed`` or ``eof``.
    """

    __slots__ = ("_buf", "_error", "_need", "_raised")

    def __init__(self) -> None:
        self._buf = bytearray()
        # Parsed header of the frame in progress: (tag, length), or None
        # while fewer than HEADER_SIZE bytes of it have arrived.
        self._need: tuple[int, int] | None = None
        self._error: ProtocolError | None = None
        self._raised = False

    @property
    def buffered(self) -> int:
        """Bytes held for the incomplete frame in progress."""
        return len(self._buf)

    @property
    def mid_frame(self) -> bool:
        """True when the stream stopped inside a frame (eof() would raise)."""
        return self._error is None and (self._need is not None or bool(self._buf))

    @property
    def failed(self) -> bool:
        return self._error is not None

    @property
    def error(self) -> ProtocolError | None:
        """The protocol error that failed the stream, if any."""
        return self._error

    def feed(self, data: bytes | bytearray | memoryview) -> list[Frame]:
        """Add ``data`` to the stream; return every frame it completes.

        Raises a :class:`ProtocolError` when the stream is broken and no
        complete frame precedes the break in this call.
        """
        if self._error is not None:
            self._raised = True
            raise self._error
        buf = self._buf
        buf += data
        frames: list[Frame] = []
        pos = 0
        end = len(buf)
        try:
            while True:
                if self._need is None:
                    if end - pos < HEADER_SIZE:
                        break
                    self._need = parse_header(buf[pos : pos + HEADER_SIZE])
                    pos += HEADER_SIZE
                tag, length = self._need
                if end - pos < length:
                    break
                frames.append(Frame(tag, bytes(buf[pos : pos + length])))
                pos += length
                self._need = None
        except (UnknownTagError, OversizeFrameError) as exc:
            self._error = exc
            buf.clear()
            if not frames:
                self._raised = True
                raise
        finally:
            if self._error is None and pos:
                del buf[:pos]
        return frames

    def eof(self) -> None:
        """Declare the end of the stream; raise if it cut a frame short.

        A protocol error that was deferred (frames came before it) and not
        raised yet is raised here.
        """
        if self._error is not None:
            if not self._raised:
                self._raised = True
                raise self._error
            return
        if self._need is not None:
            tag, length = self._need
            raise TruncatedFrameError(expected=length, received=len(self._buf), tag=tag)
        if self._buf:
            raise TruncatedFrameError(expected=HEADER_SIZE, received=len(self._buf), tag=None)

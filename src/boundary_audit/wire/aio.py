"""asyncio stream helpers over the sans-I/O framing."""

from __future__ import annotations

import asyncio

from .errors import TruncatedFrameError
from .framing import HEADER_SIZE, Frame, encode_frame, parse_header
from .messages import WireMessage, decode_payload, encode_message


async def _read_exactly(reader: asyncio.StreamReader, n: int, tag: int | None) -> bytes:
    try:
        return await reader.readexactly(n)
    except asyncio.IncompleteReadError as exc:
        if not exc.partial and tag is None:
            raise EOFError("connection closed at a frame boundary") from exc
        raise TruncatedFrameError(expected=n, received=len(exc.partial), tag=tag) from exc


async def write_frame(writer: asyncio.StreamWriter, tag: int, payload: bytes) -> None:
    writer.write(encode_frame(tag, payload))
    await writer.drain()


async def read_frame(reader: asyncio.StreamReader) -> Frame:
    """Read one whole frame. ``EOFError`` on a clean close between frames."""
    tag, length = parse_header(await _read_exactly(reader, HEADER_SIZE, None))
    payload = await _read_exactly(reader, length, tag) if length else b""
    return Frame(tag, payload)


async def write_message(writer: asyncio.StreamWriter, message: WireMessage) -> None:
    writer.write(encode_message(message))
    await writer.drain()


async def read_message(reader: asyncio.StreamReader) -> WireMessage:
    frame = await read_frame(reader)
    return decode_payload(frame.tag, frame.payload)

"""Reading and writing asyncio streams against a deadline, for both sides.

These raise what the stdlib and h11 raise; the callers turn it into their
side's fault (``errors.faults``): a client that stopped reading is not an
upstream that stopped reading.
"""

from __future__ import annotations

import asyncio

import h11

from .config import READ_CHUNK


async def write_within(
    writer: asyncio.StreamWriter, data: bytes | list[bytes] | None, seconds: float
) -> None:
    """Write ``data`` and wait until the transport took it, at most ``seconds``.

    Nothing to write (``None`` is what h11 gives for a closed connection)
    returns at once. Raises TimeoutError (the peer stopped reading) or OSError.
    """
    if not data:
        return
    if isinstance(data, list):
        writer.writelines(data)
    else:
        writer.write(data)
    async with asyncio.timeout(seconds):
        await writer.drain()


async def read_within(reader: asyncio.StreamReader, seconds: float) -> bytes:
    """Up to :data:`~.config.READ_CHUNK` bytes (``b""`` at EOF), waiting at most ``seconds``.

    Raises TimeoutError or OSError.
    """
    async with asyncio.timeout(seconds):
        return await reader.read(READ_CHUNK)


async def next_event(
    conn: h11.Connection, reader: asyncio.StreamReader, seconds: float
) -> h11.Event:
    """The next event of ``conn``, reading from ``reader`` as needed (each read
    within ``seconds``). Raises h11.RemoteProtocolError, TimeoutError or OSError."""
    while True:
        event = conn.next_event()
        if isinstance(event, h11.Event):
            return event
        conn.receive_data(await read_within(reader, seconds))


__all__ = ["next_event", "read_within", "write_within"]

"""Reading and writing asyncio streams against a deadline, for both sides.

These raise what the stdlib and h11 raise; the callers turn it into their
side's fault (``errors.faults``): a client that stopped reading is not an
upstream that stopped reading.
"""

from __future__ import annotations

import asyncio
import os
import socket
from typing import cast

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


def _wake(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


async def peek_first_byte(writer: asyncio.StreamWriter, seconds: float) -> bytes:
    """The first byte the peer sends next, left unread in the socket (``b""`` at EOF).

    The transport's reading is paused first and stays paused: the byte must
    stay in the kernel, where a later ``start_tls`` finds it, not land in the
    stream's buffer. The caller resumes reading (``transport.resume_reading()``)
    right before it reads again, with no await in between. The wait uses a
    duplicate of the socket's descriptor, since the event loop refuses to
    watch a descriptor a transport owns. Raises TimeoutError or OSError.
    """
    transport = cast(asyncio.Transport, writer.transport)
    transport.pause_reading()
    raw = writer.get_extra_info("socket")
    loop = asyncio.get_running_loop()
    peer = socket.socket(fileno=os.dup(raw.fileno()))
    try:
        async with asyncio.timeout(seconds):
            while True:
                try:
                    return peer.recv(1, socket.MSG_PEEK)
                except BlockingIOError:
                    pass
                ready: asyncio.Future[None] = loop.create_future()
                loop.add_reader(peer.fileno(), _wake, ready)
                try:
                    await ready
                finally:
                    loop.remove_reader(peer.fileno())
    finally:
        peer.close()


__all__ = ["next_event", "peek_first_byte", "read_within", "write_within"]

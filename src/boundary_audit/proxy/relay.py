"""Relaying bytes both ways after a protocol switch (a WebSocket's 101).

Once client and upstream have agreed to speak WebSocket, the proxy has
decided and audited the upgrade request; what follows is opaque frames, so
they are copied as bytes, each direction with back-pressure (a read waits
until the other side took the previous chunk), until either side closes,
the connection is silent too long, or too many bytes went through.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from enum import StrEnum

from .config import READ_CHUNK


class RelayEnd(StrEnum):
    """Why a relay ended (the ``outcome`` label of the WebSocket metrics)."""

    CLIENT_CLOSED = "client_closed"
    UPSTREAM_CLOSED = "upstream_closed"
    IDLE = "idle"
    SIZE_LIMIT = "size_limit"
    CLIENT_ERROR = "client_error"
    UPSTREAM_ERROR = "upstream_error"


@dataclass(slots=True)
class RelayResult:
    """How a relay ended and how many bytes moved each way."""

    end: RelayEnd
    to_upstream: int = 0
    to_client: int = 0
    error: str | None = None


class _Books:
    """What both directions share: the last activity and the bytes so far."""

    __slots__ = ("last", "total")

    def __init__(self) -> None:
        self.last = time.monotonic()
        self.total = 0


class _Stop(Exception):
    def __init__(self, end: RelayEnd, error: str | None = None) -> None:
        super().__init__(end.value)
        self.end = end
        self.error = error


async def _pump(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    books: _Books,
    *,
    from_client: bool,
    idle: float,
    max_bytes: int,
    counts: list[int],
) -> None:
    """Copy ``reader`` to ``writer`` until EOF; raise :class:`_Stop` with why it ended."""
    index = 0 if from_client else 1
    read_error = RelayEnd.CLIENT_ERROR if from_client else RelayEnd.UPSTREAM_ERROR
    write_error = RelayEnd.UPSTREAM_ERROR if from_client else RelayEnd.CLIENT_ERROR
    while True:
        # Idle means silent both ways: the other direction's traffic counts.
        remaining = idle - (time.monotonic() - books.last)
        if remaining <= 0:
            raise _Stop(RelayEnd.IDLE)
        try:
            async with asyncio.timeout(remaining):
                data = await reader.read(READ_CHUNK)
        except TimeoutError:
            continue  # re-check: the other direction may have been busy
        except OSError as exc:
            raise _Stop(read_error, repr(exc)) from None
        if not data:
            raise _Stop(RelayEnd.CLIENT_CLOSED if from_client else RelayEnd.UPSTREAM_CLOSED)
        books.last = time.monotonic()
        books.total += len(data)
        counts[index] += len(data)
        if books.total > max_bytes:
            raise _Stop(RelayEnd.SIZE_LIMIT)
        try:
            writer.write(data)
            async with asyncio.timeout(idle):
                await writer.drain()
        except (OSError, TimeoutError) as exc:
            raise _Stop(write_error, repr(exc)) from None


async def relay(
    client: tuple[asyncio.StreamReader, asyncio.StreamWriter],
    upstream: tuple[asyncio.StreamReader, asyncio.StreamWriter],
    *,
    idle: float,
    max_bytes: int,
) -> RelayResult:
    """Copy bytes both ways until one side closes, ``idle`` seconds pass with
    no byte either way, or more than ``max_bytes`` (both ways together) went
    through. The caller closes both connections afterwards."""
    books = _Books()
    counts = [0, 0]
    tasks = [
        asyncio.ensure_future(
            _pump(
                *client[:1],
                upstream[1],
                books,
                from_client=True,
                idle=idle,
                max_bytes=max_bytes,
                counts=counts,
            )
        ),
        asyncio.ensure_future(
            _pump(
                upstream[0],
                client[1],
                books,
                from_client=False,
                idle=idle,
                max_bytes=max_bytes,
                counts=counts,
            )
        ),
    ]
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    first = next(iter(done))
    exc = first.exception()
    if isinstance(exc, _Stop):
        return RelayResult(exc.end, counts[0], counts[1], exc.error)
    raise RuntimeError("relay pump ended without a reason") from exc


__all__ = ["RelayEnd", "RelayResult", "relay"]

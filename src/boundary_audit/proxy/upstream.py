"""Connections to upstream servers: set-up, TLS, h11 framing, and one retry.

A client connection keeps at most one upstream connection alive between its
requests (:class:`UpstreamSlot`), reused while the next request goes to the
same scheme, host and port. A kept-alive connection the server closed
meanwhile shows up only when it is used; a body-less request that hits one
is sent again once, on a fresh connection (:meth:`UpstreamSlot.send_bodyless`).
Every failure is raised as an upstream :class:`~.errors.ProxyFault`.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable
from dataclasses import dataclass, field

import h11

from .config import MAX_HEADER_BYTES, READ_CHUNK, ProxyTimeouts
from .errors import (
    RETRYABLE_KINDS,
    UPSTREAM_CONNECT,
    UPSTREAM_READ,
    UPSTREAM_WRITE,
    ProxyFault,
)
from .http import Target
from .streams import next_event, write_within

#: (scheme, host, port): what a kept connection may be reused for.
UpstreamKey = tuple[str, str, int]


def _client_h11() -> h11.Connection:
    return h11.Connection(h11.CLIENT, max_incomplete_event_size=MAX_HEADER_BYTES)


@dataclass(slots=True)
class UpstreamConnection:
    """One TCP (or TLS) connection to an upstream server, with its h11 state."""

    key: UpstreamKey
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    conn: h11.Connection = field(default_factory=_client_h11)
    reused: bool = False

    def usable(self) -> bool:
        """Idle on both sides and not (yet seen to be) closed."""
        return (
            self.conn.our_state is h11.IDLE
            and self.conn.their_state is h11.IDLE
            and not self.reader.at_eof()
            and not self.writer.is_closing()
        )

    def close(self) -> None:
        self.writer.close()

    async def write(self, data: bytes | list[bytes] | None, seconds: float) -> None:
        with UPSTREAM_WRITE:
            await write_within(self.writer, data, seconds)

    async def next_event(self, seconds: float) -> h11.Event:
        """The next h11 event from the server, reading as needed (``seconds`` per read)."""
        with UPSTREAM_READ:
            return await next_event(self.conn, self.reader, seconds)


async def open_upstream(
    target: Target, tls: ssl.SSLContext | None, seconds: float
) -> UpstreamConnection:
    """Connect to ``target`` (TLS with ``tls`` for https) within ``seconds``."""
    with UPSTREAM_CONNECT:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(
                target.host,
                target.port,
                ssl=tls,
                server_hostname=target.host if tls else None,
                limit=READ_CHUNK,
            ),
            seconds,
        )
    return UpstreamConnection((target.scheme, target.host, target.port), reader, writer)


class UpstreamSlot:
    """The one upstream connection a client connection keeps between requests.

    ``on_retry`` hears of each stale kept-alive connection that made
    :meth:`send_bodyless` try again (the caller counts and logs it).
    """

    def __init__(
        self,
        tls: ssl.SSLContext,
        timeouts: ProxyTimeouts,
        on_retry: Callable[[ProxyFault], None],
    ) -> None:
        self._tls = tls
        self._timeouts = timeouts
        self._on_retry = on_retry
        self.current: UpstreamConnection | None = None

    async def connect(self, target: Target) -> UpstreamConnection:
        """The kept connection if it fits ``target`` and is usable, else a new one."""
        key = (target.scheme, target.host, target.port)
        if self.current is not None:
            if self.current.key == key and self.current.usable():
                self.current.reused = True
                return self.current
            self.drop()
        tls = self._tls if target.scheme == "https" else None
        self.current = await open_upstream(target, tls, self._timeouts.connect)
        return self.current

    def drop(self) -> None:
        """Close the kept connection (it cannot serve another request)."""
        if self.current is not None:
            self.current.close()
            self.current = None

    def finish_cycle(self) -> None:
        """Keep the connection for the next request if the exchange completed."""
        if self.current is not None:
            conn = self.current.conn
            if conn.our_state is h11.DONE and conn.their_state is h11.DONE:
                conn.start_next_cycle()
            else:
                self.drop()

    async def send_bodyless(
        self, request: h11.Request, target: Target
    ) -> tuple[UpstreamConnection, h11.Event]:
        """Send a request without body; on a stale kept-alive connection, retry once.

        Returns the connection used and the server's first event. Only
        body-less requests are retried: nothing of theirs is lost by sending
        them again, and the server cannot have acted on a connection it had
        already closed.
        """
        upstream = await self.connect(target)
        while True:
            try:
                head = upstream.conn.send(request)
                end = upstream.conn.send(h11.EndOfMessage())
                await upstream.write([head or b"", end or b""], self._timeouts.read)
                return upstream, await upstream.next_event(self._timeouts.response)
            except ProxyFault as fault:
                if not upstream.reused or fault.kind not in RETRYABLE_KINDS:
                    raise
                self._on_retry(fault)
                self.drop()
                upstream = await self.connect(target)


__all__ = ["UpstreamConnection", "UpstreamKey", "UpstreamSlot", "open_upstream"]

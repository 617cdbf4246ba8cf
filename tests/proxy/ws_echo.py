"""A local WebSocket echo server (the ``websockets`` library) for the tests."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field

import trustme
from websockets.asyncio.server import ServerConnection, serve

#: Bounds the server thread's shutdown.
JOIN_TIMEOUT = 10.0


@dataclass
class EchoServer:
    """A websockets echo server on its own loop thread; ``paths`` are the
    handshakes it received."""

    port: int
    scheme: str
    paths: list[str] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)

    def uri(self, path: str = "/echo") -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}{path}"


@contextlib.contextmanager
def serve_ws(scheme: str, upstream_ca: trustme.CA) -> Iterator[EchoServer]:
    """A ``websockets`` echo server (``ws`` or ``wss`` with a cert from ``upstream_ca``)."""
    tls: ssl.SSLContext | None = None
    if scheme == "wss":
        tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        upstream_ca.issue_cert("127.0.0.1").configure_cert(tls)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = EchoServer(sock.getsockname()[1], scheme)

    async def echo(connection: ServerConnection) -> None:
        server.paths.append(connection.request.path if connection.request else "")
        if connection.request is not None:
            server.headers.append({k.lower(): v for k, v in connection.request.headers.raw_items()})
        async for message in connection:
            await connection.send(message)

    loop = asyncio.new_event_loop()
    stop = asyncio.Event()

    async def main() -> None:
        async with serve(echo, sock=sock, ssl=tls, max_size=None, compression=None):
            await stop.wait()

    thread = threading.Thread(target=loop.run_until_complete, args=(main(),), daemon=True)
    thread.start()
    yield server
    loop.call_soon_threadsafe(stop.set)
    thread.join(JOIN_TIMEOUT)

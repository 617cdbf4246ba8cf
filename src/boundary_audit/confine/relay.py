"""The relay of a network-isolated command: its namespace's listener, joined to the proxy."""

from __future__ import annotations

import asyncio
import socket

from ..logs import get_logger
from .metrics import LaunchMetrics

#: Bytes copied per read by the isolated command's relay: large enough to
#: keep syscalls per MB low, small enough to stay cache-friendly.
RELAY_CHUNK = 65536


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Copy one direction until EOF, then pass the half-close on."""
    try:
        while chunk := await reader.read(RELAY_CHUNK):
            writer.write(chunk)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
    except (ConnectionError, OSError):
        writer.close()


class Relay:
    """Serves the listener made inside the command's network namespace: each
    connection is joined to the real proxy outside it."""

    def __init__(
        self, listener: socket.socket, proxy_host: str, proxy_port: int, metrics: LaunchMetrics
    ) -> None:
        self._listener = listener
        self._proxy = (proxy_host, proxy_port)
        self._metrics = metrics
        self._log = get_logger("run")
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, sock=self._listener)

    async def aclose(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            try:
                up_reader, up_writer = await asyncio.open_connection(*self._proxy)
            except OSError as exc:
                self._metrics.relay_failures.inc()
                self._log.error(
                    "cannot reach the proxy for the isolated command",
                    proxy=f"{self._proxy[0]}:{self._proxy[1]}",
                    error=str(exc),
                )
                return
            self._metrics.relay_connections.inc()
            try:
                await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
            finally:
                up_writer.close()
        finally:
            writer.close()
            self._tasks.discard(task)


__all__ = ["Relay"]

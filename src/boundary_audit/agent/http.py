"""A tiny HTTP/1.1 server for ``/metrics`` and ``/healthz``, on h11.

It runs in the agent's event loop (no extra thread), answers GET/HEAD only
and bounds what a client can make it hold: h11 caps the request head, and a
client that goes quiet is dropped after :data:`CLIENT_TIMEOUT`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable
from typing import Any

import h11
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from ..logs import get_logger

#: Seconds a metrics client may take to send a request before it is dropped.
CLIENT_TIMEOUT = 10.0
#: Bytes read per socket read; request heads are a few hundred bytes.
READ_BYTES = 16 * 1024

HealthCheck = Callable[[], tuple[bool, dict[str, Any]]]


class MetricsServer:
    def __init__(
        self, host: str, port: int, registry: CollectorRegistry, health: HealthCheck
    ) -> None:
        self._host = host
        self._port = port
        self._registry = registry
        self._health = health
        self._server: asyncio.Server | None = None
        self._log = get_logger("agent")

    @property
    def address(self) -> tuple[str, int]:
        if self._server is None:
            raise RuntimeError("metrics server is not started")
        host, port = self._server.sockets[0].getsockname()[:2]
        return str(host), int(port)

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, self._host, self._port)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None

    def _route(self, method: str, target: str) -> tuple[int, str, bytes]:
        path = target.split("?", 1)[0]
        if method not in ("GET", "HEAD"):
            return 405, "text/plain; charset=utf-8", b"method not allowed\n"
        if path == "/metrics":
            return 200, CONTENT_TYPE_LATEST, generate_latest(self._registry)
        if path == "/healthz":
            ok, details = self._health()
            body = json.dumps(details).encode()
            return (200 if ok else 503), "application/json", body
        return 404, "text/plain; charset=utf-8", b"not found: try /metrics or /healthz\n"

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = h11.Connection(h11.SERVER)
        try:
            while True:
                event = conn.next_event()
                if event is h11.NEED_DATA:
                    async with asyncio.timeout(CLIENT_TIMEOUT):
                        conn.receive_data(await reader.read(READ_BYTES))
                    continue
                if isinstance(event, h11.Request):
                    method = event.method.decode("ascii", "replace")
                    status, ctype, body = self._route(method, event.target.decode("latin-1"))
                    headers = [("Content-Type", ctype), ("Content-Length", str(len(body)))]
                    writer.write(conn.send(h11.Response(status_code=status, headers=headers)))
                    if method != "HEAD":
                        writer.write(conn.send(h11.Data(data=body)))
                    writer.write(conn.send(h11.EndOfMessage()))
                    await writer.drain()
                    if conn.our_state is h11.MUST_CLOSE:
                        break
                    continue
                if event is h11.PAUSED:
                    conn.start_next_cycle()  # keep-alive: the next request
                    continue
                if isinstance(event, h11.ConnectionClosed):
                    break
                # Request body parts (Data, EndOfMessage) carry nothing we use.
        except (TimeoutError, ConnectionError) as exc:
            # The client went away or stalled: nobody is left to answer.
            self._log.debug("metrics client dropped", error=repr(exc))
        except h11.RemoteProtocolError as exc:
            self._log.debug("bad request on the metrics port", error=str(exc))
            with contextlib.suppress(h11.LocalProtocolError, ConnectionError):
                writer.write(conn.send(h11.Response(status_code=400, headers=[])))
        finally:
            writer.close()

"""The explicit HTTP/HTTPS proxy: decide, audit, then forward or refuse.

Every HTTP request (absolute-form plain HTTP, and each request inside a CONNECT
tunnel once TLS is terminated with a leaf certificate from the local CA) is
evaluated against the allow rules and handed to the auditor before a single byte
goes upstream. h11 parses both sides; bodies stream through in chunks with
back-pressure, so memory use does not grow with body size.

This module is the flow only: what a request means and what headers travel
on is in :mod:`.http`, upstream connections in :mod:`.upstream`, and every
failure is a :class:`~.errors.ProxyFault`, turned into a counter, a log line
and an answer in one place (:meth:`.client.ClientConnection._fail`).
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import Collection, Sequence

from boundary_audit.auditor.event import Auditor, HandsOver
from boundary_audit.logs import get_logger

from .ca import ALPN_HTTP1, ALPN_PROTOCOLS, CertificateAuthority
from .client import ClientConnection
from .config import (
    READ_CHUNK,
    WEBSOCKET_MAX_BYTES,
    ProxyTimeouts,
    SessionHeaders,
)
from .errors import FaultKind
from .metrics import ProxyMetrics
from .peer import peer_uid, tables_readable
from .rules import RuleSet

__all__ = ["ProxyServer"]


#: What a client of another user gets before the connection is closed.
REFUSED_PEER = (
    b"HTTP/1.1 403 Forbidden\r\ncontent-type: text/plain; charset=utf-8\r\n"
    b"connection: close\r\ncontent-length: 52\r\n\r\n"
    b"boundary-audit: this proxy serves another user only\n"
)


#: How long a refused client may take to send its request and read the
#: refusal: closing with its bytes unread would reset the connection, and
#: the client would see a reset instead of the reason.
REFUSED_LINGER = 1.0


async def _linger(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Send what was written, then read and drop what the client sends until
    it closes or :data:`REFUSED_LINGER` passes."""
    with contextlib.suppress(OSError, TimeoutError):
        async with asyncio.timeout(REFUSED_LINGER):
            await writer.drain()
            if writer.can_write_eof():
                writer.write_eof()
            while await reader.read(READ_CHUNK):
                pass


class ProxyServer:
    """An explicit forward proxy on ``host``:``port`` that enforces and audits.

    Use as ``async with ProxyServer(rules, auditor, ca=ca) as proxy:`` and point
    clients at ``http://127.0.0.1:{proxy.port}``.
    """

    def __init__(
        self,
        rules: RuleSet,
        auditor: Auditor,
        *,
        ca: CertificateAuthority,
        host: str = "127.0.0.1",
        port: int = 0,
        upstream_ca_file: str | None = None,
        session_header_domains: Sequence[str] = (),
        session_id: str | None = None,
        session_headers: SessionHeaders | None = None,
        timeouts: ProxyTimeouts | None = None,
        metrics: ProxyMetrics | None = None,
        websocket_max_bytes: int = WEBSOCKET_MAX_BYTES,
        allowed_uids: Collection[int] | None = None,
        wait_for_handover: bool = False,
    ) -> None:
        # ``session_headers`` (inject targets, header names) or, shorter,
        # whole ``session_header_domains`` under the default names.
        self.session_headers = session_headers or SessionHeaders.of(
            session_header_domains, session_id
        )
        self.rules = rules
        self.auditor = auditor
        #: The auditor, when it can say that an event reached the agent
        #: (SocketAuditor): responses then wait for their request's event.
        self.hands_over: HandsOver | None = auditor if isinstance(auditor, HandsOver) else None
        #: Whether a response waits for that handover. Without the wait the
        #: mark is still taken, so the sender writes the event at once (no
        #: batch linger) and the loss window of a launcher killed from
        #: outside is the time of one write; the wait closes it for a cost
        #: on every answer (a cross-thread wake-up, docs/proxy.md).
        self.wait_for_handover = wait_for_handover
        self.ca = ca
        self.host = host
        self._requested_port = port
        self.timeouts = timeouts or ProxyTimeouts()
        self.metrics = metrics or ProxyMetrics()
        self.websocket_max_bytes = websocket_max_bytes
        #: Users whose loopback clients may use the proxy (None: anyone who
        #: can connect). Checked per connection against the kernel's tables.
        self.allowed_uids = None if allowed_uids is None else frozenset(allowed_uids)
        self.upstream_ssl = ssl.create_default_context()
        if upstream_ca_file:
            self.upstream_ssl.load_verify_locations(upstream_ca_file)
        self.upstream_ssl.set_alpn_protocols(ALPN_HTTP1)
        # For a client speaking HTTP/2: the upstream may answer h2 or HTTP/1.1.
        self.upstream_ssl_h2 = ssl.create_default_context()
        if upstream_ca_file:
            self.upstream_ssl_h2.load_verify_locations(upstream_ca_file)
        self.upstream_ssl_h2.set_alpn_protocols(ALPN_PROTOCOLS)
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.Task[None]] = set()
        self._log = get_logger("proxy")

    def handover_mark(self) -> object | None:
        """Right after audit(): what the response must wait for (None: nothing)."""
        return None if self.hands_over is None else self.hands_over.handover_mark()

    async def handed_over(self, mark: object | None) -> None:
        """Before a response head: wait (boundedly) until the request's event
        is handed over to the agent, so a launcher killed after the client got
        its answer has not lost the event. The auditor bounds, counts and logs
        a wait that runs out; the response goes out either way."""
        if mark is not None and self.hands_over is not None and self.wait_for_handover:
            await self.hands_over.handed_over(mark)

    @property
    def port(self) -> int:
        """The port actually bound (useful with the default port 0)."""
        if self._server is None:
            raise RuntimeError("ProxyServer is not started")
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    async def start(self) -> None:
        if self._server is not None:
            raise RuntimeError("ProxyServer already started")
        if self.allowed_uids is not None and not tables_readable():
            self._log.warning(
                "cannot tell which user a client is (no /proc/net/tcp): "
                "the proxy serves every local user"
            )
            self.allowed_uids = None
        self._server = await asyncio.start_server(
            self._on_client, self.host, self._requested_port, limit=READ_CHUNK
        )
        self._log.info("proxy listening", address=self.url)

    async def aclose(self) -> None:
        """Stop accepting, cut open connections, and wait for their handlers."""
        if self._server is None:
            return
        self._server.close()
        for task in list(self._connections):
            task.cancel()
        await asyncio.gather(*self._connections, return_exceptions=True)
        await self._server.wait_closed()
        self._server = None

    def _peer_allowed(self, writer: asyncio.StreamWriter, peer: object) -> bool:
        """Whether the client's socket belongs to an allowed user; a refusal
        is answered 403, logged and counted (it is no request of this run)."""
        assert self.allowed_uids is not None
        try:
            uid = peer_uid(writer.get_extra_info("socket"))
        except OSError:
            uid = None
        if uid is not None and uid in self.allowed_uids:
            return True
        reason = "unknown_user" if uid is None else "other_user"
        self.metrics.refused_peers.labels(reason=reason).inc()
        self._log.warning("client of another user refused", peer=str(peer), uid=uid)
        writer.write(REFUSED_PEER)
        return False

    async def __aenter__(self) -> ProxyServer:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def _on_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        self.metrics.active_connections.inc()
        peer = writer.get_extra_info("peername")
        if self.allowed_uids is not None and not self._peer_allowed(writer, peer):
            try:
                await _linger(reader, writer)
            finally:
                self.metrics.active_connections.dec()
                self._connections.discard(task)
                writer.close()
            return
        try:
            await ClientConnection(self, reader, writer, peer).run()
        except asyncio.CancelledError:
            pass
        except Exception:
            # A bug must cost one connection, never the proxy.
            self._log.exception("client connection failed", peer=str(peer))
            self.metrics.bad_clients.labels(kind=FaultKind.INTERNAL_ERROR).inc()
        finally:
            self.metrics.active_connections.dec()
            self._connections.discard(task)
            writer.close()

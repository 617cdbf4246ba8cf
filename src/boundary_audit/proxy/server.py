"""The explicit HTTP/HTTPS proxy: decide, audit, then forward or refuse.

Every HTTP request (absolute-form plain HTTP, and each request inside a CONNECT
tunnel once TLS is terminated with a leaf certificate from the local CA) is
evaluated against the allow rules and handed to the auditor before a single byte
goes upstream. h11 parses both sides; bodies stream through in chunks with
back-pressure, so memory use does not grow with body size.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit

import h11
from prometheus_client import CollectorRegistry, Counter, Gauge

from boundary_audit.auditor.event import AuditEvent, Auditor
from boundary_audit.logs import get_logger

from .ca import ALPN_PROTOCOLS, CertificateAuthority
from .rules import Decision, RuleSet, normalize_host, suggest_rule

__all__ = [
    "SEQUENCE_NUMBER_HEADER",
    "SESSION_ID_HEADER",
    "ProxyMetrics",
    "ProxyServer",
    "ProxyTimeouts",
]

#: Correlation headers added to allowed requests for ``session_header_domains``.
SESSION_ID_HEADER = "X-Boundary-Session-Id"
SEQUENCE_NUMBER_HEADER = "X-Boundary-Sequence-Number"

#: Largest request or response head accepted (h11 ``max_incomplete_event_size``);
#: 64 KiB is the upper end of what common servers allow, so real clients fit and
#: a client streaming headers forever gets a 431 instead of our memory.
MAX_HEADER_BYTES = 64 * 1024
#: Socket read size: large enough that per-chunk Python overhead stays small
#: against the copy cost (hundreds of MB/s), small enough to bound per-connection memory.
READ_CHUNK = 256 * 1024
#: Bytes of a denied request's body we read so the connection can be reused;
#: anything bigger is cheaper to cut off by closing.
DENIED_BODY_DRAIN_LIMIT = 64 * 1024
#: Headers that describe one hop, never forwarded (RFC 9110 7.6.1, plus the
#: proxy credentials and the non-standard Proxy-Connection).
HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"proxy-connection",
        b"keep-alive",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
        b"proxy-authorization",
        b"proxy-authenticate",
    }
)
VIA = b"1.1 boundary-audit"
DEFAULT_PORTS = {"http": 80, "https": 443}
#: Upstream failures that on a reused connection mean "the server had closed it".
RETRYABLE_KINDS = frozenset({"read", "write", "protocol"})

# Timeouts in seconds.
#: A keep-alive client may sit idle between requests this long.
IDLE_TIMEOUT = 60.0
#: From the first byte of a request head to its end: slow-loris clients get 408.
HEADER_TIMEOUT = 10.0
#: Silence while a body is streaming in either direction.
READ_TIMEOUT = 60.0
#: TCP (+ TLS) connection set-up to an upstream server.
CONNECT_TIMEOUT = 10.0
#: TLS handshake with the client inside a CONNECT tunnel.
TLS_HANDSHAKE_TIMEOUT = 10.0
#: Upstream's time to start answering after the request head was sent.
RESPONSE_TIMEOUT = 120.0


@dataclass(frozen=True, slots=True)
class ProxyTimeouts:
    """Every timeout the proxy applies, in seconds (see the module constants)."""

    idle: float = IDLE_TIMEOUT
    header: float = HEADER_TIMEOUT
    read: float = READ_TIMEOUT
    connect: float = CONNECT_TIMEOUT
    tls_handshake: float = TLS_HANDSHAKE_TIMEOUT
    response: float = RESPONSE_TIMEOUT


class ProxyMetrics:
    """Prometheus metrics of one proxy, on its own registry."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self.requests = Counter(
            "boundary_audit_proxy_requests",
            "HTTP requests decided, by decision",
            ["decision"],
            registry=self.registry,
        )
        self.upstream_errors = Counter(
            "boundary_audit_proxy_upstream_errors",
            "Failures talking to upstream servers, by kind",
            ["kind"],
            registry=self.registry,
        )
        self.bad_clients = Counter(
            "boundary_audit_proxy_bad_clients",
            "Client connections refused or cut for misbehaving, by kind",
            ["kind"],
            registry=self.registry,
        )
        self.active_connections = Gauge(
            "boundary_audit_proxy_active_connections",
            "Client connections currently open",
            registry=self.registry,
        )
        self.tunnels = Counter(
            "boundary_audit_proxy_tunnels",
            "CONNECT tunnels whose TLS was terminated",
            registry=self.registry,
        )


class _UpstreamError(Exception):
    """Upstream failed; ``status`` is what the client gets if nothing was sent yet."""

    def __init__(self, kind: str, status: int, message: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.status = status


class _ClientGone(Exception):
    """The client closed, timed out or broke the protocol mid-exchange."""


@dataclass(slots=True)
class _Upstream:
    key: tuple[str, str, int]
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    conn: h11.Connection = field(
        default_factory=lambda: h11.Connection(
            h11.CLIENT, max_incomplete_event_size=MAX_HEADER_BYTES
        )
    )
    reused: bool = False

    def usable(self) -> bool:
        return (
            self.conn.our_state is h11.IDLE
            and self.conn.their_state is h11.IDLE
            and not self.reader.at_eof()
            and not self.writer.is_closing()
        )

    def close(self) -> None:
        self.writer.close()


@dataclass(slots=True)
class _Target:
    """Where one request goes and how it is written in the audit trail."""

    scheme: str
    host: str
    port: int
    path: str
    url: str


def _header_tokens(headers: Sequence[tuple[bytes, bytes]], name: bytes) -> set[bytes]:
    tokens: set[bytes] = set()
    for key, value in headers:
        if key == name:
            tokens.update(t.strip().lower() for t in value.split(b",") if t.strip())
    return tokens


def _strip_hop_by_hop(headers: Sequence[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """Drop hop-by-hop headers, including those the Connection header names."""
    drop = HOP_BY_HOP | _header_tokens(headers, b"connection")
    return [(k, v) for k, v in headers if k not in drop]


def _authority(host: str, port: int, scheme: str) -> str:
    shown = f"[{host}]" if ":" in host else host
    return shown if DEFAULT_PORTS.get(scheme) == port else f"{shown}:{port}"


def _has_no_body(request: h11.Request) -> bool:
    """True when h11 frames the request with an empty body (RFC 9112 6.3)."""
    if _header_tokens(request.headers, b"transfer-encoding"):
        return False
    lengths = _header_tokens(request.headers, b"content-length")
    return not lengths or lengths == {b"0"}


def _split_authority(authority: str, default_port: int | None) -> tuple[str, int]:
    """``host[:port]`` (IPv6 in brackets) to a host and port; ValueError if malformed.

    With ``default_port`` None the port is required (CONNECT's authority-form).
    """
    parts = urlsplit("//" + authority)
    if parts.hostname is None or parts.username is not None or parts.path:
        raise ValueError(f"malformed authority {authority!r}")
    port = parts.port or default_port
    if port is None:
        raise ValueError(f"authority {authority!r} lacks a port")
    return parts.hostname, port


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
        timeouts: ProxyTimeouts | None = None,
        metrics: ProxyMetrics | None = None,
    ) -> None:
        if session_header_domains and not session_id:
            raise ValueError("session_header_domains needs a session_id to send")
        self.rules = rules
        self.auditor = auditor
        self.ca = ca
        self.host = host
        self._requested_port = port
        self.session_header_domains = tuple(normalize_host(d) for d in session_header_domains)
        self.session_id = session_id
        self.timeouts = timeouts or ProxyTimeouts()
        self.metrics = metrics or ProxyMetrics()
        self.upstream_ssl = ssl.create_default_context()
        if upstream_ca_file:
            self.upstream_ssl.load_verify_locations(upstream_ca_file)
        self.upstream_ssl.set_alpn_protocols(ALPN_PROTOCOLS)
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.Task[None]] = set()
        self._log = get_logger("proxy")

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

    async def __aenter__(self) -> ProxyServer:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def _on_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        self.metrics.active_connections.inc()
        peer = writer.get_extra_info("peername")
        try:
            await _ClientConnection(self, reader, writer, peer).run()
        except asyncio.CancelledError:
            pass
        except Exception:
            # A bug must cost one connection, never the proxy.
            self._log.exception("client connection failed", peer=str(peer))
            self.metrics.bad_clients.labels(kind="internal_error").inc()
        finally:
            self.metrics.active_connections.dec()
            self._connections.discard(task)
            writer.close()

    def session_headers_for(self, host: str) -> bool:
        return any(host == d or host.endswith("." + d) for d in self.session_header_domains)


class _ClientConnection:
    """One client TCP connection: a sequence of requests, maybe a TLS tunnel."""

    def __init__(
        self,
        proxy: ProxyServer,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        peer: Any,
    ) -> None:
        self.proxy = proxy
        self.reader = reader
        self.writer = writer
        self.timeouts = proxy.timeouts
        self.metrics = proxy.metrics
        self.conn = self._new_h11()
        self.tunnel: tuple[str, int] | None = None
        self.upstream: _Upstream | None = None
        self.log = proxy._log.bind(peer=str(peer))

    @staticmethod
    def _new_h11() -> h11.Connection:
        return h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEADER_BYTES)

    async def run(self) -> None:
        try:
            await self._serve()
        except _ClientGone as exc:
            self.metrics.bad_clients.labels(kind="connection_cut").inc()
            self.log.info("client connection cut", reason=str(exc))
        finally:
            if self.upstream is not None:
                self.upstream.close()

    async def _serve(self) -> None:
        while True:
            request = await self._read_request_head()
            if request is None:
                return
            if request.method == b"CONNECT":
                if not await self._open_tunnel(request):
                    return
                continue
            await self._handle(request)
            if not self._next_cycle():
                return

    # -- client I/O ----------------------------------------------------------------

    async def _write(self, data: bytes | list[bytes] | None) -> None:
        if not data:
            return
        if isinstance(data, list):
            self.writer.writelines(data)
        else:
            self.writer.write(data)
        try:
            async with asyncio.timeout(self.timeouts.read):
                await self.writer.drain()
        except (OSError, TimeoutError) as exc:
            raise _ClientGone(f"writing to client failed: {exc!r}") from exc

    async def _send(self, event: h11.Event) -> None:
        await self._write(self.conn.send(event))

    async def _receive(self, seconds: float) -> None:
        async with asyncio.timeout(seconds):
            data = await self.reader.read(READ_CHUNK)
        self.conn.receive_data(data)

    async def _send_simple(self, status: int, text: str, *, close: bool = False) -> None:
        """A small text/plain response, if the protocol state still allows one."""
        if self.conn.our_state not in (h11.IDLE, h11.SEND_RESPONSE):
            return
        body = text.encode("utf-8")
        headers = [
            (b"content-type", b"text/plain; charset=utf-8"),
            (b"content-length", str(len(body)).encode()),
            (b"via", VIA),
        ]
        if close:
            headers.append((b"connection", b"close"))
        try:
            await self._send(h11.Response(status_code=status, headers=headers))
            await self._send(h11.Data(data=body))
            await self._send(h11.EndOfMessage())
        except h11.LocalProtocolError as exc:
            self.log.warning("could not send error response", status=status, error=str(exc))

    async def _bad_client(self, kind: str, status: int, text: str) -> None:
        self.metrics.bad_clients.labels(kind=kind).inc()
        self.log.warning("bad client", kind=kind, status=status, detail=text)
        with contextlib.suppress(_ClientGone):
            await self._send_simple(status, text + "\n", close=True)

    async def _read_request_head(self) -> h11.Request | None:
        """The next request head, or None when the connection should end."""
        started: float | None = time.monotonic() if self.conn.trailing_data[0] else None
        while True:
            try:
                event = self.conn.next_event()
            except h11.RemoteProtocolError as exc:
                status = exc.error_status_hint
                kind = "oversized_head" if status == 431 else "malformed"
                await self._bad_client(kind, status, f"bad request: {exc}")
                return None
            if event is h11.NEED_DATA:
                if started is None:
                    timeout = self.timeouts.idle
                else:
                    timeout = self.timeouts.header - (time.monotonic() - started)
                try:
                    await self._receive(max(timeout, 0.0))
                except TimeoutError:
                    if started is None:
                        self.log.debug("idle client connection closed")
                        return None
                    await self._bad_client("slow_head", 408, "request head took too long")
                    return None
                except OSError as exc:
                    self.log.debug("client connection lost", error=str(exc))
                    return None
                if started is None:
                    started = time.monotonic()
                continue
            if isinstance(event, h11.Request):
                return event
            # ConnectionClosed (or PAUSED after a protocol switch): we are done.
            return None

    def _next_cycle(self) -> bool:
        if self.conn.our_state is h11.DONE and self.conn.their_state is h11.DONE:
            self.conn.start_next_cycle()
            return True
        return False

    # -- CONNECT ---------------------------------------------------------------------

    async def _open_tunnel(self, request: h11.Request) -> bool:
        if self.tunnel is not None:
            await self._bad_client("malformed", 400, "CONNECT inside a tunnel is not supported")
            return False
        try:
            host, port = _split_authority(request.target.decode("ascii"), None)
        except (ValueError, UnicodeDecodeError):
            await self._bad_client("malformed", 400, "CONNECT target must be host:port")
            return False
        host = normalize_host(host)
        try:
            context = self.proxy.ca.leaf_context(host)
        except ValueError as exc:
            await self._bad_client("malformed", 400, f"cannot issue a certificate for {host}")
            self.log.warning("leaf certificate failed", host=host, error=str(exc))
            return False
        # From the 200 to start_tls nothing may yield to the event loop: bytes
        # of the client's TLS hello arriving meanwhile would land in the plain
        # stream buffer and be lost to the handshake.
        self.writer.write(self.conn.send(h11.Response(status_code=200, headers=[(b"via", VIA)])))
        leftover, _ = self.conn.trailing_data
        if leftover:
            # The client spoke TLS before our 200; those bytes are already out
            # of the transport, so the handshake cannot be done correctly.
            self.metrics.bad_clients.labels(kind="early_tunnel_data").inc()
            self.log.warning("client sent data before the tunnel opened", host=host)
            return False
        try:
            await self.writer.start_tls(context, ssl_handshake_timeout=self.timeouts.tls_handshake)
        except (ssl.SSLError, OSError, TimeoutError, ConnectionError) as exc:
            self.metrics.bad_clients.labels(kind="tls_handshake").inc()
            self.log.warning("TLS handshake with client failed", host=host, error=repr(exc))
            return False
        self.metrics.tunnels.inc()
        self.tunnel = (host, port)
        self.conn = self._new_h11()
        return True

    # -- one request -----------------------------------------------------------------

    def _target(self, request: h11.Request) -> tuple[_Target | None, str | None]:
        """Resolve the request's destination, or say why it cannot be served."""
        raw = request.target.decode("latin-1")
        if self.tunnel is not None:
            return self._tunnel_target(request, raw, *self.tunnel)
        return self._plain_target(raw)

    @staticmethod
    def _tunnel_target(
        request: h11.Request, raw: str, tunnel_host: str, tunnel_port: int
    ) -> tuple[_Target | None, str | None]:
        if not raw.startswith("/"):
            return None, "requests inside a tunnel must use origin-form (/path)"
        host_header = next((v for k, v in request.headers if k == b"host"), b"")
        try:
            named, _ = _split_authority(host_header.decode("latin-1"), tunnel_port)
        except ValueError:
            return None, "missing or malformed Host header"
        named = normalize_host(named)
        authority = _authority(named, tunnel_port, "https")
        url = f"https://{authority}{raw}"
        target = _Target("https", named, tunnel_port, raw, url)
        if named != tunnel_host:
            # Domain fronting: the tunnel goes to one host, the request
            # names another; refuse rather than guess which one counts.
            return target, f"Host {named} does not match the tunnel to {tunnel_host}"
        return target, None

    @staticmethod
    def _plain_target(raw: str) -> tuple[_Target | None, str | None]:
        if raw.startswith("/"):
            return None, "this is a proxy: send the absolute URL (http://host/path)"
        try:
            parts = urlsplit(raw)
            port = parts.port or DEFAULT_PORTS["http"]
        except ValueError:
            return None, "malformed request URL"
        if parts.scheme.lower() != "http" or not parts.hostname:
            return None, "only http:// URLs can be proxied directly; use CONNECT for https"
        if parts.username is not None or parts.password is not None:
            return None, "credentials in the request URL are not supported"
        path = parts.path or "/"
        if parts.query:
            path += "?" + parts.query
        host = normalize_host(parts.hostname)
        return _Target("http", host, port, path, raw), None

    async def _handle(self, request: h11.Request) -> None:
        method = request.method.decode("ascii")
        names = {k for k, _ in request.headers}
        if b"content-length" in names and b"transfer-encoding" in names:
            # RFC 9112 6.1: a classic request-smuggling shape; refuse it outright.
            await self._bad_client(
                "ambiguous_framing", 400, "both Content-Length and Transfer-Encoding sent"
            )
            return
        target, problem = self._target(request)
        if target is None:
            assert problem is not None
            await self._bad_client("malformed", 400, problem)
            return
        decision = Decision(False) if problem else self.proxy.rules.evaluate(method, target.url)
        sequence = self.proxy.auditor.audit(
            AuditEvent(method, target.url, target.host, decision.allowed, decision.rule)
        )
        self.metrics.requests.labels(decision="allow" if decision.allowed else "deny").inc()
        if not decision.allowed:
            # The auditor records every decision; this line is for debugging only.
            self.log.debug("request denied", method=method, url=target.url)
            if problem:
                await self._refuse(421, f"boundary-audit: {problem}\n")
            else:
                await self._refuse(403, self._denied_text(method, target.url))
            return
        self.log.debug("request allowed", method=method, url=target.url, rule=decision.rule)
        try:
            await self._forward(request, target, sequence)
        except _UpstreamError as exc:
            self.metrics.upstream_errors.labels(kind=exc.kind).inc()
            self.log.warning("upstream failed", kind=exc.kind, url=target.url, error=str(exc))
            self._drop_upstream()
            if self.conn.our_state in (h11.IDLE, h11.SEND_RESPONSE):
                await self._refuse(exc.status, f"boundary-audit: {exc}\n")
            else:
                raise _ClientGone("upstream failed mid-response") from exc

    @staticmethod
    def _denied_text(method: str, url: str) -> str:
        try:
            example = f'  --allow "{suggest_rule(method, url)}"'
        except ValueError as exc:
            example = f"  (no rule can name this host: {exc})"
        return (
            "boundary-audit: request blocked by the allow rules\n"
            f"  {method} {url}\n"
            "To allow it, add a rule such as:\n"
            f"{example}\n"
        )

    async def _refuse(self, status: int, text: str) -> None:
        """Answer without forwarding; keep the connection if the body is small."""
        drained = await self._drain_request_body()
        await self._send_simple(status, text, close=not drained)

    async def _drain_request_body(self) -> bool:
        """Read (and drop) what is left of a refused request's body, if it is small."""
        budget = DENIED_BODY_DRAIN_LIMIT
        while self.conn.their_state is h11.SEND_BODY:
            try:
                event = self.conn.next_event()
            except h11.RemoteProtocolError:
                return False
            if event is h11.NEED_DATA:
                if self.conn.they_are_waiting_for_100_continue or budget <= 0:
                    return False
                try:
                    await self._receive(self.timeouts.read)
                except (TimeoutError, OSError):
                    return False
            elif isinstance(event, h11.Data):
                budget -= len(event.data)
            elif not isinstance(event, h11.EndOfMessage):
                return False
        return self.conn.their_state is h11.DONE

    # -- forwarding ------------------------------------------------------------------

    def _drop_upstream(self) -> None:
        if self.upstream is not None:
            self.upstream.close()
            self.upstream = None

    async def _connect(self, target: _Target) -> _Upstream:
        key = (target.scheme, target.host, target.port)
        if self.upstream is not None:
            if self.upstream.key == key and self.upstream.usable():
                self.upstream.reused = True
                return self.upstream
            self._drop_upstream()
        tls = self.proxy.upstream_ssl if target.scheme == "https" else None
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(
                    target.host,
                    target.port,
                    ssl=tls,
                    server_hostname=target.host if tls else None,
                    limit=READ_CHUNK,
                ),
                self.timeouts.connect,
            )
        except TimeoutError as exc:
            raise _UpstreamError("connect_timeout", 504, "upstream connect timed out") from exc
        except ssl.SSLCertVerificationError as exc:
            raise _UpstreamError(
                "tls_verify", 502, f"upstream certificate not trusted: {exc.verify_message}"
            ) from exc
        except ssl.SSLError as exc:
            raise _UpstreamError("tls", 502, f"upstream TLS failed: {exc}") from exc
        except OSError as exc:
            raise _UpstreamError("connect", 502, f"cannot connect upstream: {exc}") from exc
        self.upstream = _Upstream(key, reader, writer)
        return self.upstream

    def _upstream_headers(
        self, request: h11.Request, target: _Target, sequence: int
    ) -> list[tuple[bytes, bytes]]:
        chunked = b"chunked" in _header_tokens(request.headers, b"transfer-encoding")
        headers = [
            (k, v)
            for k, v in _strip_hop_by_hop(request.headers)
            if k != b"host" and not (chunked and k == b"content-length")
        ]
        headers.insert(0, (b"host", _authority(target.host, target.port, target.scheme).encode()))
        if chunked:
            headers.append((b"transfer-encoding", b"chunked"))
        headers.append((b"via", VIA))
        if self.proxy.session_headers_for(target.host):
            drop = {SESSION_ID_HEADER.lower().encode(), SEQUENCE_NUMBER_HEADER.lower().encode()}
            headers = [(k, v) for k, v in headers if k not in drop]
            assert self.proxy.session_id is not None
            headers.append((SESSION_ID_HEADER.encode(), self.proxy.session_id.encode()))
            headers.append((SEQUENCE_NUMBER_HEADER.encode(), str(sequence).encode()))
        return headers

    async def _upstream_write(self, upstream: _Upstream, data: bytes | list[bytes] | None) -> None:
        if not data:
            return
        if isinstance(data, list):
            upstream.writer.writelines(data)
        else:
            upstream.writer.write(data)
        try:
            async with asyncio.timeout(self.timeouts.read):
                await upstream.writer.drain()
        except TimeoutError as exc:
            raise _UpstreamError("write_timeout", 504, "upstream stopped reading") from exc
        except OSError as exc:
            raise _UpstreamError("write", 502, f"writing upstream failed: {exc}") from exc

    async def _upstream_event(self, upstream: _Upstream, seconds: float) -> h11.Event:
        while True:
            try:
                event = upstream.conn.next_event()
            except h11.RemoteProtocolError as exc:
                raise _UpstreamError("protocol", 502, f"upstream sent bad HTTP: {exc}") from exc
            if isinstance(event, h11.Event):
                return event
            try:
                async with asyncio.timeout(seconds):
                    data = await upstream.reader.read(READ_CHUNK)
            except TimeoutError as exc:
                raise _UpstreamError("read_timeout", 504, "upstream did not answer") from exc
            except OSError as exc:
                raise _UpstreamError("read", 502, f"reading upstream failed: {exc}") from exc
            upstream.conn.receive_data(data)

    async def _forward(self, request: h11.Request, target: _Target, sequence: int) -> None:
        headers = self._upstream_headers(request, target, sequence)
        upstream_request = h11.Request(method=request.method, target=target.path, headers=headers)
        upstream = await self._connect(target)
        if _has_no_body(request):
            upstream, first = await self._send_bodyless(upstream, upstream_request, target)
            await self._pump_response(upstream, first)
            self._finish_upstream_cycle()
            return
        await self._upstream_write(upstream, upstream.conn.send(upstream_request))
        body = asyncio.create_task(self._pump_request_body(upstream))
        try:
            await self._pump_response(upstream)
        finally:
            if not body.done():
                # The response ended first (an early 4xx, say): the rest of the
                # request body has nowhere to go, so neither connection survives.
                body.cancel()
                self._drop_upstream()
            with contextlib.suppress(asyncio.CancelledError, _UpstreamError, _ClientGone):
                await body
        self._finish_upstream_cycle()

    def _finish_upstream_cycle(self) -> None:
        """Keep the upstream connection for the next request if it is reusable."""
        if self.upstream is not None:
            conn = self.upstream.conn
            if conn.our_state is h11.DONE and conn.their_state is h11.DONE:
                conn.start_next_cycle()
            else:
                self._drop_upstream()

    async def _send_bodyless(
        self, upstream: _Upstream, request: h11.Request, target: _Target
    ) -> tuple[_Upstream, h11.Event]:
        """Send a request without body; on a stale kept-alive connection, retry once.

        Only body-less requests are retried: nothing of theirs is lost by
        sending them again, and the server cannot have acted on a connection
        it had already closed.
        """
        end = self.conn.next_event()
        if not isinstance(end, h11.EndOfMessage):
            raise _ClientGone(f"expected the end of a body-less request, got {end!r}")
        while True:
            try:
                await self._upstream_write(
                    upstream, upstream.conn.send(request) + upstream.conn.send(h11.EndOfMessage())
                )
                return upstream, await self._upstream_event(upstream, self.timeouts.response)
            except _UpstreamError as exc:
                if not upstream.reused or exc.kind not in RETRYABLE_KINDS:
                    raise
                self.metrics.upstream_errors.labels(kind="stale_connection").inc()
                self.log.info("kept-alive upstream connection was closed; reconnecting")
                self._drop_upstream()
                upstream = await self._connect(target)

    async def _pump_request_body(self, upstream: _Upstream) -> None:
        try:
            await self._copy_request_body(upstream)
        except BaseException:
            # Unblock the response side, which is waiting on this upstream.
            upstream.close()
            raise

    async def _copy_request_body(self, upstream: _Upstream) -> None:
        while True:
            try:
                event = self.conn.next_event()
            except h11.RemoteProtocolError as exc:
                self.metrics.bad_clients.labels(kind="malformed_body").inc()
                raise _ClientGone(f"bad request body: {exc}") from exc
            if event is h11.NEED_DATA:
                try:
                    await self._receive(self.timeouts.read)
                except (TimeoutError, OSError) as exc:
                    self.metrics.bad_clients.labels(kind="slow_body").inc()
                    raise _ClientGone(f"request body stalled: {exc!r}") from exc
                continue
            if isinstance(event, h11.Data):
                await self._upstream_write(
                    upstream, upstream.conn.send_with_data_passthrough(event)
                )
            elif isinstance(event, h11.EndOfMessage):
                await self._upstream_write(upstream, upstream.conn.send(h11.EndOfMessage()))
                return
            else:
                raise _ClientGone(f"client closed mid-body ({event!r})")

    async def _pump_response(self, upstream: _Upstream, first: h11.Event | None = None) -> None:
        while True:
            if first is not None:
                event, first = first, None
            else:
                event = await self._upstream_event(upstream, self.timeouts.response)
            if isinstance(event, h11.InformationalResponse):
                if event.status_code == 101:
                    raise _UpstreamError("protocol", 502, "upstream switched protocols")
                await self._send(
                    h11.InformationalResponse(
                        status_code=event.status_code,
                        headers=_strip_hop_by_hop(event.headers),
                        reason=event.reason,
                    )
                )
                continue
            if isinstance(event, h11.Response):
                break
            raise _UpstreamError("protocol", 502, "upstream closed without a response")
        chunked = b"chunked" in _header_tokens(event.headers, b"transfer-encoding")
        headers = [
            (k, v)
            for k, v in _strip_hop_by_hop(event.headers)
            if not (chunked and k == b"content-length")
        ]
        headers.append((b"via", VIA))
        await self._send(
            h11.Response(status_code=event.status_code, headers=headers, reason=event.reason)
        )
        while True:
            body_event = await self._upstream_event(upstream, self.timeouts.read)
            if isinstance(body_event, h11.Data):
                await self._write(self.conn.send_with_data_passthrough(body_event))
            elif isinstance(body_event, h11.EndOfMessage):
                await self._send(h11.EndOfMessage())
                return
            else:
                raise _UpstreamError("protocol", 502, "upstream closed mid-response")

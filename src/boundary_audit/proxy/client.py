"""One client connection of the proxy: HTTP/1.1 requests, CONNECT tunnels
(TLS or plain), WebSocket upgrades, and the one place faults become metrics,
logs and answers (:meth:`ClientConnection._fail`)."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
from typing import TYPE_CHECKING, Any, cast

import h11
from h11._state import MIGHT_SWITCH_PROTOCOL  # h11 does not re-export it

from boundary_audit.auditor.event import AuditEvent

from .config import (
    DENIED_BODY_DRAIN_LIMIT,
    MAX_HEADER_BYTES,
)
from .errors import CLIENT_BODY, CLIENT_WRITE, FaultKind, ProxyFault, Side
from .h2tunnel import H2_PREFACE, H2Tunnel
from .http import (
    TLS_HANDSHAKE_RECORD,
    VIA,
    Target,
    TargetError,
    client_response_headers,
    connect_target,
    denied_text,
    has_ambiguous_framing,
    has_no_body,
    is_websocket_upgrade,
    request_target,
    strip_hop_by_hop,
    text_response,
    upgrade_request_headers,
    upgrade_response_headers,
    upstream_request_headers,
    websocket_url,
)
from .relay import relay
from .rules import Decision
from .streams import next_event, peek_first_byte, read_within, write_within
from .upstream import UpstreamConnection, UpstreamSlot

if TYPE_CHECKING:
    from .server import ProxyServer


__all__ = ["ClientConnection"]


class ClientConnection:
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
        #: What the tunnel carries once open: TLS (``https``) or plain HTTP.
        self.tunnel_scheme = "https"
        self.log = proxy._log.bind(peer=str(peer))
        self.upstream = UpstreamSlot(proxy.upstream_ssl, proxy.timeouts, self._stale_upstream)
        #: The handover mark of the request being answered: its response head
        #: waits for the event to reach the agent (ProxyServer.handed_over).
        self.handover: object | None = None

    @staticmethod
    def _new_h11() -> h11.Connection:
        return h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEADER_BYTES)

    async def run(self) -> None:
        try:
            await self._serve()
        except ProxyFault as fault:
            await self._fail(fault)
        finally:
            self.upstream.drop()

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

    # -- faults: the one place they become metrics, logs and answers ----------------

    async def _fail(self, fault: ProxyFault, url: str | None = None) -> None:
        """Count ``fault`` on its side, log it, and answer its status if the
        response has not begun. An upstream fault leaves the client connection
        usable when the answer could be given (and the request body drained);
        otherwise the connection is cut, which counts as ``connection_cut``.
        A client fault always ends the connection."""
        if fault.side is Side.UPSTREAM:
            self.metrics.upstream_errors.labels(kind=fault.kind).inc()
            self.log.warning("upstream failed", kind=fault.kind, url=url, error=str(fault))
            self.upstream.drop()
            if self._can_answer():
                assert fault.status is not None
                await self._refuse(fault.status, f"boundary-audit: {fault}\n")
                return
            fault = ProxyFault.client(
                FaultKind.CONNECTION_CUT, None, "upstream failed mid-response"
            )
        self.metrics.bad_clients.labels(kind=fault.kind).inc()
        if fault.kind is FaultKind.CONNECTION_CUT:
            self.log.info("client connection cut", reason=str(fault))
        else:
            self.log.warning("bad client", kind=fault.kind, status=fault.status, detail=str(fault))
        if fault.status is not None:
            with contextlib.suppress(ProxyFault):
                await self._send_simple(fault.status, f"{fault}\n", close=True)

    def _stale_upstream(self, fault: ProxyFault) -> None:
        """A kept-alive upstream connection had been closed; the request is retried."""
        self.metrics.upstream_errors.labels(kind=FaultKind.STALE_CONNECTION).inc()
        self.log.info("kept-alive upstream connection was closed; reconnecting", error=str(fault))

    def _can_answer(self) -> bool:
        return self.conn.our_state in (h11.IDLE, h11.SEND_RESPONSE)

    # -- client I/O ----------------------------------------------------------------

    async def _write(self, data: bytes | list[bytes] | None) -> None:
        with CLIENT_WRITE:
            await write_within(self.writer, data, self.timeouts.read)

    async def _send(self, event: h11.Event) -> None:
        if self.handover is not None and isinstance(
            event, h11.Response | h11.InformationalResponse
        ):
            # The first head of the answer (1xx, 101, 403, 502 or the
            # upstream's) goes out only once the request's event is safe.
            mark, self.handover = self.handover, None
            await self.proxy.handed_over(mark)
        await self._write(self.conn.send(event))

    async def _receive(self, seconds: float) -> None:
        self.conn.receive_data(await read_within(self.reader, seconds))

    async def _send_simple(self, status: int, text: str, *, close: bool = False) -> None:
        """A small text/plain response, if the protocol state still allows one."""
        if not self._can_answer():
            return
        response, body = text_response(status, text, close=close)
        try:
            await self._send(response)
            await self._send(h11.Data(data=body))
            await self._send(h11.EndOfMessage())
        except h11.LocalProtocolError as exc:
            self.log.warning("could not send error response", status=status, error=str(exc))

    async def _read_request_head(self) -> h11.Request | None:
        """The next request head, or None when the connection should end."""
        started: float | None = time.monotonic() if self.conn.trailing_data[0] else None
        while True:
            try:
                event = self.conn.next_event()
            except h11.RemoteProtocolError as exc:
                status = exc.error_status_hint
                kind = FaultKind.OVERSIZED_HEAD if status == 431 else FaultKind.MALFORMED
                raise ProxyFault.client(kind, status, f"bad request: {exc}") from exc
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
                    raise ProxyFault.client(
                        FaultKind.SLOW_HEAD, 408, "request head took too long"
                    ) from None
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
        """Answer 200, then serve what the tunnel carries: TLS (terminated with a
        leaf for the CONNECT host) or plain HTTP, told apart by the first byte.
        False when the client left before sending anything."""
        if self.tunnel is not None:
            raise ProxyFault.client(
                FaultKind.MALFORMED, 400, "CONNECT inside a tunnel is not supported"
            )
        try:
            host, port = connect_target(request.target)
        except TargetError as exc:
            raise ProxyFault.client(FaultKind.MALFORMED, 400, str(exc)) from None
        # From the 200 to start_tls nothing may read from the transport: bytes
        # of the client's TLS hello would land in the plain stream buffer and
        # be lost to the handshake. The first byte is peeked in the kernel.
        self.writer.write(self.conn.send(h11.Response(status_code=200, headers=[(b"via", VIA)])))
        leftover, _ = self.conn.trailing_data
        if leftover:
            # The client spoke before our 200; those bytes are already out
            # of the transport, so a handshake cannot be done correctly.
            raise ProxyFault.client(
                FaultKind.EARLY_TUNNEL_DATA, None, f"{host}: client sent data before the 200"
            )
        try:
            first = await peek_first_byte(self.writer, self.timeouts.header)
        except TimeoutError:
            raise ProxyFault.client(
                FaultKind.SLOW_HEAD, None, f"{host}: nothing sent through the tunnel"
            ) from None
        except OSError as exc:
            self.log.debug("client connection lost in a new tunnel", host=host, error=str(exc))
            return False
        if not first:
            self.log.debug("client closed a tunnel without using it", host=host)
            return False
        if first[0] == TLS_HANDSHAKE_RECORD:
            await self._start_tls(host)  # start_tls resumes reading itself
            self.metrics.tunnels.inc()
            self.tunnel_scheme = "https"
        else:
            cast(asyncio.Transport, self.writer.transport).resume_reading()
            self.metrics.plain_tunnels.inc()
            self.tunnel_scheme = "http"
        self.tunnel = (host, port)
        self.conn = self._new_h11()
        ssl_object = self.writer.get_extra_info("ssl_object")
        if ssl_object is not None and ssl_object.selected_alpn_protocol() == "h2":
            await self._serve_h2(b"")
            return False
        if self.tunnel_scheme == "http":
            initial = await self._read_h2c_preface()
            if initial is not None:
                await self._serve_h2(initial)
                return False
        return True

    async def _read_h2c_preface(self) -> bytes | None:
        """In a plain tunnel: the bytes read so far if they begin HTTP/2's
        preface (h2c with prior knowledge), else None with them fed to h11."""
        seen = b""
        while len(seen) < len(H2_PREFACE) and H2_PREFACE.startswith(seen):
            try:
                chunk = await read_within(self.reader, self.timeouts.header)
            except (TimeoutError, OSError):
                chunk = b""
            if not chunk:
                break
            seen += chunk
        if seen.startswith(H2_PREFACE):
            return seen
        self.conn.receive_data(seen)
        if not seen:
            self.conn.receive_data(b"")
        return None

    async def _serve_h2(self, initial: bytes) -> None:
        assert self.tunnel is not None
        await H2Tunnel(
            self.proxy,
            self.reader,
            self.writer,
            tunnel=self.tunnel,
            scheme=self.tunnel_scheme,
            log=self.log,
            initial=initial,
        ).run()

    async def _start_tls(self, host: str) -> None:
        try:
            context = self.proxy.ca.leaf_context(host)
        except ValueError as exc:
            self.log.warning("leaf certificate failed", host=host, error=str(exc))
            raise ProxyFault.client(
                FaultKind.TLS_HANDSHAKE, None, f"cannot issue a certificate for {host}"
            ) from exc
        try:
            await self.writer.start_tls(context, ssl_handshake_timeout=self.timeouts.tls_handshake)
        except (ssl.SSLError, OSError, TimeoutError, ConnectionError) as exc:
            raise ProxyFault.client(
                FaultKind.TLS_HANDSHAKE, None, f"TLS handshake with client for {host}: {exc!r}"
            ) from exc

    # -- one request -----------------------------------------------------------------

    async def _handle(self, request: h11.Request) -> None:
        method = request.method.decode("ascii")
        if has_ambiguous_framing(request.headers):
            raise ProxyFault.client(
                FaultKind.AMBIGUOUS_FRAMING, 400, "both Content-Length and Transfer-Encoding sent"
            )
        try:
            target = request_target(request, self.tunnel, self.tunnel_scheme)
        except TargetError as exc:
            raise ProxyFault.client(FaultKind.MALFORMED, 400, str(exc)) from None
        upgrade = is_websocket_upgrade(request.method, request.headers)
        url = websocket_url(target) if upgrade else target.url
        decision = Decision(False) if target.misdirected else self.proxy.rules.evaluate(method, url)
        sequence = self.proxy.auditor.audit(
            AuditEvent(method, url, target.host, decision.allowed, decision.rule)
        )
        self.handover = self.proxy.handover_mark()
        self.metrics.requests.labels(decision="allow" if decision.allowed else "deny").inc()
        if not decision.allowed:
            # The auditor records every decision; this line is for debugging only.
            self.log.debug("request denied", method=method, url=url)
            if target.misdirected:
                await self._refuse(421, f"boundary-audit: {target.misdirected}\n")
            else:
                await self._refuse(403, denied_text(method, url))
            return
        self.log.debug("request allowed", method=method, url=url, rule=decision.rule)
        try:
            if upgrade:
                await self._forward_upgrade(request, target, url, sequence)
            else:
                await self._forward(request, target, sequence)
        except ProxyFault as fault:
            if fault.side is Side.CLIENT:
                raise
            await self._fail(fault, url)

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
        # An upgrade request waits for our answer; a refusal makes it DONE.
        return self.conn.their_state in (h11.DONE, MIGHT_SWITCH_PROTOCOL)

    # -- forwarding ------------------------------------------------------------------

    async def _forward(self, request: h11.Request, target: Target, sequence: int) -> None:
        session = self.proxy.session_headers
        session_id = session.id_for(request.method.decode("ascii"), target.url)
        headers = upstream_request_headers(
            request.headers,
            target,
            None if session_id is None else (session_id, sequence),
            session.names,
        )
        upstream_request = h11.Request(method=request.method, target=target.path, headers=headers)
        if has_no_body(request.headers):
            end = self.conn.next_event()
            if not isinstance(end, h11.EndOfMessage):
                raise ProxyFault.client(
                    FaultKind.CONNECTION_CUT,
                    None,
                    f"expected the end of a body-less request, got {end!r}",
                )
            upstream, first = await self.upstream.send_bodyless(upstream_request, target)
            await self._pump_response(upstream, first)
        else:
            upstream = await self.upstream.connect(target)
            await upstream.write(upstream.conn.send(upstream_request), self.timeouts.read)
            await self._relay_with_body(upstream)
        self.upstream.finish_cycle()

    async def _forward_upgrade(
        self, request: h11.Request, target: Target, url: str, sequence: int
    ) -> None:
        """A WebSocket upgrade: forward the handshake on a fresh upstream
        connection; on its 101, relay bytes both ways until either side closes
        (the client connection ends with it). Any other answer goes back as
        an ordinary response."""
        end = self.conn.next_event()
        if not isinstance(end, h11.EndOfMessage):
            raise ProxyFault.client(
                FaultKind.MALFORMED, 400, "a WebSocket upgrade request cannot have a body"
            )
        session = self.proxy.session_headers
        session_id = session.id_for("GET", url)
        headers = upgrade_request_headers(
            request.headers,
            target,
            None if session_id is None else (session_id, sequence),
            session.names,
        )
        self.upstream.drop()  # a switched connection is never reused
        upstream = await self.upstream.connect(target)
        head = upstream.conn.send(h11.Request(method=b"GET", target=target.path, headers=headers))
        await upstream.write(
            [head or b"", upstream.conn.send(h11.EndOfMessage()) or b""], self.timeouts.read
        )
        first = await upstream.next_event(self.timeouts.response)
        if not (isinstance(first, h11.InformationalResponse) and first.status_code == 101):
            await self._pump_response(upstream, first)
            self.upstream.drop()
            return
        await self._send(
            h11.InformationalResponse(
                status_code=101,
                headers=upgrade_response_headers(first.headers),
                reason=first.reason,
            )
        )
        self.upstream.current = None  # the relay owns it now
        try:
            await self._relay_switched(upstream, url)
        finally:
            upstream.close()

    async def _relay_switched(self, upstream: UpstreamConnection, url: str) -> None:
        client_rest, upstream_rest = self.conn.trailing_data[0], upstream.conn.trailing_data[0]
        if upstream_rest:
            await self._write(upstream_rest)
        if client_rest:
            await upstream.write(client_rest, self.timeouts.read)
        result = await relay(
            (self.reader, self.writer),
            (upstream.reader, upstream.writer),
            idle=self.timeouts.websocket_idle,
            max_bytes=self.proxy.websocket_max_bytes,
        )
        self.metrics.websockets.labels(outcome=result.end).inc()
        self.metrics.websocket_bytes.labels(direction="to_upstream").inc(
            result.to_upstream + len(client_rest)
        )
        self.metrics.websocket_bytes.labels(direction="to_client").inc(
            result.to_client + len(upstream_rest)
        )
        log = (
            self.log.info
            if result.error is None and result.end.endswith("closed")
            else self.log.warning
        )
        log(
            "websocket closed",
            url=url,
            outcome=result.end,
            to_upstream=result.to_upstream,
            to_client=result.to_client,
            error=result.error,
        )

    async def _relay_with_body(self, upstream: UpstreamConnection) -> None:
        """Stream the request body up while the response streams down.

        The response may end first (an early 4xx, say): the rest of the body
        has nowhere to go, so neither connection survives. A fault of the
        client's body (malformed, stalled) is the client's: the response side
        is stopped and the client answered 400/408 (or cut, if the response
        has begun), and the upstream's reaction to the cut is not counted.
        """
        body = asyncio.create_task(self._relay_request_body(upstream))
        response = asyncio.create_task(self._pump_response(upstream))
        try:
            await asyncio.wait((body, response), return_when=asyncio.FIRST_COMPLETED)
            failed = body.exception() if body.done() and not body.cancelled() else None
            if failed is not None:
                self.upstream.drop()
                raise failed
            await response
        finally:
            if not body.done():
                body.cancel()
                self.upstream.drop()
            response.cancel()
            await asyncio.gather(body, response, return_exceptions=True)

    async def _relay_request_body(self, upstream: UpstreamConnection) -> None:
        """Copy the client's request body upstream; client faults propagate.

        An upstream that stops taking the body is closed, which ends the
        response side's wait too: whatever the server answered before (often
        the reason it stopped reading) still reaches the client, and a
        response cut short is counted there.
        """
        while True:
            event = await self._next_body_event()
            data: bytes | list[bytes] | None
            if isinstance(event, h11.Data):
                data = upstream.conn.send_with_data_passthrough(event)
            else:
                data = upstream.conn.send(h11.EndOfMessage())
            try:
                await upstream.write(data, self.timeouts.read)
            except ProxyFault as fault:
                self.log.debug("upstream stopped taking the request body", error=str(fault))
                upstream.close()
                return
            if isinstance(event, h11.EndOfMessage):
                return

    async def _next_body_event(self) -> h11.Data | h11.EndOfMessage:
        """The next piece of the client's request body, read within the body timeout."""
        with CLIENT_BODY:
            event = await next_event(self.conn, self.reader, self.timeouts.read)
        if isinstance(event, h11.Data | h11.EndOfMessage):
            return event
        raise ProxyFault.client(
            FaultKind.CONNECTION_CUT, None, f"client closed mid-body ({event!r})"
        )

    async def _pump_response(
        self, upstream: UpstreamConnection, first: h11.Event | None = None
    ) -> None:
        while True:
            if first is not None:
                event, first = first, None
            else:
                event = await upstream.next_event(self.timeouts.response)
            if isinstance(event, h11.InformationalResponse):
                if event.status_code == 101:
                    raise ProxyFault.upstream(
                        FaultKind.PROTOCOL, 502, "upstream switched protocols"
                    )
                await self._send(
                    h11.InformationalResponse(
                        status_code=event.status_code,
                        headers=strip_hop_by_hop(event.headers),
                        reason=event.reason,
                    )
                )
                continue
            if isinstance(event, h11.Response):
                break
            raise ProxyFault.upstream(FaultKind.PROTOCOL, 502, "upstream closed without a response")
        await self._send(
            h11.Response(
                status_code=event.status_code,
                headers=client_response_headers(event.headers),
                reason=event.reason,
            )
        )
        while True:
            body_event = await upstream.next_event(self.timeouts.read)
            if isinstance(body_event, h11.Data):
                await self._write(self.conn.send_with_data_passthrough(body_event))
            elif isinstance(body_event, h11.EndOfMessage):
                await self._send(h11.EndOfMessage())
                return
            else:
                raise ProxyFault.upstream(FaultKind.PROTOCOL, 502, "upstream closed mid-response")

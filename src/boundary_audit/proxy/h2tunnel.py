"""HTTP/2 inside a tunnel: every stream decided and audited as one request.

The client speaks HTTP/2 to us (ALPN ``h2`` in a TLS tunnel, or h2c with
prior knowledge in a plain one); each stream it opens is evaluated against
the rules and audited before anything goes upstream. A denied stream gets a
403 on that stream only. Allowed streams go upstream over one HTTP/2
connection when the upstream agrees to ``h2`` in ALPN (or h2c), else each on
its own HTTP/1.1 connection (:mod:`.h2upstream`): the two sides fall back
independently.

Flow control is end to end: data a side sends is acknowledged to it (so its
window reopens) only once the other side took it, so neither a fast client
nor a fast server can make the proxy buffer more than one window per stream.
Trailers pass both ways (gRPC's status lives there); server push is off.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h2.settings
from h2.errors import ErrorCodes

from boundary_audit.auditor.event import AuditEvent

from .config import READ_CHUNK
from .errors import ProxyFault
from .h2upstream import forward_h1
from .http import VIA, Target, denied_text, tunnel_target
from .rules import Decision
from .upstream import open_upstream

if TYPE_CHECKING:
    from .server import ProxyServer

#: What an h2c client sends first (RFC 9113 3.4).
H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
#: Streams a client may have open at once: what gRPC and browsers use, and a
#: bound on per-connection memory (each holds at most one window).
MAX_CONCURRENT_STREAMS = 100
#: Our receive window per stream: 1 MiB keeps a bulk stream moving on
#: loopback-to-LAN latencies while bounding what one stream can make us hold.
STREAM_WINDOW = 1024 * 1024
#: Our receive window for the whole connection: a few streams at full speed.
CONNECTION_WINDOW = 8 * STREAM_WINDOW
#: Headers that belong to one HTTP/1.1 hop and are forbidden in HTTP/2
#: (RFC 9113 8.2.2); ``te`` is allowed only as ``trailers``.
CONNECTION_SPECIFIC = frozenset(
    {
        b"connection",
        b"proxy-connection",
        b"keep-alive",
        b"transfer-encoding",
        b"upgrade",
        b"host",
        b"proxy-authorization",
    }
)

Headers = list[tuple[bytes, bytes]]


def _config(client_side: bool) -> h2.config.H2Configuration:
    return h2.config.H2Configuration(
        client_side=client_side, header_encoding=None, validate_inbound_headers=True
    )


def _settings() -> dict[int, int]:
    return {
        h2.settings.SettingCodes.ENABLE_PUSH: 0,
        h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: MAX_CONCURRENT_STREAMS,
        h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: STREAM_WINDOW,
    }


def end_to_end(headers: Headers) -> Headers:
    """Regular headers without the connection-specific ones (``te: trailers`` kept)."""
    return [
        (k, v)
        for k, v in headers
        if not k.startswith(b":")
        and k not in CONNECTION_SPECIFIC
        and (k != b"te" or v.strip().lower() == b"trailers")
    ]


def _quietly(reset: Callable[[int, int], None], stream_id: int, code: int) -> None:
    """Reset a stream that may already be closed (then there is nothing to reset)."""
    with contextlib.suppress(h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError):
        reset(stream_id, code)


def pseudo(headers: Headers) -> dict[bytes, bytes]:
    return {k: v for k, v in headers if k.startswith(b":")}


class Peer:
    """One side's HTTP/2 connection state and its socket."""

    def __init__(
        self,
        conn: h2.connection.H2Connection,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        before_write: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self.conn = conn
        self.reader = reader
        self.writer = writer
        #: Awaited before each write (the client side: response heads wait
        #: for their events' handover); the bytes are taken after it.
        self.before_write = before_write

    async def flush(self, seconds: float) -> None:
        if self.before_write is not None:
            await self.before_write()
        data = self.conn.data_to_send()
        if data:
            self.writer.write(data)
            async with asyncio.timeout(seconds):
                await self.writer.drain()


class Outbound:
    """Data waiting to go out on one stream of one HTTP/2 connection.

    Each chunk carries the flow-controlled length to acknowledge to where it
    came from (``ack``) once it has been sent whole.
    """

    def __init__(self, peer: Peer, stream_id: int, ack: Callable[[int], None]) -> None:
        self.peer = peer
        self.stream_id = stream_id
        self.ack = ack
        self.chunks: deque[tuple[bytes, int]] = deque()
        self.ended = False
        self.trailers: Headers | None = None
        self.done = False
        self.drained = asyncio.Event()
        self.drained.set()

    def push(self, data: bytes, flow: int) -> None:
        if self.done:
            self.ack(flow)  # nowhere to go: return the window to the sender
            return
        self.chunks.append((data, flow))
        self.drained.clear()
        self.flush()

    def finish(self, trailers: Headers | None = None) -> None:
        self.ended = True
        self.trailers = trailers
        self.flush()

    def abandon(self) -> None:
        """The stream is gone on our side: acknowledge what was waiting."""
        self.done = True
        while self.chunks:
            self.ack(self.chunks.popleft()[1])
        self.drained.set()

    def flush(self) -> None:
        """Send what the peer's windows allow; finish the stream when all went."""
        if self.done:
            return
        conn = self.peer.conn
        try:
            while self.chunks:
                data, flow = self.chunks[0]
                room = min(
                    conn.local_flow_control_window(self.stream_id), conn.max_outbound_frame_size
                )
                if room <= 0:
                    return
                conn.send_data(self.stream_id, data[:room])
                if room >= len(data):
                    self.chunks.popleft()
                    self.ack(flow)
                else:
                    self.chunks[0] = (data[room:], flow)
            self.drained.set()
            if self.ended:
                self.done = True
                if self.trailers:
                    conn.send_headers(self.stream_id, self.trailers, end_stream=True)
                else:
                    conn.end_stream(self.stream_id)
        except (h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError):
            self.abandon()


def acker(peer: Peer, stream_id: int) -> Callable[[int], None]:
    """Acknowledge received data on ``peer``'s stream (reopening its window)."""

    def ack(flow: int) -> None:
        if flow <= 0:
            return
        try:
            peer.conn.acknowledge_received_data(flow, stream_id)
        except (h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError, KeyError):
            # The stream is gone; the connection window still needs it back.
            peer.conn.increment_flow_control_window(flow)

    return ack


class Stream:
    """One client stream and where it goes upstream."""

    def __init__(self, client_id: int, url: str, target: Target) -> None:
        self.client_id = client_id
        self.url = url
        self.target = target
        self.upstream_id: int | None = None
        self.to_upstream: Outbound | None = None
        self.to_client: Outbound | None = None
        #: For an HTTP/1.1 upstream: the request body as (data, flow) chunks, None at the end.
        self.body: asyncio.Queue[tuple[bytes, int] | None] | None = None
        self.task: asyncio.Task[None] | None = None


class H2Tunnel:
    """The client's HTTP/2 connection inside one tunnel to ``host``:``port``."""

    def __init__(
        self,
        proxy: ProxyServer,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        *,
        tunnel: tuple[str, int],
        scheme: str,
        log: Any,
        initial: bytes = b"",
    ) -> None:
        self.proxy = proxy
        self.timeouts = proxy.timeouts
        self.metrics = proxy.metrics
        self.tunnel = tunnel
        self.scheme = scheme
        self.log = log.bind(protocol="h2")
        self.initial = initial
        conn = h2.connection.H2Connection(_config(client_side=False))
        self.client = Peer(conn, reader, writer, self._handed_over)
        #: Handover marks of audited streams whose response head is not yet
        #: written into the client connection, by client stream id.
        self.marks: dict[int, object] = {}
        #: Marks of response heads now in the client connection's buffer:
        #: the next write to the client waits for them.
        self.head_marks: deque[object] = deque()
        self.streams: dict[int, Stream] = {}
        self.by_upstream: dict[int, Stream] = {}
        self.upstream: Peer | None = None
        self.upstream_is_h1 = False
        self.upstream_task: asyncio.Task[None] | None = None
        self.tasks: set[asyncio.Task[None]] = set()

    # -- the client side -----------------------------------------------------------

    async def run(self) -> None:
        conn = self.client.conn
        conn.initiate_connection()
        conn.update_settings(_settings())
        conn.increment_flow_control_window(CONNECTION_WINDOW - 65535)
        await self.client.flush(self.timeouts.read)
        try:
            data = self.initial
            while True:
                if data:
                    try:
                        events = conn.receive_data(data)
                    except h2.exceptions.ProtocolError as exc:
                        self.log.warning("bad HTTP/2 from client", error=str(exc))
                        self.metrics.bad_clients.labels(kind="malformed").inc()
                        await self.client.flush(self.timeouts.read)
                        return
                    for event in events:
                        await self._on_client_event(event)
                    await self._flush_all()
                    if conn.state_machine.state.name == "CLOSED":
                        return
                timeout = None if self.streams else self.timeouts.idle
                try:
                    async with asyncio.timeout(timeout):
                        data = await self.client.reader.read(READ_CHUNK)
                except (TimeoutError, OSError):
                    return
                if not data:
                    return
        finally:
            await self._close()

    def head_sent(self, sid: int) -> None:
        """Stream ``sid``'s response head is in the client buffer: the next
        write to the client waits for that request's event to be handed over."""
        mark = self.marks.pop(sid, None)
        if mark is not None:
            self.head_marks.append(mark)

    async def _handed_over(self) -> None:
        """Before bytes go to the client: the events of the response heads
        among them are handed over (ProxyServer.handed_over). Heads put in
        the buffer during the wait are waited for too, before anything is
        taken from it. Data of streams already answered waits for nothing.
        A mark leaves the list only once handed over, so a concurrent flush
        (another stream's task) waits for it too rather than writing it."""
        marks = self.head_marks
        while marks:
            mark = marks[0]
            await self.proxy.handed_over(mark)
            if marks and marks[0] is mark:
                marks.popleft()

    async def _flush_all(self) -> None:
        try:
            await self.client.flush(self.timeouts.read)
        except (OSError, TimeoutError) as exc:
            self.log.info("client connection cut", reason=repr(exc))
            raise asyncio.CancelledError from exc
        if self.upstream is not None:
            try:
                await self.upstream.flush(self.timeouts.read)
            except (OSError, TimeoutError) as exc:
                self._upstream_lost(f"writing upstream failed: {exc!r}")

    async def _on_client_event(self, event: h2.events.Event) -> None:
        if isinstance(event, h2.events.RequestReceived):
            await self._on_request(event)
        elif isinstance(event, h2.events.DataReceived):
            self._on_client_data(event)
        elif isinstance(event, h2.events.TrailersReceived):
            self._on_client_end(event.stream_id, list(event.headers or []))
        elif isinstance(event, h2.events.StreamEnded):
            self._on_client_end(event.stream_id, None)
        elif isinstance(event, h2.events.StreamReset):
            self._on_client_reset(event)
        elif isinstance(event, h2.events.WindowUpdated | h2.events.RemoteSettingsChanged):
            for stream in self.streams.values():
                if stream.to_client is not None:
                    stream.to_client.flush()
        elif isinstance(event, h2.events.ConnectionTerminated):
            self.log.debug("client ended the HTTP/2 connection", error_code=event.error_code)

    async def _on_request(self, event: h2.events.RequestReceived) -> None:
        headers = list(event.headers or [])
        fields = pseudo(headers)
        sid = event.stream_id
        ended = event.stream_ended is not None
        method = fields.get(b":method", b"").decode("latin-1")
        authority = fields.get(b":authority") or next((v for k, v in headers if k == b"host"), b"")
        path = fields.get(b":path", b"/").decode("latin-1")
        try:
            target = tunnel_target(path, authority, *self.tunnel, self.scheme)
        except ValueError as exc:
            self.answer(sid, 400, f"boundary-audit: {exc}\n", ended)
            self.metrics.bad_clients.labels(kind="malformed").inc()
            return
        decision = (
            Decision(False) if target.misdirected else self.proxy.rules.evaluate(method, target.url)
        )
        sequence = self.proxy.auditor.audit(
            AuditEvent(method, target.url, target.host, decision.allowed, decision.rule)
        )
        mark = self.proxy.handover_mark()
        if mark is not None:
            self.marks[sid] = mark
        self.metrics.requests.labels(decision="allow" if decision.allowed else "deny").inc()
        if not decision.allowed:
            if target.misdirected:
                self.answer(sid, 421, f"boundary-audit: {target.misdirected}\n", ended)
            else:
                self.answer(sid, 403, denied_text(method, target.url), ended)
            return
        await self._open_stream(Stream(sid, target.url, target), headers, sequence, ended)

    async def _open_stream(
        self, stream: Stream, headers: Headers, sequence: int, ended: bool
    ) -> None:
        """Send an allowed stream upstream (connecting first if need be)."""
        sid, target = stream.client_id, stream.target
        fields = pseudo(headers)
        method = fields.get(b":method", b"").decode("latin-1")
        authority = fields.get(b":authority") or next((v for k, v in headers if k == b"host"), b"")
        path = fields.get(b":path", b"/").decode("latin-1")
        self.streams[sid] = stream
        session = self.proxy.session_headers
        session_id = session.id_for(method, target.url)
        extra: Headers = [(b"via", VIA)]
        if session_id is not None:
            id_name, seq_name = (n.lower().encode() for n in session.names)
            extra += [(id_name, session_id.encode()), (seq_name, str(sequence).encode())]
            drop = {id_name, seq_name}
        else:
            drop = set()
        regular = [(k, v) for k, v in end_to_end(headers) if k not in drop] + extra
        fault = await self._ensure_upstream(target)
        if fault is not None:
            self.streams.pop(sid, None)
            self.answer(sid, fault.status or 502, f"boundary-audit: {fault}\n", ended)
            return
        stream.to_client = Outbound(self.client, sid, lambda _flow: None)
        if self.upstream_is_h1:
            stream.body = asyncio.Queue()
            if ended:
                stream.body.put_nowait(None)
            stream.task = self._spawn(forward_h1(self, stream, method, authority, regular))
            return
        assert self.upstream is not None
        up = self.upstream
        upstream_id = up.conn.get_next_available_stream_id()
        request = [
            (b":method", method.encode("latin-1")),
            (b":scheme", target.scheme.encode()),
            (b":authority", authority),
            (b":path", path.encode("latin-1")),
            *regular,
        ]
        up.conn.send_headers(upstream_id, request, end_stream=ended)
        stream.upstream_id = upstream_id
        self.by_upstream[upstream_id] = stream
        stream.to_upstream = Outbound(up, upstream_id, acker(self.client, sid))
        stream.to_client = Outbound(self.client, sid, acker(up, upstream_id))

    def answer(self, sid: int, status: int, text: str, request_ended: bool) -> None:
        """A small text/plain answer on one stream; the connection carries on."""
        body = text.encode()
        conn = self.client.conn
        self.head_sent(sid)
        conn.send_headers(
            sid,
            [
                (b":status", str(status).encode()),
                (b"content-type", b"text/plain; charset=utf-8"),
                (b"content-length", str(len(body)).encode()),
                (b"via", VIA),
            ],
        )
        conn.send_data(sid, body, end_stream=True)
        if not request_ended:
            # The rest of the request body has nowhere to go (RFC 9113 8.1);
            # it may have ended meanwhile, in the same read.
            _quietly(conn.reset_stream, sid, ErrorCodes.NO_ERROR)

    def _on_client_data(self, event: h2.events.DataReceived) -> None:
        stream = self.streams.get(event.stream_id)
        data, flow = event.data or b"", event.flow_controlled_length or 0
        if stream is None:
            acker(self.client, event.stream_id)(flow)
        elif stream.body is not None:
            stream.body.put_nowait((data, flow))
        elif stream.to_upstream is not None:
            stream.to_upstream.push(data, flow)

    def _on_client_end(self, sid: int, trailers: Headers | None) -> None:
        stream = self.streams.get(sid)
        if stream is None:
            return
        if stream.body is not None:
            stream.body.put_nowait(None)  # HTTP/1.1 upstreams get no request trailers
        elif stream.to_upstream is not None:
            stream.to_upstream.finish(end_to_end(trailers) if trailers else None)

    def _on_client_reset(self, event: h2.events.StreamReset) -> None:
        stream = self.streams.pop(event.stream_id, None)
        if stream is None:
            return
        self._drop_stream(stream, ErrorCodes.CANCEL)

    def _drop_stream(self, stream: Stream, code: int) -> None:
        self.streams.pop(stream.client_id, None)
        self.marks.pop(stream.client_id, None)
        for outbound in (stream.to_client, stream.to_upstream):
            if outbound is not None:
                outbound.abandon()
        if stream.task is not None:
            stream.task.cancel()
        if stream.upstream_id is not None:
            self.by_upstream.pop(stream.upstream_id, None)
            if self.upstream is not None:
                _quietly(self.upstream.conn.reset_stream, stream.upstream_id, code)

    def finished(self, stream: Stream) -> None:
        """Both directions of ``stream`` are done: forget it."""
        self.streams.pop(stream.client_id, None)
        self.marks.pop(stream.client_id, None)
        if stream.upstream_id is not None:
            self.by_upstream.pop(stream.upstream_id, None)

    # -- the upstream side ---------------------------------------------------------

    async def _ensure_upstream(self, target: Target) -> ProxyFault | None:
        """Connect upstream for the first stream; the fault if that failed
        (counted and logged here, answered on the stream by the caller)."""
        if self.upstream is not None or self.upstream_is_h1:
            return None
        tls = self.proxy.upstream_ssl_h2 if target.scheme == "https" else None
        try:
            connection = await open_upstream(target, tls, self.timeouts.connect)
        except ProxyFault as fault:
            self.metrics.upstream_errors.labels(kind=fault.kind).inc()
            self.log.warning("upstream failed", kind=fault.kind, url=target.url, error=str(fault))
            return fault
        ssl_object = connection.writer.get_extra_info("ssl_object")
        protocol = ssl_object.selected_alpn_protocol() if ssl_object is not None else "h2c"
        # A plain tunnel carried h2c with prior knowledge: the client expects
        # the server to speak it too (gRPC's insecure channels), so do we.
        if protocol not in ("h2", "h2c"):
            # The upstream speaks HTTP/1.1 only: each stream gets its own connection.
            connection.close()
            self.upstream_is_h1 = True
            self.log.debug("upstream has no HTTP/2; streams go over HTTP/1.1", url=target.url)
            return None
        conn = h2.connection.H2Connection(_config(client_side=True))
        conn.initiate_connection()
        conn.update_settings(_settings())
        conn.increment_flow_control_window(CONNECTION_WINDOW - 65535)
        self.upstream = Peer(conn, connection.reader, connection.writer)
        self.upstream_task = self._spawn(self._read_upstream(self.upstream))
        return None

    def _spawn(self, coro: Any) -> asyncio.Task[None]:
        task: asyncio.Task[None] = asyncio.ensure_future(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return task

    async def _read_upstream(self, peer: Peer) -> None:
        try:
            while True:
                try:
                    data = await peer.reader.read(READ_CHUNK)
                except OSError as exc:
                    self._upstream_lost(f"reading upstream failed: {exc!r}")
                    return
                if not data:
                    self._upstream_lost("upstream closed the connection")
                    return
                try:
                    events = peer.conn.receive_data(data)
                except h2.exceptions.ProtocolError as exc:
                    self._upstream_lost(f"upstream sent bad HTTP/2: {exc}")
                    return
                for event in events:
                    self._on_upstream_event(event)
                await self._flush_all()
        except asyncio.CancelledError:
            raise

    def _on_upstream_event(self, event: h2.events.Event) -> None:
        sid = getattr(event, "stream_id", None)
        stream = self.by_upstream.get(sid) if sid else None
        if isinstance(event, h2.events.DataReceived):
            self._on_upstream_data(event, stream)
        elif isinstance(event, h2.events.WindowUpdated | h2.events.RemoteSettingsChanged):
            for each in self.by_upstream.values():
                if each.to_upstream is not None:
                    each.to_upstream.flush()
        elif isinstance(event, h2.events.ConnectionTerminated):
            self._upstream_lost(f"upstream sent GOAWAY ({event.error_code})")
        elif (
            isinstance(event, h2.events.PushedStreamReceived)
            and self.upstream is not None
            and event.pushed_stream_id is not None
        ):
            # Push is off in our settings; a server pushing anyway is refused.
            self.upstream.conn.reset_stream(event.pushed_stream_id, ErrorCodes.REFUSED_STREAM)
        elif stream is not None and stream.to_client is not None:
            self._on_upstream_stream_event(event, stream, stream.to_client)

    def _on_upstream_data(self, event: h2.events.DataReceived, stream: Stream | None) -> None:
        flow = event.flow_controlled_length or 0
        if stream is None or stream.to_client is None:
            if self.upstream is not None and event.stream_id:
                acker(self.upstream, event.stream_id)(flow)
        else:
            stream.to_client.push(event.data or b"", flow)

    def _on_upstream_stream_event(
        self, event: h2.events.Event, stream: Stream, to_client: Outbound
    ) -> None:
        if isinstance(event, h2.events.ResponseReceived):
            headers = list(event.headers or [])
            status = pseudo(headers).get(b":status", b"502")
            self.head_sent(stream.client_id)
            self.client.conn.send_headers(
                stream.client_id,
                [(b":status", status), *end_to_end(headers), (b"via", VIA)],
                end_stream=event.stream_ended is not None,
            )
            if event.stream_ended is not None:
                to_client.done = True
        elif isinstance(event, h2.events.TrailersReceived):
            to_client.finish(end_to_end(list(event.headers or [])))
        elif isinstance(event, h2.events.StreamEnded):
            if not to_client.ended:
                to_client.finish()
        elif isinstance(event, h2.events.StreamReset):
            self._drop_stream(stream, ErrorCodes.CANCEL)
            _quietly(self.client.conn.reset_stream, stream.client_id, event.error_code or 0)
        self._maybe_finished(stream)

    def _maybe_finished(self, stream: Stream) -> None:
        if stream.to_client is not None and stream.to_client.done:
            self.finished(stream)

    def _upstream_lost(self, why: str) -> None:
        """The upstream HTTP/2 connection is gone: its streams are reset on the
        client; the next stream connects again."""
        peer, self.upstream = self.upstream, None
        if peer is None:
            return
        peer.writer.close()
        lost = list(self.by_upstream.values())
        self.by_upstream.clear()
        if lost:
            self.metrics.upstream_errors.labels(kind="read").inc()
            self.log.warning("upstream HTTP/2 connection lost", reason=why, streams=len(lost))
        for stream in lost:
            self.streams.pop(stream.client_id, None)
            self.marks.pop(stream.client_id, None)
            if stream.to_client is not None and stream.to_client.done:
                continue
            _quietly(self.client.conn.reset_stream, stream.client_id, ErrorCodes.INTERNAL_ERROR)

    async def _close(self) -> None:
        for task in list(self.tasks):
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        if self.upstream is not None:
            self.upstream.writer.close()
            self.upstream = None


__all__ = ["H2_PREFACE", "H2Tunnel"]

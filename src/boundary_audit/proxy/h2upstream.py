"""One HTTP/2 stream sent to an upstream that speaks only HTTP/1.1.

When the upstream does not agree to ``h2`` in ALPN, each client stream gets
its own HTTP/1.1 connection (h11): the request body goes up as the client
sends it (acknowledged to the client only once written), the response comes
back on the stream with back-pressure (the next piece is read only when the
client's window took the last), and trailers of a chunked response become
HTTP/2 trailers.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import h2.exceptions
import h11
from h2.errors import ErrorCodes

from .errors import FaultKind, ProxyFault
from .http import VIA, strip_hop_by_hop
from .upstream import UpstreamConnection, open_upstream

if TYPE_CHECKING:
    from .h2tunnel import H2Tunnel, Headers, Stream


def _h1_headers(authority: bytes, headers: Headers, has_body: bool) -> Headers:
    out = [(b"host", authority), *((k, v) for k, v in headers if k != b"te")]
    if has_body and not any(k == b"content-length" for k, _ in out):
        out.append((b"transfer-encoding", b"chunked"))
    return out


async def _send_body(tunnel: H2Tunnel, stream: Stream, upstream: UpstreamConnection) -> None:
    from .h2tunnel import acker

    assert stream.body is not None
    ack = acker(tunnel.client, stream.client_id)
    while True:
        item = await stream.body.get()
        if item is None:
            await upstream.write(upstream.conn.send(h11.EndOfMessage()), tunnel.timeouts.read)
            return
        data, flow = item
        if data:
            await upstream.write(upstream.conn.send(h11.Data(data=data)), tunnel.timeouts.read)
        ack(flow)
        await tunnel.client.flush(tunnel.timeouts.read)


async def _response_head(tunnel: H2Tunnel, upstream: UpstreamConnection) -> h11.Response:
    while True:
        event = await upstream.next_event(tunnel.timeouts.response)
        if isinstance(event, h11.Response):
            return event
        if not isinstance(event, h11.InformationalResponse):
            raise ProxyFault.upstream(FaultKind.PROTOCOL, 502, "upstream closed without a response")


async def _relay_response(
    tunnel: H2Tunnel, stream: Stream, upstream: UpstreamConnection, head: h11.Response
) -> None:
    """The response head, then its body with back-pressure, then its trailers."""
    assert stream.to_client is not None
    out = [
        (b":status", str(head.status_code).encode()),
        *((k, v) for k, v in strip_hop_by_hop(head.headers) if k != b"content-length"),
        (b"via", VIA),
    ]
    tunnel.head_sent(stream.client_id)
    tunnel.client.conn.send_headers(stream.client_id, out)
    await tunnel.client.flush(tunnel.timeouts.read)
    while True:
        piece = await upstream.next_event(tunnel.timeouts.read)
        if isinstance(piece, h11.Data):
            stream.to_client.push(bytes(piece.data), 0)
            await tunnel.client.flush(tunnel.timeouts.read)
            await stream.to_client.drained.wait()
        elif isinstance(piece, h11.EndOfMessage):
            stream.to_client.finish(list(piece.headers) or None)
            await tunnel.client.flush(tunnel.timeouts.read)
            return
        else:
            raise ProxyFault.upstream(FaultKind.PROTOCOL, 502, "upstream closed mid-response")


async def _refuse(tunnel: H2Tunnel, stream: Stream, fault: ProxyFault, started: bool) -> None:
    tunnel.metrics.upstream_errors.labels(kind=fault.kind).inc()
    tunnel.log.warning("upstream failed", kind=fault.kind, url=stream.url, error=str(fault))
    try:
        if not started and fault.status is not None and stream.to_client is not None:
            stream.to_client.abandon()
            tunnel.answer(stream.client_id, fault.status, f"boundary-audit: {fault}\n", False)
        else:
            tunnel.client.conn.reset_stream(stream.client_id, ErrorCodes.INTERNAL_ERROR)
        await tunnel.client.flush(tunnel.timeouts.read)
    except (h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError, OSError):
        tunnel.log.debug("client stream gone before the upstream failure could be told")


async def forward_h1(
    tunnel: H2Tunnel, stream: Stream, method: str, authority: bytes, headers: Headers
) -> None:
    """Forward ``stream`` over a fresh HTTP/1.1 connection and answer on the stream."""
    assert stream.body is not None
    target = stream.target
    tls = tunnel.proxy.upstream_ssl if target.scheme == "https" else None
    has_body = stream.body.empty() or stream.body._queue[0] is not None  # type: ignore[attr-defined]
    started = False
    upstream: UpstreamConnection | None = None
    body_task: asyncio.Task[None] | None = None
    try:
        upstream = await open_upstream(target, tls, tunnel.timeouts.connect)
        request = h11.Request(
            method=method, target=target.path, headers=_h1_headers(authority, headers, has_body)
        )
        await upstream.write(upstream.conn.send(request), tunnel.timeouts.read)
        body_task = asyncio.ensure_future(_send_body(tunnel, stream, upstream))
        head = await _response_head(tunnel, upstream)
        started = True
        await _relay_response(tunnel, stream, upstream, head)
    except ProxyFault as fault:
        await _refuse(tunnel, stream, fault, started)
    finally:
        if body_task is not None:
            body_task.cancel()
            await asyncio.gather(body_task, return_exceptions=True)
        if upstream is not None:
            upstream.close()
        tunnel.finished(stream)


__all__ = ["forward_h1"]

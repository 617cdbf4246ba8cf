"""What the proxy tests share: real upstream servers, a proxy on its own loop
thread, a recording auditor, and raw-socket clients that parse with h11.

Fixtures live in ``conftest.py``; this module is imported by the test
modules (and by ``tests/cli/test_run.py``, which needs an upstream too).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import socket
import subprocess
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h11
import trustme
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from boundary_audit.auditor.event import AuditEvent
from boundary_audit.proxy import CertificateAuthority, ProxyServer
from tests.support import eventually

#: Seconds the test upstreams keep an idle connection open.
UPSTREAM_KEEP_ALIVE = 1
#: Large-body tests move this much; big enough that buffering it would show in RSS.
LARGE_BODY = 50 * 1024 * 1024
#: Chunk the test upstream streams bodies in.
STREAM_CHUNK = 64 * 1024
#: What ``/stall-mid-response`` declares and sends before it hangs.
STALLED_RESPONSE_LENGTH = 1000
STALLED_RESPONSE_START = b"started..."
#: Bounds a blocking test client's socket operations; far longer than any
#: exchange takes, it only stops a broken test from hanging.
CLIENT_TIMEOUT = 10.0
#: Bounds starting or stopping a server thread (a broken one, not a slow one).
THREAD_TIMEOUT = 10.0


class RecordingAuditor:
    """A real Auditor: numbers events like the socket auditor and keeps them in a list."""

    def __init__(self) -> None:
        self.events: list[AuditEvent] = []
        self.closed = False
        self._lock = threading.Lock()

    def audit(self, event: AuditEvent) -> int:
        with self._lock:
            event.sequence_number = len(self.events)
            event.time_ns = time.time_ns()
            self.events.append(event)
            return event.sequence_number

    def close(self, timeout: float | None = None) -> None:
        self.closed = True


@dataclass
class Upstream:
    """A uvicorn server on 127.0.0.1 in a thread; ``hits`` lists what reached it."""

    scheme: str
    port: int
    hits: list[dict[str, Any]] = field(default_factory=list)
    #: Client ports of the connections the server has open (set once it runs).
    open_connections: Callable[[], set[int]] = field(default=set, repr=False)

    def url(self, path: str = "/", host: str = "127.0.0.1") -> str:
        return f"{self.scheme}://{host}:{self.port}{path}"


async def _until_disconnected(request: Request) -> None:
    """Wait until the caller hangs up (the request has no body left to read)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


class _AnswerThenHang(Response):
    """Answers at once, without reading the request body, then hangs until
    the caller hangs up: a response that has begun and will not end."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = [(b"content-length", str(STALLED_RESPONSE_LENGTH).encode())]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send(
            {"type": "http.response.body", "body": STALLED_RESPONSE_START, "more_body": True}
        )
        while (await receive())["type"] != "http.disconnect":
            pass


def _app(hits: list[dict[str, Any]]) -> Starlette:
    async def echo(request: Request) -> Response:
        digest = hashlib.sha256()
        length = 0
        async for chunk in request.stream():
            digest.update(chunk)
            length += len(chunk)
        client = request.client
        record = {
            "method": request.method,
            "raw_path": request.scope["raw_path"].decode("latin-1"),
            "query": request.scope["query_string"].decode("latin-1"),
            "headers": [
                [k.decode("latin-1"), v.decode("latin-1")] for k, v in request.scope["headers"]
            ],
            "body_length": length,
            "body_sha256": digest.hexdigest(),
            "client_port": client.port if client else None,
        }
        hits.append(record)
        return JSONResponse(record)

    async def stream(request: Request) -> Response:
        size = int(request.path_params["size"])
        hits.append({"method": request.method, "raw_path": request.url.path})

        async def body() -> AsyncIterator[bytes]:
            left = size
            block = bytes(range(256)) * (STREAM_CHUNK // 256)
            while left > 0:
                piece = block[: min(left, STREAM_CHUNK)]
                left -= len(piece)
                yield piece

        headers = {"content-length": str(size)} if "sized" in request.query_params else {}
        return StreamingResponse(body(), media_type="application/octet-stream", headers=headers)

    async def stall(request: Request) -> Response:
        """Never answers while the caller waits: a server that hangs."""
        hits.append({"method": request.method, "raw_path": request.url.path})
        await _until_disconnected(request)
        return Response(b"too late")

    async def stall_mid_response(request: Request) -> Response:
        hits.append({"method": request.method, "raw_path": request.url.path})
        return _AnswerThenHang()

    async def hop(request: Request) -> Response:
        hits.append({"method": request.method, "raw_path": request.url.path})
        headers = {
            "connection": "x-resp-hop",
            "x-resp-hop": "secret",
            "keep-alive": "timeout=5",
            "x-end": "kept",
        }
        return Response(b"hop", headers=headers)

    return Starlette(
        routes=[
            Route("/hop", hop, methods=["GET"]),
            Route("/stream/{size:int}", stream, methods=["GET"]),
            Route("/stall", stall, methods=["GET"]),
            Route("/stall-mid-response", stall_mid_response, methods=["GET", "POST"]),
            Route("/{path:path}", echo, methods=["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH"]),
        ]
    )


@contextlib.contextmanager
def serve_upstream(scheme: str, cert: trustme.LeafCert | None, tmp: Path) -> Iterator[Upstream]:
    """Run an upstream (HTTP, or HTTPS with ``cert``) in a thread until the block ends."""
    sock = socket.socket()
    # Inherited by accepted sockets: avoids ~40 ms delayed-ACK stalls per response.
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.bind(("127.0.0.1", 0))
    upstream = Upstream(scheme, sock.getsockname()[1])
    options: dict[str, Any] = {}
    if cert is not None:
        certfile, keyfile = tmp / "upstream-cert.pem", tmp / "upstream-key.pem"
        cert.cert_chain_pems[0].write_to_path(str(certfile))
        cert.private_key_pem.write_to_path(str(keyfile))
        options = {"ssl_certfile": str(certfile), "ssl_keyfile": str(keyfile)}
    config = uvicorn.Config(
        _app(upstream.hits),
        log_level="warning",
        lifespan="off",
        http="h11",
        # Short, so a test can watch the proxy cope with a server-closed keep-alive.
        timeout_keep_alive=UPSTREAM_KEEP_ALIVE,
        **options,
    )
    server = uvicorn.Server(config)

    def open_connections() -> set[int]:
        # list() copies the set in one C call, safe against the server thread.
        clients = [getattr(c, "client", None) for c in list(server.server_state.connections)]
        return {client[1] for client in clients if client}

    upstream.open_connections = open_connections
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()

    def started() -> bool:
        if not thread.is_alive():
            raise RuntimeError("upstream server thread died before starting")
        return server.started

    try:
        eventually(started, "the upstream server to start")
        yield upstream
    finally:
        server.should_exit = True
        thread.join(timeout=THREAD_TIMEOUT)
        sock.close()


class RunningProxy:
    """A ProxyServer on its own event loop thread, so blocking clients can use it."""

    def __init__(self, server: ProxyServer, auditor: RecordingAuditor) -> None:
        self.server = server
        self.auditor = auditor
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    @property
    def port(self) -> int:
        return self.server.port

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def events(self) -> list[AuditEvent]:
        return self.auditor.events

    def metric(self, name: str, **labels: str) -> float:
        value = self.server.metrics.registry.get_sample_value(name, labels)
        return 0.0 if value is None else value

    def metric_total(self, name: str) -> float:
        """The sum of sample ``name`` over all its label values."""
        return sum(
            sample.value
            for family in self.server.metrics.registry.collect()
            for sample in family.samples
            if sample.name == name
        )

    def start(self) -> RunningProxy:
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self.server.start(), self.loop).result(THREAD_TIMEOUT)
        return self

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self.server.aclose(), self.loop).result(THREAD_TIMEOUT)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(THREAD_TIMEOUT)
        self.loop.close()


ProxyFactory = Callable[..., RunningProxy]


def curl(
    proxy: RunningProxy, ca: CertificateAuthority, *args: str
) -> subprocess.CompletedProcess[str]:
    """curl through ``proxy``, trusting its CA."""
    return subprocess.run(
        ["curl", "-sS", "--max-time", "30", "-x", proxy.url, "--cacert", str(ca.cert_path), *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def header(record: dict[str, Any], name: str) -> list[str]:
    """The values of header ``name`` in an echo record."""
    return [v for k, v in record["headers"] if k == name.lower()]


def read_responses(sock: socket.socket, *, responses: int = 1) -> list[h11.Event]:
    """Parse what the proxy sends on ``sock`` with h11, up to ``responses``
    complete responses (or until it closes)."""
    client = h11.Connection(h11.CLIENT)
    # Pretend we sent the requests so h11 accepts the responses.
    events: list[h11.Event] = []
    done = 0
    client.send(h11.Request(method="GET", target="/", headers=[("host", "x")]))
    client.send(h11.EndOfMessage())
    while done < responses:
        event = client.next_event()
        if event is h11.NEED_DATA:
            data = sock.recv(65536)
            client.receive_data(data)
            if not data:
                break
            continue
        assert isinstance(event, h11.Event)
        if isinstance(event, h11.ConnectionClosed):
            break
        events.append(event)
        if isinstance(event, h11.EndOfMessage):
            done += 1
            if done < responses:
                client.start_next_cycle()
                client.send(h11.Request(method="GET", target="/", headers=[("host", "x")]))
                client.send(h11.EndOfMessage())
    return events


def raw_exchange(proxy: RunningProxy, payload: bytes, *, responses: int = 1) -> list[h11.Event]:
    """Send raw bytes to the proxy and parse what comes back with h11."""
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=CLIENT_TIMEOUT) as sock:
        sock.sendall(payload)
        return read_responses(sock, responses=responses)


def statuses_of(events: list[h11.Event]) -> list[int]:
    return [e.status_code for e in events if isinstance(e, h11.Response)]


def body_of(events: list[h11.Event]) -> bytes:
    return b"".join(bytes(e.data) for e in events if isinstance(e, h11.Data))

"""Real upstream servers (HTTP and HTTPS, uvicorn), a real proxy, a recording auditor."""

from __future__ import annotations

import asyncio
import hashlib
import socket
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import trustme
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from boundary_audit.auditor.event import AuditEvent
from boundary_audit.proxy.ca import CertificateAuthority
from boundary_audit.proxy.rules import parse_rules
from boundary_audit.proxy.server import ProxyServer, ProxyTimeouts

#: Seconds the test upstreams keep an idle connection open.
UPSTREAM_KEEP_ALIVE = 1
#: Chunk the test upstream streams bodies in.
STREAM_CHUNK = 64 * 1024


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

    def url(self, path: str = "/", host: str = "127.0.0.1") -> str:
        return f"{self.scheme}://{host}:{self.port}{path}"


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

    async def sleep(request: Request) -> Response:
        hits.append({"method": request.method, "raw_path": request.url.path})
        await asyncio.sleep(int(request.path_params["ms"]) / 1000)
        return Response(b"slept")

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
            Route("/sleep/{ms:int}", sleep, methods=["GET"]),
            Route("/{path:path}", echo, methods=["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH"]),
        ]
    )


class _UpstreamThread:
    def __init__(self, upstream: Upstream, sock: socket.socket, config: uvicorn.Config) -> None:
        self.upstream = upstream
        self.sock = sock
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [sock]}, daemon=True
        )

    def __enter__(self) -> Upstream:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("upstream server did not start")
            time.sleep(0.01)
        return self.upstream

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
        self.sock.close()


def _start_upstream(scheme: str, cert: trustme.LeafCert | None, tmp: Path) -> _UpstreamThread:
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
    return _UpstreamThread(upstream, sock, config)


@pytest.fixture(scope="session")
def upstream_ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="session")
def upstream_ca_file(upstream_ca: trustme.CA, tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("upstream-ca") / "ca.pem"
    upstream_ca.cert_pem.write_to_path(str(path))
    return str(path)


@pytest.fixture(scope="session")
def http_upstream(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Upstream]:
    with _start_upstream("http", None, tmp_path_factory.mktemp("http")) as upstream:
        yield upstream


@pytest.fixture(scope="session")
def https_upstream(
    upstream_ca: trustme.CA, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Upstream]:
    cert = upstream_ca.issue_cert("localhost", "127.0.0.1")
    with _start_upstream("https", cert, tmp_path_factory.mktemp("https")) as upstream:
        yield upstream


@pytest.fixture(autouse=True)
def _clear_hits(request: pytest.FixtureRequest) -> None:
    for name in ("http_upstream", "https_upstream"):
        if name in request.fixturenames:
            request.getfixturevalue(name).hits.clear()


@pytest.fixture(scope="session")
def ca(tmp_path_factory: pytest.TempPathFactory) -> CertificateAuthority:
    return CertificateAuthority.load_or_create(tmp_path_factory.mktemp("home") / "ca")


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

    def start(self) -> RunningProxy:
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self.server.start(), self.loop).result(10)
        return self

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self.server.aclose(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


ProxyFactory = Callable[..., RunningProxy]


@pytest.fixture
def make_proxy(ca: CertificateAuthority, upstream_ca_file: str) -> Iterator[ProxyFactory]:
    """Start a proxy with the given rules; extra keywords go to ProxyServer."""
    running: list[RunningProxy] = []

    def make(*rules: str, **options: Any) -> RunningProxy:
        auditor = RecordingAuditor()
        options.setdefault("upstream_ca_file", upstream_ca_file)
        options.setdefault("timeouts", ProxyTimeouts(header=2.0, idle=10.0, read=10.0))
        server = ProxyServer(parse_rules(rules), auditor, ca=ca, **options)
        proxy = RunningProxy(server, auditor).start()
        running.append(proxy)
        return proxy

    yield make
    for proxy in running:
        proxy.stop()

"""Proxy overhead, measured side by side with direct requests in one run.

Upstream (uvicorn) and proxy each run in their own process so the client's
timing loop does not share a GIL with them. Small responses are fetched over a
kept-alive connection (HTTP, and HTTPS through a CONNECT tunnel); a large body
is fetched to measure streaming throughput.

    .venv/bin/python benchmarks/bench_proxy.py [--requests N] [--large-mb M]
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import multiprocessing as mp
import socket
import ssl
import tempfile
import time
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import trustme
import uvicorn
from rich.console import Console
from rich.table import Table

from boundary_audit.auditor.event import AuditEvent
from boundary_audit.proxy import CertificateAuthority, ProxyServer, parse_rules

#: Small response size: typical API/JSON reply, so per-request cost dominates.
SMALL_BODY = b"x" * 256
#: Chunk the upstream streams a large body in.
LARGE_CHUNK = 256 * 1024
#: Requests before timing starts, to warm connections and caches.
WARMUP = 200
#: Client read size for the large body.
CLIENT_READ = 1024 * 1024

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]


async def upstream_app(scope: Scope, receive: Receive, send: Send) -> None:
    """Raw ASGI: ``/small`` returns 256 bytes, ``/large/N`` streams N bytes."""
    if scope["type"] != "http":
        return
    path: str = scope["path"]
    if path.startswith("/large/"):
        size = int(path.rsplit("/", 1)[1])
        headers = [(b"content-length", str(size).encode())]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        block = b"y" * LARGE_CHUNK
        while size > 0:
            piece = block[: min(size, LARGE_CHUNK)]
            size -= len(piece)
            await send({"type": "http.response.body", "body": piece, "more_body": size > 0})
        return
    headers = [(b"content-length", str(len(SMALL_BODY)).encode())]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": SMALL_BODY})


def run_upstream(sock: socket.socket, certfile: str | None, keyfile: str | None) -> None:
    options: dict[str, Any] = {}
    if certfile:
        options = {"ssl_certfile": certfile, "ssl_keyfile": keyfile}
    config = uvicorn.Config(
        upstream_app, log_level="warning", lifespan="off", access_log=False, **options
    )
    uvicorn.Server(config).run(sockets=[sock])


class CountingAuditor:
    """A real Auditor that only numbers events (the benchmark measures the proxy)."""

    def __init__(self) -> None:
        self.count = 0

    def audit(self, event: AuditEvent) -> int:
        self.count += 1
        return self.count - 1

    def close(self, timeout: float | None = None) -> None:
        return None


def run_proxy(ca_dir: str, upstream_ca: str, ready: Connection) -> None:
    from boundary_audit.logs import configure_logging

    configure_logging("warning")

    async def main() -> None:
        ca = CertificateAuthority.load_or_create(Path(ca_dir))
        rules = parse_rules(["domain=127.0.0.1 path=/small,/large/*"])
        async with ProxyServer(
            rules, CountingAuditor(), ca=ca, upstream_ca_file=upstream_ca
        ) as proxy:
            ready.send(proxy.port)
            await asyncio.Event().wait()

    asyncio.run(main())


@dataclass
class Latency:
    name: str
    samples: list[float]

    @property
    def rps(self) -> float:
        return len(self.samples) / sum(self.samples)

    def pct(self, q: float) -> float:
        ordered = sorted(self.samples)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _connection(
    upstream_port: int, tls: ssl.SSLContext | None, proxy_port: int | None
) -> http.client.HTTPConnection:
    if proxy_port is None:
        if tls is None:
            return http.client.HTTPConnection("127.0.0.1", upstream_port, timeout=30)
        return http.client.HTTPSConnection("127.0.0.1", upstream_port, context=tls, timeout=30)
    if tls is None:
        return http.client.HTTPConnection("127.0.0.1", proxy_port, timeout=30)
    conn = http.client.HTTPSConnection("127.0.0.1", proxy_port, context=tls, timeout=30)
    conn.set_tunnel("127.0.0.1", upstream_port)
    return conn


def _target(
    upstream_port: int, tls: ssl.SSLContext | None, proxy_port: int | None, path: str
) -> str:
    # Plain HTTP through a proxy is sent in absolute-form.
    if proxy_port is not None and tls is None:
        return f"http://127.0.0.1:{upstream_port}{path}"
    return path


def measure_small(
    name: str, upstream_port: int, tls: ssl.SSLContext | None, proxy_port: int | None, n: int
) -> Latency:
    conn = _connection(upstream_port, tls, proxy_port)
    target = _target(upstream_port, tls, proxy_port, "/small")
    samples: list[float] = []
    for i in range(WARMUP + n):
        start = time.perf_counter()
        conn.request("GET", target)
        response = conn.getresponse()
        body = response.read()
        elapsed = time.perf_counter() - start
        if response.status != 200 or body != SMALL_BODY:
            raise RuntimeError(f"{name}: unexpected response {response.status}")
        if i >= WARMUP:
            samples.append(elapsed)
    conn.close()
    return Latency(name, samples)


def measure_large(
    upstream_port: int, tls: ssl.SSLContext | None, proxy_port: int | None, size: int
) -> float:
    conn = _connection(upstream_port, tls, proxy_port)
    start = time.perf_counter()
    conn.request("GET", _target(upstream_port, tls, proxy_port, f"/large/{size}"))
    response = conn.getresponse()
    got = 0
    buffer = bytearray(CLIENT_READ)
    view = memoryview(buffer)
    while True:
        count = response.readinto(view)
        if not count:
            break
        got += count
    elapsed = time.perf_counter() - start
    conn.close()
    if got != size:
        raise RuntimeError(f"large body: got {got} of {size} bytes")
    return size / elapsed / 1e6


def _listening_socket() -> socket.socket:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    # Accepted sockets inherit this; without it uvicorn's separate header and
    # body writes meet the client's delayed ACK and every request takes ~40 ms.
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000, help="timed requests per row")
    parser.add_argument("--large-mb", type=int, default=200, help="size of the large body")
    args = parser.parse_args()
    console = Console(width=120)
    ctx = mp.get_context("fork")
    with tempfile.TemporaryDirectory() as tmp:
        up_ca = trustme.CA()
        leaf = up_ca.issue_cert("127.0.0.1")
        certfile, keyfile, up_ca_file = (f"{tmp}/cert.pem", f"{tmp}/key.pem", f"{tmp}/ca.pem")
        leaf.cert_chain_pems[0].write_to_path(certfile)
        leaf.private_key_pem.write_to_path(keyfile)
        up_ca.cert_pem.write_to_path(up_ca_file)
        plain_sock, tls_sock = _listening_socket(), _listening_socket()
        receiver, sender = ctx.Pipe(duplex=False)
        processes = [
            ctx.Process(target=run_upstream, args=(plain_sock, None, None), daemon=True),
            ctx.Process(target=run_upstream, args=(tls_sock, certfile, keyfile), daemon=True),
            ctx.Process(target=run_proxy, args=(f"{tmp}/ca", up_ca_file, sender), daemon=True),
        ]
        for process in processes:
            process.start()
        try:
            proxy_port: int = receiver.recv()
            http_port, https_port = plain_sock.getsockname()[1], tls_sock.getsockname()[1]
            direct_tls = ssl.create_default_context(cafile=up_ca_file)
            proxy_tls = ssl.create_default_context(cafile=f"{tmp}/ca/ca-cert.pem")
            _wait_ready(http_port)
            _wait_ready(https_port)
            n = args.requests
            rows = [
                (
                    "HTTP keep-alive",
                    measure_small("http direct", http_port, None, None, n),
                    measure_small("http proxy", http_port, None, proxy_port, n),
                ),
                (
                    "HTTPS keep-alive",
                    measure_small("https direct", https_port, direct_tls, None, n),
                    measure_small("https proxy", https_port, proxy_tls, proxy_port, n),
                ),
            ]
            size = args.large_mb * 1024 * 1024
            large = [
                (
                    "HTTP",
                    measure_large(http_port, None, None, size),
                    measure_large(http_port, None, proxy_port, size),
                ),
                (
                    "HTTPS",
                    measure_large(https_port, direct_tls, None, size),
                    measure_large(https_port, proxy_tls, proxy_port, size),
                ),
            ]
        finally:
            for process in processes:
                process.terminate()
                process.join(5)

    table = Table(title=f"Small responses ({len(SMALL_BODY)} B, {n} requests, 1 connection)")
    for column in (
        "scenario",
        "direct req/s",
        "proxy req/s",
        "direct p50",
        "proxy p50",
        "added p50",
        "added p99",
    ):
        table.add_column(column, justify="right" if column != "scenario" else "left")
    for label, direct, proxied in rows:
        table.add_row(
            label,
            f"{direct.rps:,.0f}",
            f"{proxied.rps:,.0f}",
            f"{direct.pct(0.5) * 1e3:.3f} ms",
            f"{proxied.pct(0.5) * 1e3:.3f} ms",
            f"{(proxied.pct(0.5) - direct.pct(0.5)) * 1e3:.3f} ms",
            f"{(proxied.pct(0.99) - direct.pct(0.99)) * 1e3:.3f} ms",
        )
    console.print(table)
    big = Table(title=f"Large body ({args.large_mb} MiB download)")
    for column in ("scheme", "direct MB/s", "proxy MB/s"):
        big.add_column(column, justify="right" if column != "scheme" else "left")
    for label, direct_mbs, proxy_mbs in large:
        big.add_row(label, f"{direct_mbs:,.0f}", f"{proxy_mbs:,.0f}")
    console.print(big)
    console.print(f"(percentiles over all timed requests; {mp.cpu_count()} CPU cores)")


def _wait_ready(port: int) -> None:
    deadline = time.monotonic() + 30
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


if __name__ == "__main__":
    main()

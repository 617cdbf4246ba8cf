"""Proxy overhead, measured side by side with direct requests in one run.

Upstream (uvicorn) and proxy each run in their own process so the client's
timing loop does not share a GIL with them. Small responses are fetched over a
kept-alive connection (HTTP, and HTTPS through a CONNECT tunnel); a large body
is fetched to measure streaming throughput; gRPC unary calls run many at once
on one HTTP/2 connection; WebSocket messages are echoed (small ones for
messages/s, 1 MiB ones for MB/s). Each row is direct, through our proxy, and
through mitmproxy 11.0.2 (the contender), installed on first use in a
throwaway venv of the benchmark's own (``--mitmproxy-venv``; never a project
dependency: it pins an old h11). ``--no-mitmproxy`` skips it.

    .venv/bin/python benchmarks/bench_proxy.py [--requests N] [--large-mb M]
        [--grpc-calls N] [--ws-messages N] [--mitmproxy-venv DIR | --no-mitmproxy]
        [--run [--run-before SRC]]

``--run`` adds the latency a request gets through the whole ``boundary-audit
run`` (confinement, observer, proxy, SocketAuditor), and ``--run-before SRC``
the same from another checkout's ``src`` (e.g. a worktree of an older
commit), side by side with this one in interleaved rounds.
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import multiprocessing as mp
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator, MutableMapping
from concurrent import futures
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import grpc
import trustme
import uvicorn
from rich.console import Console
from rich.table import Table

from boundary_audit.auditor.event import AuditEvent
from boundary_audit.proxy import CertificateAuthority, ProxyServer, parse_rules

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.run_latency import ROUNDS, RunLatency, measure_run, pct

#: Small response size: typical API/JSON reply, so per-request cost dominates.
SMALL_BODY = b"x" * 256
#: Chunk the upstream streams a large body in.
LARGE_CHUNK = 256 * 1024
#: Requests before timing starts, to warm connections and caches.
WARMUP = 200
#: Client read size for the large body.
CLIENT_READ = 1024 * 1024
#: The contender, pinned: the version the issue measured against.
MITMPROXY_VERSION = "11.0.2"
#: mitmproxy 11 needs Python 3.11 or 3.12; the throwaway venv uses this one.
MITMPROXY_PYTHON = "python3.11"
#: Where the throwaway venv lives unless --mitmproxy-venv says otherwise.
DEFAULT_MITMPROXY_VENV = Path.home() / ".cache" / "boundary-audit-bench" / "mitmproxy-11.0.2"
#: gRPC calls in flight at once on the one channel: many concurrent streams.
GRPC_IN_FLIGHT = 64
#: Server threads of the gRPC upstream: enough to keep the in-flight calls busy.
GRPC_WORKERS = 16
#: Small WebSocket message: a chat or tool-call event.
WS_SMALL = b"m" * 64
#: Bulk WebSocket message and count: throughput, beyond every buffer.
WS_BULK = b"b" * (1024 * 1024)
WS_BULK_COUNT = 50
#: How long to wait for a helper process to listen.
READY_TIMEOUT = 60.0

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
        # The first rule decides the HTTP rows (as before the gRPC and
        # WebSocket rows were added); the second, those.
        rules = parse_rules(
            ["domain=127.0.0.1 path=/small,/large/*", "domain=127.0.0.1 path=/b.Echo/Unary,/"]
        )
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
        return pct(self.samples, q)


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


# -- gRPC and WebSocket upstreams (own processes, spawned: grpc does not fork) --------


def _same(data: bytes) -> bytes:
    return data


def _grpc_unary(request: bytes, context: Any) -> bytes:
    return request


def run_grpc_upstream(certfile: str, keyfile: str, ready: Connection) -> None:
    handler = grpc.method_handlers_generic_handler(
        "b.Echo", {"Unary": grpc.unary_unary_rpc_method_handler(_grpc_unary, _same, _same)}
    )
    server = grpc.server(futures.ThreadPoolExecutor(GRPC_WORKERS))
    server.add_generic_rpc_handlers([handler])
    key, cert = Path(keyfile).read_bytes(), Path(certfile).read_bytes()
    tls_port = server.add_secure_port("127.0.0.1:0", grpc.ssl_server_credentials([(key, cert)]))
    plain_port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    ready.send((tls_port, plain_port))
    server.wait_for_termination()


def run_ws_upstream(certfile: str, keyfile: str, ready: Connection) -> None:
    from websockets.asyncio.server import ServerConnection, serve

    async def echo(connection: ServerConnection) -> None:
        async for message in connection:
            await connection.send(message)

    async def main() -> None:
        tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        tls.load_cert_chain(certfile, keyfile)
        options: dict[str, Any] = {"max_size": None, "compression": None}
        async with (
            serve(echo, "127.0.0.1", 0, **options) as plain,
            serve(echo, "127.0.0.1", 0, ssl=tls, **options) as secure,
        ):
            ports = [next(iter(srv.sockets)).getsockname()[1] for srv in (plain, secure)]
            ready.send(tuple(ports))
            await asyncio.Event().wait()

    asyncio.run(main())


# -- the contender ----------------------------------------------------------------------


def ensure_mitmproxy(venv: Path, console: Console) -> Path:
    """mitmdump of mitmproxy 11.0.2 in its own venv, installed on first use."""
    mitmdump = venv / "bin" / "mitmdump"
    if mitmdump.exists():
        return mitmdump
    console.print(f"installing mitmproxy {MITMPROXY_VERSION} into {venv} (once)...")
    subprocess.run([MITMPROXY_PYTHON, "-m", "venv", str(venv)], check=True)
    subprocess.run(
        [str(venv / "bin" / "pip"), "install", "-q", f"mitmproxy=={MITMPROXY_VERSION}"],
        check=True,
    )
    return mitmdump


@contextmanager
def mitmproxy(mitmdump: Path, confdir: Path, upstream_ca: str) -> Iterator[tuple[int, str]]:
    """A running mitmdump (port, CA file), streaming bodies and trusting the upstream CA."""
    port = _free_port()
    process = subprocess.Popen(
        [
            str(mitmdump),
            "-q",
            "--listen-host",
            "127.0.0.1",
            "-p",
            str(port),
            "--set",
            f"confdir={confdir}",
            "--set",
            f"ssl_verify_upstream_trusted_ca={upstream_ca}",
            # Stream bodies as we do (mitmproxy buffers them by default).
            "--set",
            "stream_large_bodies=64k",
        ],
        stdout=subprocess.DEVNULL,
    )
    try:
        _wait_ready(port)
        yield port, str(confdir / "mitmproxy-ca-cert.pem")
    finally:
        process.terminate()
        process.wait(10)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


# -- measurements -----------------------------------------------------------------------


def measure_grpc(port: int, tls_ca: str | None, proxy_port: int | None, calls: int) -> float:
    """gRPC unary calls per second, GRPC_IN_FLIGHT at once on one channel."""
    options: list[tuple[str, str | int]] = [("grpc.enable_http_proxy", 0)]
    if proxy_port is not None:
        options = [("grpc.http_proxy", f"http://127.0.0.1:{proxy_port}")]
    address = f"127.0.0.1:{port}"
    if tls_ca is not None:
        credentials = grpc.ssl_channel_credentials(Path(tls_ca).read_bytes())
        channel = grpc.secure_channel(address, credentials, options=options)
    else:
        channel = grpc.insecure_channel(address, options=options)
    with channel:
        call = channel.unary_unary(
            "/b.Echo/Unary", request_serializer=_same, response_deserializer=_same
        )
        for _ in range(WARMUP // 4):
            call(SMALL_BODY, timeout=30)
        start = time.perf_counter()
        done = 0
        while done < calls:
            batch = [call.future(SMALL_BODY, timeout=30) for _ in range(GRPC_IN_FLIGHT)]
            for pending in batch:
                if pending.result() != SMALL_BODY:
                    raise RuntimeError("gRPC echo mismatch")
            done += len(batch)
        return done / (time.perf_counter() - start)


def measure_ws(uri: str, tls_ca: str | None, proxy_port: int | None, n: int) -> tuple[float, float]:
    """(small messages echoed per second, bulk MB/s echoed) on one WebSocket."""
    from websockets.sync.client import connect

    tls = ssl.create_default_context(cafile=tls_ca) if tls_ca else None
    proxy = f"http://127.0.0.1:{proxy_port}" if proxy_port is not None else None
    with connect(
        uri,
        proxy=proxy,
        ssl=tls,
        max_size=None,
        compression=None,
        ping_interval=None,
        open_timeout=30,
    ) as ws:
        for _ in range(WARMUP):
            ws.send(WS_SMALL)
            ws.recv(30)
        start = time.perf_counter()
        for _ in range(n):
            ws.send(WS_SMALL)
            if ws.recv(30) != WS_SMALL:
                raise RuntimeError("WebSocket echo mismatch")
        small = n / (time.perf_counter() - start)
        start = time.perf_counter()
        for _ in range(WS_BULK_COUNT):
            ws.send(WS_BULK)
            ws.recv(30)
        bulk = WS_BULK_COUNT * len(WS_BULK) / (time.perf_counter() - start) / 1e6
    return small, bulk


@dataclass
class Contender:
    """A proxy to measure through: its port and the CA its clients trust."""

    name: str
    port: int
    ca_file: str


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000, help="timed requests per row")
    parser.add_argument("--large-mb", type=int, default=200, help="size of the large body")
    parser.add_argument("--grpc-calls", type=int, default=5000, help="gRPC calls per row")
    parser.add_argument("--ws-messages", type=int, default=3000, help="small WebSocket echoes")
    parser.add_argument("--mitmproxy-venv", type=Path, default=DEFAULT_MITMPROXY_VENV)
    parser.add_argument("--no-mitmproxy", action="store_true", help="skip the contender")
    parser.add_argument("--run", action="store_true", help="add the through-`run` latency rows")
    parser.add_argument(
        "--run-before", metavar="SRC", help="also measure `run` from this checkout's src dir"
    )
    args = parser.parse_args()
    console = Console(width=140)
    mitmdump = None if args.no_mitmproxy else ensure_mitmproxy(args.mitmproxy_venv, console)
    ctx = mp.get_context("fork")
    spawn = mp.get_context("spawn")
    with tempfile.TemporaryDirectory() as tmp:
        up_ca = trustme.CA()
        leaf = up_ca.issue_cert("127.0.0.1")
        certfile, keyfile, up_ca_file = (f"{tmp}/cert.pem", f"{tmp}/key.pem", f"{tmp}/ca.pem")
        leaf.cert_chain_pems[0].write_to_path(certfile)
        leaf.private_key_pem.write_to_path(keyfile)
        up_ca.cert_pem.write_to_path(up_ca_file)
        plain_sock, tls_sock = _listening_socket(), _listening_socket()
        receiver, sender = ctx.Pipe(duplex=False)
        grpc_receiver, grpc_sender = spawn.Pipe(duplex=False)
        ws_receiver, ws_sender = spawn.Pipe(duplex=False)
        processes = [
            ctx.Process(target=run_upstream, args=(plain_sock, None, None), daemon=True),
            ctx.Process(target=run_upstream, args=(tls_sock, certfile, keyfile), daemon=True),
            ctx.Process(target=run_proxy, args=(f"{tmp}/ca", up_ca_file, sender), daemon=True),
            spawn.Process(
                target=run_grpc_upstream, args=(certfile, keyfile, grpc_sender), daemon=True
            ),
            spawn.Process(target=run_ws_upstream, args=(certfile, keyfile, ws_sender), daemon=True),
        ]
        for process in processes:
            process.start()
        with ExitStack() as stack:
            try:
                proxy_port: int = receiver.recv()
                grpc_tls, grpc_plain = grpc_receiver.recv()
                ws_plain, ws_tls = ws_receiver.recv()
                contenders = [Contender("ours", proxy_port, f"{tmp}/ca/ca-cert.pem")]
                if mitmdump is not None:
                    port, ca_file = stack.enter_context(
                        mitmproxy(mitmdump, Path(tmp) / "mitm", up_ca_file)
                    )
                    contenders.append(Contender("mitmproxy", port, ca_file))
                http_port, https_port = plain_sock.getsockname()[1], tls_sock.getsockname()[1]
                _wait_ready(http_port)
                _wait_ready(https_port)
                results = _measure_all(
                    args,
                    contenders=contenders,
                    up_ca_file=up_ca_file,
                    http_port=http_port,
                    https_port=https_port,
                    grpc_ports=(grpc_tls, grpc_plain),
                    ws_ports=(ws_plain, ws_tls),
                )
                if args.run or args.run_before:
                    variants: dict[str, str | None] = {}
                    if args.run_before:
                        variants["run (before)"] = str(Path(args.run_before).resolve())
                    variants["run (this checkout)"] = None
                    run_rows = measure_run(http_port, args.requests, variants)
            finally:
                for process in processes:
                    process.terminate()
                    process.join(5)
    _print_tables(console, args, contenders, results)
    if args.run or args.run_before:
        _print_run(console, args, run_rows)


def _print_run(console: Console, args: argparse.Namespace, rows: list[RunLatency]) -> None:
    table = Table(
        title=f"Through `boundary-audit run` (HTTP keep-alive, {args.requests} requests, "
        f"median of {ROUNDS} interleaved rounds)"
    )
    for column in ("variant", "p50", "added p50", "p99", "added p50 vs first run"):
        table.add_column(column, justify="left" if column == "variant" else "right")
    direct = rows[0]
    runs = [r for r in rows if r.label != "direct"]
    first_added = runs[0].p50 - direct.p50 if runs else 0.0
    for r in rows:
        added = r.p50 - direct.p50
        ratio = f"{added / first_added:.2f}x" if r in runs and first_added > 0 else "-"
        table.add_row(
            r.label,
            f"{r.p50 * 1e3:.3f} ms",
            "-" if r is direct else f"{added * 1e3:.3f} ms",
            f"{r.p99 * 1e3:.3f} ms",
            ratio,
        )
    console.print(table)


Results = dict[str, dict[str, Any]]


def _measure_all(
    args: argparse.Namespace,
    *,
    contenders: list[Contender],
    up_ca_file: str,
    http_port: int,
    https_port: int,
    grpc_ports: tuple[int, int],
    ws_ports: tuple[int, int],
) -> Results:
    """Every row: direct first, then each contender, one after the other."""
    n = args.requests
    size = args.large_mb * 1024 * 1024
    direct_tls = ssl.create_default_context(cafile=up_ca_file)
    rows: Results = {}
    for label, port, secure in (("HTTP", http_port, False), ("HTTPS", https_port, True)):
        row: dict[str, Any] = {
            "direct": measure_small("direct", port, direct_tls if secure else None, None, n)
        }
        for c in contenders:
            tls = ssl.create_default_context(cafile=c.ca_file) if secure else None
            row[c.name] = measure_small(c.name, port, tls, c.port, n)
        rows[f"small {label}"] = row
        row = {"direct": measure_large(port, direct_tls if secure else None, None, size)}
        for c in contenders:
            tls = ssl.create_default_context(cafile=c.ca_file) if secure else None
            row[c.name] = measure_large(port, tls, c.port, size)
        rows[f"large {label}"] = row
    grpc_tls, grpc_plain = grpc_ports
    for label, port, secure in (("TLS", grpc_tls, True), ("insecure (h2c)", grpc_plain, False)):
        row = {"direct": measure_grpc(port, up_ca_file if secure else None, None, args.grpc_calls)}
        for c in contenders:
            try:
                row[c.name] = measure_grpc(
                    port, c.ca_file if secure else None, c.port, args.grpc_calls
                )
            except grpc.RpcError as exc:
                row[c.name] = f"failed: {exc.code().name}"
        rows[f"grpc {label}"] = row
    ws_plain, ws_tls = ws_ports
    for label, uri, secure in (
        ("ws", f"ws://127.0.0.1:{ws_plain}/", False),
        ("wss", f"wss://127.0.0.1:{ws_tls}/", True),
    ):
        row = {"direct": measure_ws(uri, up_ca_file if secure else None, None, args.ws_messages)}
        for c in contenders:
            try:
                row[c.name] = measure_ws(
                    uri, c.ca_file if secure else None, c.port, args.ws_messages
                )
            except Exception as exc:  # a contender's failure is a row entry, not a crash
                row[c.name] = f"failed: {exc!r}"[:40]
        rows[f"ws {label}"] = row
    return rows


def _ratio(ours: float, theirs: float, higher_is_better: bool) -> str:
    if theirs <= 0 or ours <= 0:
        return "-"
    return f"{(ours / theirs if higher_is_better else theirs / ours):.2f}x"


def _print_tables(
    console: Console, args: argparse.Namespace, contenders: list[Contender], rows: Results
) -> None:
    names = [c.name for c in contenders]
    rival = "mitmproxy" in names
    table = Table(title=f"Small responses ({len(SMALL_BODY)} B, {args.requests} requests, 1 conn)")
    columns = ["scenario", "direct p50"]
    for name in names:
        columns += [f"{name} p50", f"{name} added p50", f"{name} added p99", f"{name} req/s"]
    if rival:
        columns.append("mitmproxy added / ours")
    for column in columns:
        table.add_column(column, justify="left" if column == "scenario" else "right")
    for label in ("HTTP", "HTTPS"):
        row = rows[f"small {label}"]
        direct: Latency = row["direct"]
        cells = [f"{label} keep-alive", f"{direct.pct(0.5) * 1e3:.3f} ms"]
        added: dict[str, float] = {}
        for name in names:
            lat: Latency = row[name]
            added[name] = lat.pct(0.5) - direct.pct(0.5)
            cells += [
                f"{lat.pct(0.5) * 1e3:.3f} ms",
                f"{added[name] * 1e3:.3f} ms",
                f"{(lat.pct(0.99) - direct.pct(0.99)) * 1e3:.3f} ms",
                f"{lat.rps:,.0f}",
            ]
        if rival:
            cells.append(_ratio(added["ours"], added["mitmproxy"], higher_is_better=False))
        table.add_row(*cells)
    console.print(table)
    _print_throughput(
        console,
        f"Large body ({args.large_mb} MiB download), MB/s",
        names,
        rival,
        [(label, rows[f"large {label}"]) for label in ("HTTP", "HTTPS")],
    )
    _print_throughput(
        console,
        f"gRPC unary calls/s, {GRPC_IN_FLIGHT} in flight on one HTTP/2 connection",
        names,
        rival,
        [(label, rows[f"grpc {label}"]) for label in ("TLS", "insecure (h2c)")],
    )
    for index, what in (
        (0, f"WebSocket echo, {len(WS_SMALL)} B messages/s"),
        (1, f"WebSocket echo, {len(WS_BULK) >> 20} MiB messages, MB/s"),
    ):
        picked = [
            (
                label,
                {
                    k: (v[index] if isinstance(v, tuple) else v)
                    for k, v in rows[f"ws {label}"].items()
                },
            )
            for label in ("ws", "wss")
        ]
        _print_throughput(console, what, names, rival, picked)
    console.print(
        f"(one run, side by side; {mp.cpu_count()} CPU cores; python {sys.version.split()[0]})"
    )


def _print_throughput(
    console: Console,
    title: str,
    names: list[str],
    rival: bool,
    rows: list[tuple[str, dict[str, Any]]],
) -> None:
    table = Table(title=title)
    columns = ["scenario", "direct", *names, *(["ours / mitmproxy"] if rival else [])]
    for column in columns:
        table.add_column(column, justify="left" if column == "scenario" else "right")
    for label, row in rows:
        cells = [label]
        for name in ["direct", *names]:
            value = row[name]
            cells.append(f"{value:,.0f}" if isinstance(value, float) else str(value))
        if rival:
            ours, theirs = row["ours"], row["mitmproxy"]
            both = isinstance(ours, float) and isinstance(theirs, float)
            cells.append(_ratio(ours, theirs, higher_is_better=True) if both else "-")
        table.add_row(*cells)
    console.print(table)


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

"""WebSocket through the proxy (issue 13 item 1): the real ``websockets``
client and server, ws and wss, inside CONNECT tunnels and in absolute-form.

The upgrade is decided and audited like any request (``ws://``/``wss://``
URL, method GET); denied means the usual 403 and no handshake upstream;
after the 101 bytes flow both ways until a side closes, the connection goes
idle or its size limit is reached.
"""

from __future__ import annotations

import http.client
import json
import socket
import ssl
from collections.abc import Iterator

import pytest
import trustme
from websockets.client import ClientProtocol
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.frames import Frame, Opcode
from websockets.http11 import Request, Response
from websockets.sync.client import ClientConnection, connect
from websockets.uri import parse_uri

from boundary_audit.proxy import CertificateAuthority, ProxyTimeouts
from tests.support import eventually

from .helpers import ProxyFactory, Upstream
from .ws_echo import EchoServer, serve_ws

pytestmark = pytest.mark.timeout(60)

#: Bounds each client operation; a hang fails the test instead of stalling it.
CLIENT_TIMEOUT = 10.0


@pytest.fixture(scope="module", params=["ws", "wss"])
def echo_server(request: pytest.FixtureRequest, upstream_ca: trustme.CA) -> Iterator[EchoServer]:
    with serve_ws(request.param, upstream_ca) as server:
        yield server


def _client_tls(ca: CertificateAuthority) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(ca.cert_path))


def _connect(
    uri: str, proxy_url: str, ca: CertificateAuthority, max_size: int | None = 2**20
) -> ClientConnection:
    tls = _client_tls(ca) if uri.startswith("wss:") else None
    return connect(
        uri,
        proxy=proxy_url,
        ssl=tls,
        open_timeout=CLIENT_TIMEOUT,
        ping_interval=None,
        max_size=max_size,
    )


def test_an_allowed_websocket_echoes_both_ways_and_is_audited(
    make_proxy: ProxyFactory, ca: CertificateAuthority, echo_server: EchoServer
) -> None:
    proxy = make_proxy("domain=127.0.0.1 path=/echo")
    with _connect(echo_server.uri(), proxy.url, ca, max_size=None) as ws:
        ws.send("hello")
        assert ws.recv(CLIENT_TIMEOUT) == "hello"
        big = bytes(range(256)) * 8192  # 2 MiB: more than any buffer on the way
        ws.send(big)
        assert ws.recv(CLIENT_TIMEOUT) == big
    [event] = proxy.events
    assert (event.method, event.url, event.allowed) == ("GET", echo_server.uri(), True)
    assert event.rule == "domain=127.0.0.1 path=/echo"
    assert echo_server.paths[-1] == "/echo"
    tunnels = "boundary_audit_proxy_tunnels_total"
    plain = "boundary_audit_proxy_plain_tunnels_total"
    wanted = (1.0, 0.0) if echo_server.scheme == "wss" else (0.0, 1.0)
    assert (proxy.metric(tunnels), proxy.metric(plain)) == wanted


def test_a_denied_upgrade_gets_403_and_never_reaches_the_server(
    make_proxy: ProxyFactory, ca: CertificateAuthority, echo_server: EchoServer
) -> None:
    proxy = make_proxy("domain=127.0.0.1 path=/other")
    before = len(echo_server.paths)
    with pytest.raises(InvalidStatus) as caught:
        _connect(echo_server.uri(), proxy.url, ca)
    assert caught.value.response.status_code == 403
    assert b"--allow" in caught.value.response.body
    [event] = proxy.events
    assert (event.method, event.url, event.allowed) == ("GET", echo_server.uri(), False)
    assert len(echo_server.paths) == before
    assert proxy.metric_total("boundary_audit_proxy_websockets_total") == 0


def test_the_size_limit_cuts_a_websocket(
    make_proxy: ProxyFactory, ca: CertificateAuthority, echo_server: EchoServer
) -> None:
    proxy = make_proxy("domain=127.0.0.1", websocket_max_bytes=200_000)
    with _connect(echo_server.uri(), proxy.url, ca, max_size=None) as ws:
        echoed = 0
        try:
            for _ in range(100):  # 100 x 10 kB echoed is 2 MB, ten times the limit
                ws.send(b"x" * 10_000)
                ws.recv(CLIENT_TIMEOUT)
                echoed += 1
        except ConnectionClosed:
            pass
    assert echoed < 100 // 2  # cut near 200 kB both ways together (10 echoes)
    assert proxy.metric("boundary_audit_proxy_websockets_total", outcome="size_limit") == 1


def test_an_idle_websocket_is_closed(
    make_proxy: ProxyFactory, ca: CertificateAuthority, echo_server: EchoServer
) -> None:
    timeouts = ProxyTimeouts(header=2.0, idle=10.0, read=10.0, websocket_idle=0.5)
    proxy = make_proxy("domain=127.0.0.1", timeouts=timeouts)
    with _connect(echo_server.uri(), proxy.url, ca) as ws:
        ws.send("x")
        assert ws.recv(CLIENT_TIMEOUT) == "x"
        with pytest.raises(ConnectionClosed):
            ws.recv(CLIENT_TIMEOUT)  # nothing is sent: the proxy's idle limit ends it
    assert proxy.metric("boundary_audit_proxy_websockets_total", outcome="idle") == 1


def test_a_client_close_ends_the_relay(
    make_proxy: ProxyFactory, ca: CertificateAuthority, echo_server: EchoServer
) -> None:
    proxy = make_proxy("domain=127.0.0.1")
    with _connect(echo_server.uri(), proxy.url, ca) as ws:
        ws.send("bye")
        assert ws.recv(CLIENT_TIMEOUT) == "bye"
    # The close handshake passes through; whichever side then closes TCP first ends it.
    eventually(lambda: proxy.metric_total("boundary_audit_proxy_websockets_total") == 1)
    closed = {"client_closed", "upstream_closed"}
    assert (
        sum(proxy.metric("boundary_audit_proxy_websockets_total", outcome=o) for o in closed) == 1
    )


@pytest.fixture(scope="module")
def ws_echo(upstream_ca: trustme.CA) -> Iterator[EchoServer]:
    with serve_ws("ws", upstream_ca) as server:
        yield server


def test_absolute_form_ws_upgrade(make_proxy: ProxyFactory, ws_echo: EchoServer) -> None:
    """A plain ``GET http://host/path`` upgrade sent to the proxy itself."""
    echo_server = ws_echo
    proxy = make_proxy("domain=127.0.0.1 path=/echo")
    protocol = ClientProtocol(parse_uri(echo_server.uri()))
    handshake = protocol.connect()
    protocol.send_request(handshake)
    raw = b"".join(protocol.data_to_send())
    absolute = f"GET http://127.0.0.1:{echo_server.port}/echo ".encode()
    raw = raw.replace(b"GET /echo ", absolute, 1)
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=CLIENT_TIMEOUT) as sock:
        sock.sendall(raw)
        while protocol.handshake_exc is None and protocol.state.name == "CONNECTING":
            protocol.receive_data(sock.recv(65536))
        assert protocol.handshake_exc is None
        protocol.send_frame(Frame(Opcode.TEXT, b"absolute"))
        sock.sendall(b"".join(protocol.data_to_send()))
        events: list[Request | Response | Frame] = []
        while not events:
            protocol.receive_data(sock.recv(65536))
            events = protocol.events_received()
    frames = [e for e in events if isinstance(e, Frame)]
    assert frames[0].data == b"absolute"
    [event] = proxy.events
    assert (event.url, event.allowed) == (echo_server.uri(), True)


def test_plain_http_inside_a_connect_tunnel_is_decided_as_http(
    make_proxy: ProxyFactory, http_upstream: Upstream
) -> None:
    """A tunnel whose first byte is not a TLS handshake carries plain HTTP."""
    proxy = make_proxy("domain=127.0.0.1 path=/allowed")
    conn = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=CLIENT_TIMEOUT)
    conn.set_tunnel("127.0.0.1", http_upstream.port)
    conn.request("GET", "/allowed")
    response = conn.getresponse()
    assert response.status == 200
    assert json.loads(response.read())["raw_path"] == "/allowed"
    conn.request("GET", "/denied")  # the same tunnel, kept alive
    denied = conn.getresponse()
    assert denied.status == 403
    denied.read()
    conn.close()
    assert [(e.url, e.allowed) for e in proxy.events] == [
        (http_upstream.url("/allowed"), True),
        (http_upstream.url("/denied"), False),
    ]
    assert proxy.metric("boundary_audit_proxy_plain_tunnels_total") == 1


def test_a_tunnel_closed_before_its_first_byte_costs_nothing(make_proxy: ProxyFactory) -> None:
    proxy = make_proxy("domain=127.0.0.1")
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=CLIENT_TIMEOUT) as sock:
        sock.sendall(b"CONNECT 127.0.0.1:9 HTTP/1.1\r\nHost: 127.0.0.1:9\r\n\r\n")
        assert sock.recv(1024).startswith(b"HTTP/1.1 200")
    eventually(lambda: proxy.metric("boundary_audit_proxy_active_connections") == 0)
    assert proxy.metric_total("boundary_audit_proxy_bad_clients_total") == 0
    assert proxy.events == []

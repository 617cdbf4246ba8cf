"""Clients that misbehave: malformed or oversized heads, slow heads, vanishing
clients, garbage; each is answered (or cut), counted, and costs only itself."""

from __future__ import annotations

import contextlib
import socket
import struct
import time

import pytest
import requests

from boundary_audit.proxy import ProxyTimeouts
from tests.support import eventually

from .helpers import (
    CLIENT_TIMEOUT,
    LARGE_BODY,
    ProxyFactory,
    Upstream,
    body_of,
    raw_exchange,
    statuses_of,
)

pytestmark = pytest.mark.timeout(60)

#: Header timeout of the slow-loris test: short, so the test is; the drip
#: below sends a line several times within it, so only the total times out.
SLOW_HEAD_TIMEOUT = 1.0
#: How often the slow-loris client sends another header line.
DRIP_INTERVAL = 0.2


def test_malformed_request_gets_400(make_proxy: ProxyFactory) -> None:
    proxy = make_proxy("domain=*")
    events = raw_exchange(proxy, b"GET / HTTP/1.1\r\nHost x\r\n\r\n")
    assert statuses_of(events) == [400]
    assert proxy.metric("boundary_audit_proxy_bad_clients_total", kind="malformed") == 1
    assert proxy.events == []


def test_request_smuggling_shape_gets_400_and_is_not_forwarded(
    make_proxy: ProxyFactory, http_upstream: Upstream
) -> None:
    proxy = make_proxy("domain=127.0.0.1")
    payload = (
        f"POST {http_upstream.url('/s')} HTTP/1.1\r\nHost: x\r\n"
        "Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
    ).encode()
    events = raw_exchange(proxy, payload)
    assert statuses_of(events) == [400]
    assert http_upstream.hits == []
    assert proxy.metric("boundary_audit_proxy_bad_clients_total", kind="ambiguous_framing") == 1


def test_origin_form_to_proxy_gets_400(make_proxy: ProxyFactory) -> None:
    proxy = make_proxy("domain=*")
    events = raw_exchange(proxy, b"GET /x HTTP/1.1\r\nHost: a.example\r\n\r\n")
    assert statuses_of(events) == [400]
    assert b"absolute URL" in body_of(events)


@pytest.mark.parametrize(
    ("request_line", "reason"),
    [
        (b"GET https://a.example/ HTTP/1.1", b"use CONNECT"),
        (b"GET http://user:pw@a.example/ HTTP/1.1", b"credentials"),
        (b"OPTIONS * HTTP/1.1", b"only http:// URLs"),
        (b"GET http://a.example:99999/ HTTP/1.1", b"malformed request URL"),
        (b"CONNECT a.example HTTP/1.1", b"host:port"),
        (b"CONNECT a.example:notaport HTTP/1.1", b"host:port"),
    ],
)
def test_unproxyable_targets_get_400_and_no_audit_event(
    make_proxy: ProxyFactory, request_line: bytes, reason: bytes
) -> None:
    proxy = make_proxy("domain=*")
    events = raw_exchange(proxy, request_line + b"\r\nHost: a.example\r\n\r\n")
    assert statuses_of(events) == [400]
    assert reason in body_of(events)
    assert proxy.events == []


def test_oversized_headers_get_431(make_proxy: ProxyFactory) -> None:
    proxy = make_proxy("domain=*")
    huge = b"X-Big: " + b"a" * (200 * 1024) + b"\r\n"
    events = raw_exchange(proxy, b"GET http://a.example/ HTTP/1.1\r\nHost: a\r\n" + huge + b"\r\n")
    assert statuses_of(events) == [431]
    assert proxy.metric("boundary_audit_proxy_bad_clients_total", kind="oversized_head") == 1


def test_slow_loris_gets_408_while_others_are_served(
    make_proxy: ProxyFactory, http_upstream: Upstream
) -> None:
    proxy = make_proxy(
        "domain=127.0.0.1",
        timeouts=ProxyTimeouts(header=SLOW_HEAD_TIMEOUT, idle=10.0, read=10.0),
    )
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=CLIENT_TIMEOUT) as slow:
        slow.sendall(b"GET http://127.0.0.1/ HTTP/1.1\r\nHost: a\r\n")
        # While the slow client dawdles, others are served normally.
        for _ in range(3):
            ok = requests.get(http_upstream.url("/fine"), proxies={"http": proxy.url}, timeout=10)
            assert ok.status_code == 200
        # Drip a header line, then wait up to DRIP_INTERVAL for the answer:
        # the client is slow, and the wait ends the moment the 408 arrives.
        slow.settimeout(DRIP_INTERVAL)
        reply = b""
        deadline = time.monotonic() + CLIENT_TIMEOUT
        while not reply:
            assert time.monotonic() < deadline, "the proxy never cut the slow head off"
            with contextlib.suppress(OSError):
                slow.sendall(b"X-Drip: 1\r\n")
            with contextlib.suppress(TimeoutError):
                reply = slow.recv(65536)
    assert reply.startswith(b"HTTP/1.1 408 ")
    assert proxy.metric("boundary_audit_proxy_bad_clients_total", kind="slow_head") == 1


def test_client_vanishing_mid_download_frees_its_connection(
    make_proxy: ProxyFactory, http_upstream: Upstream
) -> None:
    proxy = make_proxy("domain=127.0.0.1")
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as sock:
        url = http_upstream.url(f"/stream/{LARGE_BODY}?sized=1")
        sock.sendall(f"GET {url} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        assert sock.recv(65536).startswith(b"HTTP/1.1 200 ")
        # Linger on, timeout 0: the close is a reset, as when a client is killed.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    eventually(
        lambda: proxy.metric("boundary_audit_proxy_active_connections") == 0,
        "the proxy to free the dead connection",
        within=10,
    )
    assert proxy.metric("boundary_audit_proxy_bad_clients_total", kind="connection_cut") == 1
    ok = requests.get(http_upstream.url("/after"), proxies={"http": proxy.url}, timeout=10)
    assert ok.status_code == 200


def test_many_bad_clients_do_not_take_the_proxy_down(
    make_proxy: ProxyFactory, http_upstream: Upstream
) -> None:
    proxy = make_proxy("domain=127.0.0.1")
    garbage = [b"\x16\x03\x01\x00\x00", b"NOT HTTP\r\n\r\n", b"GET http://[::1 HTTP/1.1\r\n\r\n"]
    for payload in garbage * 5:
        with socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as sock:
            sock.sendall(payload)
            sock.shutdown(socket.SHUT_WR)
            sock.recv(65536)
    ok = requests.get(http_upstream.url("/still-up"), proxies={"http": proxy.url}, timeout=10)
    assert ok.status_code == 200

"""The proxy end to end: real clients (curl, requests, raw sockets), real upstreams."""

from __future__ import annotations

import asyncio
import json
import socket
import ssl
import threading
from collections.abc import Iterator
from typing import Any

import h11
import httpx
import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from boundary_audit.auditor.event import AuditEvent
from boundary_audit.proxy import (
    SEQUENCE_NUMBER_HEADER,
    SESSION_ID_HEADER,
    CertificateAuthority,
    ProxyServer,
    ProxyTimeouts,
    parse_rules,
)
from tests.support import aeventually, eventually

from .helpers import (
    ProxyFactory,
    RecordingAuditor,
    RunningProxy,
    Upstream,
    body_of,
    curl,
    header,
    raw_exchange,
    statuses_of,
)

pytestmark = pytest.mark.timeout(60)


# -- plain HTTP ----------------------------------------------------------------------


def test_plain_http_allowed_is_forwarded_and_audited(
    make_proxy: ProxyFactory, http_upstream: Upstream
) -> None:
    proxy = make_proxy("method=GET domain=127.0.0.1 path=/api/*")
    url = http_upstream.url("/api/items?x=1")
    response = requests.get(url, proxies={"http": proxy.url}, timeout=10)
    assert response.status_code == 200
    record = response.json()
    assert record["raw_path"] == "/api/items"
    assert record["query"] == "x=1"
    assert header(record, "host") == [f"127.0.0.1:{http_upstream.port}"]
    assert header(record, "via") == ["1.1 boundary-audit"]
    [event] = proxy.events
    assert (event.method, event.url, event.host, event.allowed) == ("GET", url, "127.0.0.1", True)
    assert event.rule == "method=GET domain=127.0.0.1 path=/api/*"
    assert proxy.metric("boundary_audit_proxy_requests_total", decision="allow") == 1


def test_plain_http_denied_gets_403_with_suggestion_and_never_reaches_upstream(
    make_proxy: ProxyFactory, http_upstream: Upstream
) -> None:
    proxy = make_proxy("method=GET domain=127.0.0.1 path=/api/*")
    url = http_upstream.url("/admin/users")
    response = requests.post(url, data=b"payload", proxies={"http": proxy.url}, timeout=10)
    assert response.status_code == 403
    assert response.headers["content-type"].startswith("text/plain")
    assert f"POST {url}" in response.text
    assert '--allow "method=POST domain=127.0.0.1 path=/admin/users"' in response.text
    assert http_upstream.hits == []
    [event] = proxy.events
    assert (event.method, event.url, event.allowed, event.rule) == ("POST", url, False, None)
    assert proxy.metric("boundary_audit_proxy_requests_total", decision="deny") == 1


def test_httpx_client_through_proxy(make_proxy: ProxyFactory, http_upstream: Upstream) -> None:
    proxy = make_proxy("domain=127.0.0.1")
    with httpx.Client(proxy=proxy.url, timeout=10) as client:
        ok = client.put(http_upstream.url("/thing"), content=b"x" * 1000)
    assert ok.status_code == 200
    assert ok.json()["body_length"] == 1000
    assert proxy.events[0].method == "PUT"


def test_curl_plain_http_allowed_and_denied(
    make_proxy: ProxyFactory, http_upstream: Upstream, ca: CertificateAuthority
) -> None:
    proxy = make_proxy("domain=127.0.0.1 path=/ok")
    allowed = curl(proxy, ca, http_upstream.url("/ok"))
    assert allowed.returncode == 0, allowed.stderr
    assert json.loads(allowed.stdout)["raw_path"] == "/ok"
    denied = curl(proxy, ca, "-w", "%{http_code}", "-o", "/dev/null", http_upstream.url("/no"))
    assert denied.stdout == "403"
    assert [e.allowed for e in proxy.events] == [True, False]


# -- HTTPS through CONNECT -----------------------------------------------------------


def test_curl_https_allowed_and_denied(
    make_proxy: ProxyFactory, https_upstream: Upstream, ca: CertificateAuthority
) -> None:
    proxy = make_proxy("method=GET domain=localhost path=/repo/*")
    ok_url = https_upstream.url("/repo/x", host="localhost")
    allowed = curl(proxy, ca, ok_url)
    assert allowed.returncode == 0, allowed.stderr
    assert json.loads(allowed.stdout)["raw_path"] == "/repo/x"
    bad_url = https_upstream.url("/other", host="localhost")
    denied = curl(proxy, ca, "-w", "\n%{http_code}", bad_url)
    assert denied.stdout.endswith("\n403")
    assert f"GET {bad_url}" in denied.stdout
    assert [(e.url, e.allowed) for e in proxy.events] == [(ok_url, True), (bad_url, False)]
    assert proxy.metric("boundary_audit_proxy_tunnels_total") == 2


def test_requests_https_with_our_ca(
    make_proxy: ProxyFactory, https_upstream: Upstream, ca: CertificateAuthority
) -> None:
    proxy = make_proxy("domain=127.0.0.1")
    url = https_upstream.url("/secure")
    with requests.Session() as session:
        session.proxies = {"https": proxy.url}
        # Per request: the environment's REQUESTS_CA_BUNDLE beats session.verify.
        first = session.post(url, data=b"a" * 5000, verify=str(ca.cert_path), timeout=10)
        second = session.get(url, verify=str(ca.cert_path), timeout=10)
    assert first.json()["body_length"] == 5000
    assert second.status_code == 200
    assert [e.url for e in proxy.events] == [url, url]
    assert [e.host for e in proxy.events] == ["127.0.0.1", "127.0.0.1"]
    # One tunnel carried both requests, over one upstream connection.
    assert proxy.metric("boundary_audit_proxy_tunnels_total") == 1
    assert first.json()["client_port"] == second.json()["client_port"]


def test_client_not_trusting_our_ca_fails_and_proxy_counts_it(
    make_proxy: ProxyFactory, https_upstream: Upstream
) -> None:
    proxy = make_proxy("domain=*")
    with pytest.raises(requests.exceptions.SSLError):
        requests.get(https_upstream.url("/"), proxies={"https": proxy.url}, timeout=10)
    assert proxy.events == []
    eventually(
        lambda: proxy.metric("boundary_audit_proxy_bad_clients_total", kind="tls_handshake") >= 1,
        "the failed client handshake to be counted",
        within=5,
    )


def test_upstream_not_trusted_gives_502(
    make_proxy: ProxyFactory, https_upstream: Upstream, ca: CertificateAuthority
) -> None:
    proxy = make_proxy("domain=*", upstream_ca_file=None)
    result = curl(proxy, ca, "-w", "\n%{http_code}", https_upstream.url("/"))
    assert result.stdout.endswith("\n502")
    assert "not trusted" in result.stdout
    assert proxy.metric("boundary_audit_proxy_upstream_errors_total", kind="tls_verify") == 1
    assert https_upstream.hits == []


def test_unreachable_upstream_gives_502(make_proxy: ProxyFactory) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound but not listening: connection refused
        proxy = make_proxy("domain=*")
        response = requests.get(
            f"http://127.0.0.1:{port}/", proxies={"http": proxy.url}, timeout=10
        )
    assert response.status_code == 502
    assert proxy.metric("boundary_audit_proxy_upstream_errors_total", kind="connect") == 1
    assert proxy.events[0].allowed


def test_host_header_must_match_tunnel(
    make_proxy: ProxyFactory, https_upstream: Upstream, ca: CertificateAuthority
) -> None:
    proxy = make_proxy("domain=*")
    result = curl(
        proxy, ca, "-w", "\n%{http_code}", "-H", "Host: elsewhere.test", https_upstream.url("/")
    )
    assert result.stdout.endswith("\n421")
    assert https_upstream.hits == []
    [event] = proxy.events
    assert not event.allowed
    assert event.host == "elsewhere.test"


def test_leaf_certificate_is_served_for_the_connect_host(
    make_proxy: ProxyFactory, ca: CertificateAuthority
) -> None:
    proxy = make_proxy("domain=*")
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as sock:
        sock.sendall(b"CONNECT api.example.test:443 HTTP/1.1\r\nHost: api.example.test:443\r\n\r\n")
        assert sock.recv(4096).startswith(b"HTTP/1.1 200 ")
        context = ssl.create_default_context(cafile=str(ca.cert_path))
        with context.wrap_socket(sock, server_hostname="api.example.test") as tls:
            assert tls.version() in ("TLSv1.2", "TLSv1.3")
            assert tls.selected_alpn_protocol() in (None, "http/1.1")


# -- keep-alive, headers, session correlation ----------------------------------------


def test_keep_alive_serves_several_requests_on_one_connection(
    make_proxy: ProxyFactory, http_upstream: Upstream
) -> None:
    proxy = make_proxy("domain=127.0.0.1 path=/a,/b")
    base = f"http://127.0.0.1:{http_upstream.port}"
    payload = (
        f"GET {base}/a HTTP/1.1\r\nHost: x\r\n\r\n"
        f"GET {base}/denied HTTP/1.1\r\nHost: x\r\n\r\n"
        f"GET {base}/b HTTP/1.1\r\nHost: x\r\n\r\n"
    ).encode()
    events = raw_exchange(proxy, payload, responses=3)
    assert statuses_of(events) == [200, 403, 200]
    assert [hit["raw_path"] for hit in http_upstream.hits] == ["/a", "/b"]
    # The upstream side was reused too: both requests came from one client port.
    assert http_upstream.hits[0]["client_port"] == http_upstream.hits[1]["client_port"]
    assert proxy.metric("boundary_audit_proxy_active_connections") <= 1


def test_denied_request_with_small_body_keeps_the_connection(
    make_proxy: ProxyFactory, http_upstream: Upstream
) -> None:
    proxy = make_proxy("method=GET domain=127.0.0.1")
    url = http_upstream.url("/x")
    payload = (
        f"POST {url} HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello"
        f"GET {url} HTTP/1.1\r\nHost: x\r\n\r\n"
    ).encode()
    events = raw_exchange(proxy, payload, responses=2)
    assert statuses_of(events) == [403, 200]
    assert [hit["method"] for hit in http_upstream.hits] == ["GET"]


def test_upstream_closing_an_idle_connection_is_survived(
    make_proxy: ProxyFactory, http_upstream: Upstream
) -> None:
    proxy = make_proxy("domain=127.0.0.1")
    with requests.Session() as session:
        session.proxies = {"http": proxy.url}
        first = session.get(http_upstream.url("/1"), timeout=10).json()
        eventually(
            lambda: first["client_port"] not in http_upstream.open_connections(),
            "the upstream to close the idle kept-alive connection",
        )
        second = session.get(http_upstream.url("/2"), timeout=10)
    assert second.status_code == 200
    assert second.json()["client_port"] != first["client_port"]
    assert [e.allowed for e in proxy.events] == [True, True]


def test_hop_by_hop_headers_are_not_forwarded(
    make_proxy: ProxyFactory, http_upstream: Upstream
) -> None:
    proxy = make_proxy("domain=127.0.0.1")
    payload = (
        f"GET {http_upstream.url('/h')} HTTP/1.1\r\n"
        "Host: ignored.example\r\n"
        "Connection: keep-alive, X-Hop-Secret\r\n"
        "X-Hop-Secret: must-not-leak\r\n"
        "Keep-Alive: timeout=5\r\n"
        "Proxy-Connection: keep-alive\r\n"
        "Proxy-Authorization: Basic dXNlcjpwYXNz\r\n"
        "TE: trailers\r\n"
        "Upgrade: websocket\r\n"
        "X-End-To-End: kept\r\n\r\n"
    ).encode()
    events = raw_exchange(proxy, payload)
    assert statuses_of(events) == [200]
    record = json.loads(body_of(events))
    names = {k for k, _ in record["headers"]}
    for hop in ("x-hop-secret", "keep-alive", "proxy-connection", "proxy-authorization", "te"):
        assert hop not in names
    assert "upgrade" not in names
    assert header(record, "x-end-to-end") == ["kept"]
    # Absolute-form wins over the Host header (RFC 9112 3.2.2).
    assert header(record, "host") == [f"127.0.0.1:{http_upstream.port}"]


def test_hop_by_hop_response_headers_are_not_forwarded(
    make_proxy: ProxyFactory, http_upstream: Upstream
) -> None:
    proxy = make_proxy("domain=127.0.0.1")
    direct = requests.get(http_upstream.url("/hop"), timeout=10)
    assert direct.headers["x-resp-hop"] == "secret"  # the upstream really sends them
    proxied = requests.get(http_upstream.url("/hop"), proxies={"http": proxy.url}, timeout=10)
    assert proxied.text == "hop"
    assert "x-resp-hop" not in proxied.headers
    assert "keep-alive" not in proxied.headers
    assert proxied.headers["x-end"] == "kept"


def test_chunked_request_body_is_streamed(
    make_proxy: ProxyFactory, http_upstream: Upstream
) -> None:
    proxy = make_proxy("domain=127.0.0.1")

    def pieces() -> Any:
        for _ in range(10):
            yield b"z" * 10_000

    response = requests.post(
        http_upstream.url("/up"), data=pieces(), proxies={"http": proxy.url}, timeout=10
    )
    assert response.json()["body_length"] == 100_000


def test_chunked_response_is_reframed_once(
    make_proxy: ProxyFactory, http_upstream: Upstream
) -> None:
    proxy = make_proxy("domain=127.0.0.1")
    payload = f"GET {http_upstream.url('/stream/300000')} HTTP/1.1\r\nHost: x\r\n\r\n".encode()
    events = raw_exchange(proxy, payload)
    [response] = [e for e in events if isinstance(e, h11.Response)]
    framing = [v for k, v in response.headers if k in (b"transfer-encoding", b"content-length")]
    assert framing == [b"chunked"]
    assert body_of(events) == (bytes(range(256)) * 1200)[:300000]


def test_session_headers_are_injected_for_chosen_domains(
    make_proxy: ProxyFactory, http_upstream: Upstream
) -> None:
    proxy = make_proxy(
        "domain=127.0.0.1",
        "domain=localhost",
        session_header_domains=["127.0.0.1"],
        session_id="5f0c1a3e-0000-4000-8000-000000000001",
    )
    forged = {SESSION_ID_HEADER: "forged", SEQUENCE_NUMBER_HEADER: "999"}
    with requests.Session() as session:
        session.proxies = {"http": proxy.url}
        first = session.get(http_upstream.url("/1"), headers=forged, timeout=10).json()
        second = session.get(http_upstream.url("/2"), timeout=10).json()
        other = session.get(http_upstream.url("/3", host="localhost"), timeout=10).json()
    assert header(first, SESSION_ID_HEADER) == ["5f0c1a3e-0000-4000-8000-000000000001"]
    assert header(first, SEQUENCE_NUMBER_HEADER) == ["0"]
    assert header(second, SEQUENCE_NUMBER_HEADER) == ["1"]
    assert header(other, SESSION_ID_HEADER) == []
    assert [e.sequence_number for e in proxy.events] == [0, 1, 2]


def test_session_domains_need_a_session_id(ca: CertificateAuthority) -> None:
    with pytest.raises(ValueError, match="session_id"):
        ProxyServer(parse_rules([]), RecordingAuditor(), ca=ca, session_header_domains=["x"])


# -- path normalisation end to end ---------------------------------------------------


@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("/public/readme", 200),
        ("/public/../admin", 403),
        ("/public/%2e%2e/admin", 403),
        ("/public/%2E%2E/admin", 403),
        ("/public/..%2Fadmin", 403),
        ("/admin%2F..%2Fpublic/x", 403),
        ("/public/./x/../y", 200),
    ],
)
def test_path_tricks_cannot_bypass_rules(
    make_proxy: ProxyFactory,
    https_upstream: Upstream,
    ca: CertificateAuthority,
    path: str,
    status: int,
) -> None:
    proxy = make_proxy("domain=localhost path=/public/*")
    url = https_upstream.url(path, host="localhost")
    result = curl(proxy, ca, "--path-as-is", "-o", "/dev/null", "-w", "%{http_code}", url)
    assert result.stdout == str(status), result.stderr
    [event] = proxy.events
    assert event.url == url
    assert event.allowed is (status == 200)
    # What was forwarded is exactly what the client sent: the decision, not the
    # request, is made on the normalised form.
    if status == 200:
        assert https_upstream.hits[0]["raw_path"] == path


# -- ordering, timeouts, concurrency --------------------------------------------------


def test_every_request_is_audited_before_it_reaches_upstream(
    ca: CertificateAuthority, upstream_ca_file: str, http_upstream: Upstream
) -> None:
    class SnapshotAuditor(RecordingAuditor):
        """Notes how many requests upstream had seen when each event arrived."""

        def __init__(self) -> None:
            super().__init__()
            self.upstream_seen: list[int] = []

        def audit(self, event: AuditEvent) -> int:
            self.upstream_seen.append(len(http_upstream.hits))
            return super().audit(event)

    auditor = SnapshotAuditor()
    server = ProxyServer(parse_rules(["domain=127.0.0.1"]), auditor, ca=ca)
    proxy = RunningProxy(server, auditor).start()
    try:
        with requests.Session() as session:
            session.proxies = {"http": proxy.url}
            for i in range(5):
                assert session.get(http_upstream.url(f"/{i}"), timeout=10).status_code == 200
    finally:
        proxy.stop()
    assert auditor.upstream_seen == [0, 1, 2, 3, 4]


def test_slow_upstream_gets_504(make_proxy: ProxyFactory, http_upstream: Upstream) -> None:
    proxy = make_proxy(
        "domain=127.0.0.1", timeouts=ProxyTimeouts(response=0.3, header=2.0, idle=10.0, read=10.0)
    )
    response = requests.get(http_upstream.url("/stall"), proxies={"http": proxy.url}, timeout=10)
    assert response.status_code == 504
    assert proxy.metric("boundary_audit_proxy_upstream_errors_total", kind="read_timeout") == 1
    fast = requests.get(http_upstream.url("/fast"), proxies={"http": proxy.url}, timeout=10)
    assert fast.json()["raw_path"] == "/fast"


def test_expect_100_continue_denied_without_reading_the_body(make_proxy: ProxyFactory) -> None:
    proxy = make_proxy("domain=allowed.example")
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as sock:
        sock.sendall(
            b"PUT http://denied.example/big HTTP/1.1\r\nHost: denied.example\r\n"
            b"Content-Length: 100000000\r\nExpect: 100-continue\r\n\r\n"
        )
        reply = b""
        while chunk := sock.recv(65536):
            reply += chunk
    assert reply.startswith(b"HTTP/1.1 403 ")
    assert b"connection: close" in reply.lower()
    assert [(e.method, e.allowed) for e in proxy.events] == [("PUT", False)]


def test_http_10_client_is_served(make_proxy: ProxyFactory, http_upstream: Upstream) -> None:
    proxy = make_proxy("domain=127.0.0.1")
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as sock:
        sock.sendall(f"GET {http_upstream.url('/old')} HTTP/1.0\r\n\r\n".encode())
        reply = b""
        while chunk := sock.recv(65536):
            reply += chunk
    head, _, body = reply.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 ")
    assert json.loads(body)["raw_path"] == "/old"


def test_concurrent_clients_each_get_their_own_answer(
    make_proxy: ProxyFactory,
    http_upstream: Upstream,
    https_upstream: Upstream,
    ca: CertificateAuthority,
) -> None:
    proxy = make_proxy("domain=127.0.0.1")
    results: dict[str, str] = {}

    def fetch(index: int) -> None:
        upstream = https_upstream if index % 2 else http_upstream
        proxies = {"http": proxy.url, "https": proxy.url}
        with requests.Session() as session:
            for round_ in range(3):
                path = f"/client-{index}-{round_}"
                response = session.get(
                    upstream.url(path), proxies=proxies, verify=str(ca.cert_path), timeout=20
                )
                results[path] = response.json()["raw_path"]

    threads = [threading.Thread(target=fetch, args=(i,)) for i in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(results) == 36
    assert all(path == got for path, got in results.items())
    assert len(proxy.events) == 36


PATH_PIECES = st.lists(
    st.sampled_from(["public", "admin", "x", "..", ".", "%2e%2e", "%2E.", "..%2F", "%2F", ""]),
    max_size=5,
)


PUBLIC_ONLY = "domain=127.0.0.1 path=/public/*"


@pytest.fixture(scope="module")
def public_only_proxy(ca: CertificateAuthority, upstream_ca_file: str) -> Iterator[RunningProxy]:
    """One proxy shared by every hypothesis example (starting one per example is waste)."""
    auditor = RecordingAuditor()
    server = ProxyServer(
        parse_rules([PUBLIC_ONLY]), auditor, ca=ca, upstream_ca_file=upstream_ca_file
    )
    proxy = RunningProxy(server, auditor).start()
    yield proxy
    proxy.stop()


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(pieces=PATH_PIECES)
def test_proxy_decides_like_the_rules_and_forwards_the_path_unchanged(
    public_only_proxy: RunningProxy, http_upstream: Upstream, pieces: list[str]
) -> None:
    path = "/" + "/".join(pieces)
    url = http_upstream.url(path)
    expected = parse_rules([PUBLIC_ONLY]).evaluate("GET", url).allowed
    before = len(http_upstream.hits)
    request = f"GET {url} HTTP/1.1\r\nHost: x\r\n\r\n".encode()
    events = raw_exchange(public_only_proxy, request)
    assert statuses_of(events) == [200 if expected else 403]
    assert public_only_proxy.events[-1].url == url
    if expected:
        assert http_upstream.hits[before]["raw_path"] == path
    else:
        assert len(http_upstream.hits) == before


# -- the asyncio API ------------------------------------------------------------------


async def test_async_context_manager_and_prompt_close(
    ca: CertificateAuthority, http_upstream: Upstream
) -> None:
    auditor = RecordingAuditor()
    async with ProxyServer(parse_rules(["domain=127.0.0.1"]), auditor, ca=ca) as proxy:
        async with httpx.AsyncClient(proxy=f"http://127.0.0.1:{proxy.port}") as client:
            response = await client.get(http_upstream.url("/async"))
        assert response.json()["raw_path"] == "/async"
        # An idle kept-alive client must not hold up shutdown.
        _, idle = await asyncio.open_connection("127.0.0.1", proxy.port)
        registry = proxy.metrics.registry
        await aeventually(
            lambda: registry.get_sample_value("boundary_audit_proxy_active_connections") == 1.0,
            "the proxy to take the idle connection",
        )
    idle.close()
    assert [e.allowed for e in auditor.events] == [True]
    with pytest.raises(RuntimeError, match="not started"):
        _ = proxy.port

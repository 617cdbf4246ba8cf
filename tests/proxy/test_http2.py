"""HTTP/2 through the proxy (issue 13 item 2) with real clients and servers.

httpx (``http2=True``) and curl ``--http2`` speak HTTP/2 to the proxy while
the upstream (uvicorn) speaks only HTTP/1.1: the sides fall back
independently. grpcio speaks HTTP/2 end to end, over a TLS channel (ALPN h2
both sides) and an insecure one (h2c with prior knowledge in a plain
tunnel). Every stream is one audit event; a denied stream gets 403 on that
stream only; trailers (the gRPC status) pass; flow control holds for
messages far larger than any window.
"""

from __future__ import annotations

import asyncio
import json
import os
import ssl
from collections.abc import Iterator

import grpc
import httpx
import pytest
import trustme

from boundary_audit.proxy import CertificateAuthority

from .grpc_echo import OPTIONS, GrpcEcho, serve_grpc
from .helpers import ProxyFactory, RunningProxy, Upstream, curl

pytestmark = pytest.mark.timeout(60)

#: Bounds each client call; a hang fails the test instead of stalling it.
CLIENT_TIMEOUT = 15.0
#: Streams opened at once on one connection in the concurrency test.
CONCURRENT = 20


def _httpx(proxy: RunningProxy, ca: CertificateAuthority) -> httpx.Client:
    tls = ssl.create_default_context(cafile=str(ca.cert_path))
    return httpx.Client(http2=True, proxy=proxy.url, verify=tls, timeout=CLIENT_TIMEOUT)


def test_httpx_http2_to_an_http1_upstream(
    make_proxy: ProxyFactory, ca: CertificateAuthority, https_upstream: Upstream
) -> None:
    proxy = make_proxy("domain=127.0.0.1 path=/allowed/*")
    with _httpx(proxy, ca) as client:
        got = client.get(https_upstream.url("/allowed/a?x=1"))
        assert got.http_version == "HTTP/2"
        assert got.json()["raw_path"] == "/allowed/a"
        body = os.urandom(3 * 1024 * 1024)  # beyond every HTTP/2 window on the way
        posted = client.post(https_upstream.url("/allowed/b"), content=body).json()
        assert posted["body_length"] == len(body)
        denied = client.get(https_upstream.url("/denied"))
        assert denied.status_code == 403
        assert "--allow" in denied.text
        again = client.get(https_upstream.url("/allowed/c"))  # the connection carries on
        assert again.status_code == 200
    assert [(e.method, e.url, e.allowed) for e in proxy.events] == [
        ("GET", https_upstream.url("/allowed/a?x=1"), True),
        ("POST", https_upstream.url("/allowed/b"), True),
        ("GET", https_upstream.url("/denied"), False),
        ("GET", https_upstream.url("/allowed/c"), True),
    ]
    assert "/denied" not in {hit["raw_path"] for hit in https_upstream.hits}
    assert proxy.metric("boundary_audit_proxy_tunnels_total") == 1  # one connection


def test_many_concurrent_streams_on_one_connection(
    make_proxy: ProxyFactory, ca: CertificateAuthority, https_upstream: Upstream
) -> None:
    proxy = make_proxy("domain=127.0.0.1 path=/allowed/*")
    tls = ssl.create_default_context(cafile=str(ca.cert_path))

    async def main() -> list[int]:
        async with httpx.AsyncClient(
            http2=True, proxy=proxy.url, verify=tls, timeout=CLIENT_TIMEOUT
        ) as client:
            # One request first: httpx opens the connection the rest multiplex on.
            assert (await client.get(https_upstream.url("/allowed/first"))).status_code == 200
            urls = [https_upstream.url(f"/allowed/{i}") for i in range(CONCURRENT)]
            urls.append(https_upstream.url("/denied"))
            responses = await asyncio.gather(*(client.get(url) for url in urls))
            return [r.status_code for r in responses]

    statuses = asyncio.run(main())
    assert statuses == [200] * CONCURRENT + [403]
    assert len(proxy.events) == CONCURRENT + 2
    assert proxy.metric("boundary_audit_proxy_tunnels_total") == 1


def test_curl_http2(
    make_proxy: ProxyFactory, ca: CertificateAuthority, https_upstream: Upstream
) -> None:
    proxy = make_proxy("domain=127.0.0.1 path=/allowed")
    url = https_upstream.url("/allowed")
    result = curl(proxy, ca, "--http2", "-w", "\\n%{http_version} %{http_code}", url)
    body, _, status = result.stdout.rpartition("\n")
    assert status == "2 200", result.stderr
    assert json.loads(body)["raw_path"] == "/allowed"
    denied = curl(
        proxy,
        ca,
        "--http2",
        "-o",
        "/dev/null",
        "-w",
        "%{http_version} %{http_code}",
        https_upstream.url("/denied"),
    )
    assert denied.stdout == "2 403"
    assert [(e.url, e.allowed) for e in proxy.events] == [
        (url, True),
        (https_upstream.url("/denied"), False),
    ]


@pytest.fixture(scope="module")
def grpc_echo(upstream_ca: trustme.CA) -> Iterator[GrpcEcho]:
    with serve_grpc(upstream_ca) as server:
        yield server


@pytest.fixture
def grpc_proxy_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("no_proxy", "NO_PROXY", "no_grpc_proxy"):
        monkeypatch.delenv(name, raising=False)


def _channel(
    kind: str, echo: GrpcEcho, ca: CertificateAuthority, proxy: RunningProxy
) -> grpc.Channel:
    options = [*OPTIONS, ("grpc.http_proxy", proxy.url)]
    if kind == "tls":
        credentials = grpc.ssl_channel_credentials(ca.cert_path.read_bytes())
        return grpc.secure_channel(f"127.0.0.1:{echo.tls_port}", credentials, options=options)
    return grpc.insecure_channel(f"127.0.0.1:{echo.plain_port}", options=options)


def _call(channel: grpc.Channel, method: str) -> grpc.UnaryUnaryMultiCallable[bytes, bytes]:
    return channel.unary_unary(
        f"/t.Echo/{method}", request_serializer=lambda b: b, response_deserializer=lambda b: b
    )


@pytest.mark.parametrize("kind", ["tls", "insecure"])
def test_grpc_unary_streaming_trailers_and_denial(
    kind: str,
    make_proxy: ProxyFactory,
    ca: CertificateAuthority,
    grpc_echo: GrpcEcho,
    grpc_proxy_env: None,
) -> None:
    proxy = make_proxy(
        "domain=127.0.0.1 path=/t.Echo/Unary,/t.Echo/Stream,/t.Echo/Fail,/t.Echo/Big"
    )
    scheme, port = (
        ("https", grpc_echo.tls_port) if kind == "tls" else ("http", grpc_echo.plain_port)
    )
    with _channel(kind, grpc_echo, ca, proxy) as channel:
        assert _call(channel, "Unary")(b"hi", timeout=CLIENT_TIMEOUT) == b"echo:hi"
        stream = channel.stream_stream(
            "/t.Echo/Stream", request_serializer=lambda b: b, response_deserializer=lambda b: b
        )
        assert list(stream(iter([b"a", b"b", b"c"]), timeout=CLIENT_TIMEOUT)) == [
            b"s:a",
            b"s:b",
            b"s:c",
        ]
        with pytest.raises(grpc.RpcError) as failed:
            _call(channel, "Fail")(b"x", timeout=CLIENT_TIMEOUT)
        assert failed.value.code() is grpc.StatusCode.PERMISSION_DENIED  # from the trailers
        assert failed.value.details() == "nope"
        with pytest.raises(grpc.RpcError) as denied:
            _call(channel, "Secret")(b"x", timeout=CLIENT_TIMEOUT)
        assert "403" in (denied.value.details() or "")
        big = 8 * 1024 * 1024  # far beyond the windows: flow control end to end
        assert len(_call(channel, "Big")(str(big).encode(), timeout=CLIENT_TIMEOUT)) == big
        # The denied stream cost only itself: the connection still serves.
        assert _call(channel, "Unary")(b"again", timeout=CLIENT_TIMEOUT) == b"echo:again"
    base = f"{scheme}://127.0.0.1:{port}/t.Echo/"
    assert [(e.method, e.url, e.allowed) for e in proxy.events] == [
        ("POST", base + "Unary", True),
        ("POST", base + "Stream", True),
        ("POST", base + "Fail", True),
        ("POST", base + "Secret", False),
        ("POST", base + "Big", True),
        ("POST", base + "Unary", True),
    ]
    tunnels = (
        "boundary_audit_proxy_tunnels_total"
        if kind == "tls"
        else ("boundary_audit_proxy_plain_tunnels_total")
    )
    assert proxy.metric(tunnels) == 1

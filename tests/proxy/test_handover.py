"""Responses wait for their request's audit event to be handed over.

With an auditor that can say when an event reached the agent (HandsOver,
like SocketAuditor), no response head goes to the client before the
request's event is handed over: HTTP/1.1 (allowed and 403), the WebSocket
101, each HTTP/2 stream. The auditor here holds every handover until the test
opens a gate, so a response that arrives earlier fails the test. The real
SocketAuditor behind the proxy, killed mid-session, is in
tests/e2e/test_sealed_sessions.py.
"""

from __future__ import annotations

import asyncio
import http.client
import ssl
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar

import httpx
import pytest
import trustme
from websockets.sync.client import connect

from boundary_audit.auditor import HandsOver
from boundary_audit.proxy import CertificateAuthority, ProxyServer, ProxyTimeouts, parse_rules
from tests.support import eventually

from .helpers import CLIENT_TIMEOUT, RecordingAuditor, RunningProxy, Upstream
from .ws_echo import EchoServer, serve_ws

pytestmark = pytest.mark.timeout(60)

#: How long a test watches for a response that must NOT arrive while the
#: handover is held: the proxy answers a loopback request within
#: milliseconds, so this gives it every chance to answer too early.
HELD_S = 0.3

T = TypeVar("T")


class GatedAuditor(RecordingAuditor):
    """Records events; every handover waits until the test opens the gate."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = asyncio.Event()
        #: Marks whose wait has begun, and those released.
        self.waiting: list[int] = []
        self.released: list[int] = []

    def handover_mark(self) -> int:
        return len(self.events)

    async def handed_over(self, mark: int) -> bool:
        self.waiting.append(mark)
        await self.gate.wait()
        self.released.append(mark)
        return True


@pytest.fixture
def gated(ca: CertificateAuthority, upstream_ca_file: str) -> Iterator[Callable[..., RunningProxy]]:
    running: list[RunningProxy] = []

    def make(*rules: str, wait: bool = True) -> RunningProxy:
        auditor = GatedAuditor()
        server = ProxyServer(
            parse_rules(rules),
            auditor,
            ca=ca,
            upstream_ca_file=upstream_ca_file,
            timeouts=ProxyTimeouts(header=2.0, idle=10.0, read=10.0),
            wait_for_handover=wait,
        )
        assert server.hands_over is auditor
        proxy = RunningProxy(server, auditor).start()
        running.append(proxy)
        return proxy

    yield make
    for proxy in running:
        proxy.stop()


def _held_until_released(proxy: RunningProxy, call: Callable[[], T], *, audited: int = 1) -> T:
    """Run ``call`` (a client) in a thread; its answer must wait for the gate."""
    auditor = proxy.auditor
    assert isinstance(auditor, GatedAuditor)
    with ThreadPoolExecutor(1) as pool:
        answer: Future[T] = pool.submit(call)
        eventually(lambda: len(auditor.waiting) >= audited, "the response waiting for its event")
        time.sleep(HELD_S)  # proves the answer is held: it must not arrive meanwhile
        assert not answer.done(), answer.result()
        proxy.loop.call_soon_threadsafe(auditor.gate.set)
        result = answer.result(CLIENT_TIMEOUT)
    assert auditor.released
    return result


def _plain_get(proxy: RunningProxy, url: str) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=CLIENT_TIMEOUT)
    try:
        conn.request("GET", url)
        got = conn.getresponse()
        return got.status, got.read()
    finally:
        conn.close()


def test_an_allowed_http1_response_waits_but_the_upstream_does_not(
    gated: Callable[..., RunningProxy], http_upstream: Upstream
) -> None:
    proxy = gated("domain=127.0.0.1 path=/allowed/*")
    url = http_upstream.url("/allowed/x")

    def get() -> tuple[int, bytes]:
        return _plain_get(proxy, url)

    status, _ = _held_until_released(proxy, get)
    assert status == 200
    # The request went upstream while its event was being handed over.
    assert "/allowed/x" in {hit["raw_path"] for hit in http_upstream.hits}
    auditor = proxy.auditor
    assert isinstance(auditor, GatedAuditor)
    assert auditor.waiting == [1]  # the mark taken right after audit()


def test_a_403_waits_for_the_denied_event(
    gated: Callable[..., RunningProxy], http_upstream: Upstream
) -> None:
    proxy = gated("domain=127.0.0.1 path=/allowed/*")

    def get() -> tuple[int, bytes]:
        return _plain_get(proxy, http_upstream.url("/denied"))

    status, body = _held_until_released(proxy, get)
    assert status == 403
    assert b"--allow" in body
    assert [e.allowed for e in proxy.events] == [False]


def test_each_http2_stream_waits_for_its_event(
    gated: Callable[..., RunningProxy], ca: CertificateAuthority, https_upstream: Upstream
) -> None:
    proxy = gated("domain=127.0.0.1 path=/allowed/*")
    tls = ssl.create_default_context(cafile=str(ca.cert_path))

    def get() -> list[tuple[str, int]]:
        with httpx.Client(http2=True, proxy=proxy.url, verify=tls, timeout=CLIENT_TIMEOUT) as c:
            answers = [c.get(https_upstream.url(p)) for p in ("/allowed/a", "/denied")]
            return [(a.http_version, a.status_code) for a in answers]

    # The first stream is held; once the gate is open the second goes through.
    assert _held_until_released(proxy, get) == [("HTTP/2", 200), ("HTTP/2", 403)]
    assert len(proxy.events) == 2


@pytest.fixture(scope="module")
def ws_server(upstream_ca: trustme.CA) -> Iterator[EchoServer]:
    with serve_ws("ws", upstream_ca) as server:
        yield server


def test_a_websocket_101_waits_for_its_event(
    gated: Callable[..., RunningProxy], ws_server: EchoServer
) -> None:
    proxy = gated("domain=127.0.0.1 path=/echo")

    def talk() -> Any:
        with connect(
            ws_server.uri(), proxy=proxy.url, open_timeout=CLIENT_TIMEOUT, ping_interval=None
        ) as ws:
            ws.send("hello")
            return ws.recv(CLIENT_TIMEOUT)

    assert _held_until_released(proxy, talk) == "hello"
    assert [e.url for e in proxy.events] == [ws_server.uri()]


def test_without_the_wait_an_answer_is_not_held(
    gated: Callable[..., RunningProxy], http_upstream: Upstream
) -> None:
    # run's default (--audit-handover write): the answer goes out at once,
    # while the gate (the handover) stays closed.
    proxy = gated("domain=127.0.0.1 path=/allowed/*", wait=False)
    status, _ = _plain_get(proxy, http_upstream.url("/allowed/y"))
    assert status == 200
    auditor = proxy.auditor
    assert isinstance(auditor, GatedAuditor)
    assert auditor.waiting == []
    assert [e.url for e in auditor.events] == [http_upstream.url("/allowed/y")]


def test_an_auditor_that_cannot_hand_over_is_not_waited_for(
    ca: CertificateAuthority,
) -> None:
    server = ProxyServer(parse_rules(["domain=x.org"]), RecordingAuditor(), ca=ca)
    assert not isinstance(server.auditor, HandsOver)
    assert server.hands_over is None
    assert server.handover_mark() is None

"""Request bodies that go wrong: malformed, cut short, or stalled mid-way.

The fault is the client's, so the client gets a 400 or 408 (or, once the
response has begun, a closed connection), it is counted once as a bad
client, and nothing of it counts as an upstream error, although the
upstream connection is cut under the half-sent request.
"""

from __future__ import annotations

import socket
import time

import h11
import pytest
import requests

from boundary_audit.proxy import ProxyTimeouts
from tests.support import eventually

from .helpers import (
    CLIENT_TIMEOUT,
    STALLED_RESPONSE_START,
    ProxyFactory,
    RunningProxy,
    Upstream,
    body_of,
    read_responses,
    statuses_of,
)

pytestmark = pytest.mark.timeout(60)

BAD_CLIENTS = "boundary_audit_proxy_bad_clients_total"
UPSTREAM_ERRORS = "boundary_audit_proxy_upstream_errors_total"
#: The body timeout of the slow-body tests: short, so they are; the response
#: timeout is far longer, to show which of the two applies.
BODY_TIMEOUT = 0.5
SLOW_BODY_TIMEOUTS = ProxyTimeouts(header=10.0, idle=10.0, read=BODY_TIMEOUT, response=30.0)
#: Declared length of a stalled body, and the part of it the client sends.
DECLARED_LENGTH = 100
SENT_PART = b"0123456789"


def _counted_once_as(proxy: RunningProxy, kind: str) -> None:
    assert proxy.metric(BAD_CLIENTS, kind=kind) == 1
    assert proxy.metric_total(BAD_CLIENTS) == 1, "counted under one kind only"
    assert proxy.metric_total(UPSTREAM_ERRORS) == 0, "not an upstream error"


def _head(upstream: Upstream, path: str, framing: str) -> bytes:
    return f"POST {upstream.url(path)} HTTP/1.1\r\nHost: x\r\n{framing}\r\n\r\n".encode()


@pytest.mark.parametrize(
    ("framing", "sent", "then"),
    [
        pytest.param(
            "Transfer-Encoding: chunked", b"zz\r\nhello\r\n0\r\n\r\n", "wait", id="chunk-size"
        ),
        pytest.param("Transfer-Encoding: chunked", b"a\r\nhel", "half-close", id="truncated-chunk"),
        pytest.param(
            f"Content-Length: {DECLARED_LENGTH}", SENT_PART, "half-close", id="short-body"
        ),
    ],
)
def test_malformed_body_gets_400_and_is_counted_once_as_a_bad_client(
    make_proxy: ProxyFactory, http_upstream: Upstream, framing: str, sent: bytes, then: str
) -> None:
    proxy = make_proxy("domain=127.0.0.1")
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=CLIENT_TIMEOUT) as sock:
        sock.sendall(_head(http_upstream, "/upload", framing) + sent)
        if then == "half-close":
            sock.shutdown(socket.SHUT_WR)  # the body ends early; the answer can still come
        events = read_responses(sock)
    assert statuses_of(events) == [400]
    _counted_once_as(proxy, "malformed_body")
    assert [e.allowed for e in proxy.events] == [True]  # decided before the body came
    assert http_upstream.hits == [], "a half-sent request never passed for a whole one"


def test_short_body_from_a_client_that_hung_up_is_counted_once(
    make_proxy: ProxyFactory, http_upstream: Upstream
) -> None:
    proxy = make_proxy("domain=127.0.0.1")
    framing = f"Content-Length: {DECLARED_LENGTH}"
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=CLIENT_TIMEOUT) as sock:
        sock.sendall(_head(http_upstream, "/upload", framing) + SENT_PART)
    eventually(lambda: proxy.metric(BAD_CLIENTS, kind="malformed_body") == 1, "the cut body")
    eventually(lambda: proxy.metric("boundary_audit_proxy_active_connections") == 0, "the close")
    _counted_once_as(proxy, "malformed_body")


def test_stalled_body_gets_408_after_the_body_timeout_while_others_are_served(
    make_proxy: ProxyFactory, http_upstream: Upstream
) -> None:
    proxy = make_proxy("domain=127.0.0.1", timeouts=SLOW_BODY_TIMEOUTS)
    framing = f"Content-Length: {DECLARED_LENGTH}"
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=CLIENT_TIMEOUT) as slow:
        started = time.monotonic()
        slow.sendall(_head(http_upstream, "/upload", framing) + SENT_PART)
        # While the body stalls, others are served normally.
        for _ in range(3):
            ok = requests.get(http_upstream.url("/fine"), proxies={"http": proxy.url}, timeout=10)
            assert ok.status_code == 200
        events = read_responses(slow)
        waited = time.monotonic() - started
    assert statuses_of(events) == [408]
    assert BODY_TIMEOUT <= waited < SLOW_BODY_TIMEOUTS.response
    _counted_once_as(proxy, "slow_body")
    assert [hit["raw_path"] for hit in http_upstream.hits] == ["/fine"] * 3


def test_body_stalling_after_the_response_began_cuts_the_connection(
    make_proxy: ProxyFactory, http_upstream: Upstream
) -> None:
    """An upstream that answers before reading the body: once the response
    has begun, only closing the connection can tell the client."""
    proxy = make_proxy("domain=127.0.0.1", timeouts=SLOW_BODY_TIMEOUTS)
    framing = f"Content-Length: {DECLARED_LENGTH}"
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=CLIENT_TIMEOUT) as sock:
        sock.sendall(_head(http_upstream, "/stall-mid-response", framing) + SENT_PART)
        events = read_responses(sock)
    assert statuses_of(events) == [200]
    assert body_of(events) == STALLED_RESPONSE_START
    assert not any(isinstance(e, h11.EndOfMessage) for e in events), "cut, not completed"
    _counted_once_as(proxy, "slow_body")

"""The proxy's pure HTTP logic, without sockets: targets and headers."""

from __future__ import annotations

import ipaddress
import string
from typing import Any

import h11
import pytest
from hypothesis import given
from hypothesis import strategies as st

from boundary_audit.proxy import SEQUENCE_NUMBER_HEADER, SESSION_ID_HEADER, SessionHeaders
from boundary_audit.proxy.http import (
    HOP_BY_HOP,
    VIA,
    Target,
    TargetError,
    authority,
    client_response_headers,
    connect_target,
    denied_text,
    has_ambiguous_framing,
    has_no_body,
    plain_target,
    request_target,
    split_authority,
    strip_hop_by_hop,
    text_response,
    tunnel_target,
    upstream_request_headers,
)

# -- strategies ------------------------------------------------------------------------

TOKEN_CHARS = string.ascii_lowercase + string.digits + "-"
#: Header names as h11 hands them over: lower-case tokens.
NAMES = st.one_of(
    st.sampled_from(sorted(HOP_BY_HOP)),
    st.sampled_from([b"host", b"content-length", b"x-trace", b"accept", b"cookie"]),
    st.text(TOKEN_CHARS, min_size=1, max_size=12).map(str.encode),
)
VALUES = st.text(string.ascii_letters + string.digits + " ,;=/", max_size=20).map(str.encode)
HEADERS = st.lists(st.tuples(NAMES, VALUES), max_size=12)
LABELS = st.text(string.ascii_lowercase + string.digits, min_size=1, max_size=10)
DNS_HOSTS = st.lists(LABELS, min_size=1, max_size=4).map(".".join)
IPV4_HOSTS = st.ip_addresses(v=4).map(str)
IPV6_HOSTS = st.ip_addresses(v=6).map(lambda a: ipaddress.IPv6Address(a).compressed)
HOSTS = st.one_of(DNS_HOSTS, IPV4_HOSTS, IPV6_HOSTS)
PORTS = st.integers(min_value=1, max_value=65535)
PATHS = st.lists(st.text(string.ascii_letters + string.digits + "-._~%", max_size=8)).map(
    lambda segments: "/" + "/".join(segments)
)
QUERIES = st.one_of(st.just(""), st.text(string.ascii_letters + string.digits + "=&", max_size=12))


# -- hop-by-hop headers ----------------------------------------------------------------


@given(headers=HEADERS, named=st.lists(NAMES, max_size=4))
def test_hop_by_hop_stripping_never_leaks_a_header_connection_names(
    headers: list[tuple[bytes, bytes]], named: list[bytes]
) -> None:
    sent = [(b"connection", b", ".join(named)), *headers]
    # Every token of every Connection header (the generated ones too).
    listed = {
        token.strip().lower()
        for name, value in sent
        if name == b"connection"
        for token in value.split(b",")
        if token.strip()
    }
    stripped = strip_hop_by_hop(sent)
    names = {k for k, _ in stripped}
    assert not names & HOP_BY_HOP
    assert not names & listed
    # Everything else passes, in its order.
    assert stripped == [(k, v) for k, v in sent if k not in HOP_BY_HOP | listed]


@given(headers=HEADERS)
def test_forwarded_headers_never_carry_hop_by_hop_headers(
    headers: list[tuple[bytes, bytes]],
) -> None:
    target = Target("http", "example.test", 80, "/", "http://example.test/")
    for out in (upstream_request_headers(headers, target), client_response_headers(headers)):
        hop = {k for k, _ in out} & HOP_BY_HOP
        assert hop <= {b"transfer-encoding"}  # only the one h11 needs, re-added by us
        assert out[-1] == (b"via", VIA) or out[-1][0] == b"transfer-encoding"


def test_connection_tokens_are_matched_case_and_space_insensitively() -> None:
    headers = [
        (b"connection", b" Keep-Alive ,X-Secret"),
        (b"x-secret", b"1"),
        (b"keep-alive", b"timeout=5"),
        (b"x-kept", b"2"),
    ]
    assert strip_hop_by_hop(headers) == [(b"x-kept", b"2")]


# -- headers sent on -------------------------------------------------------------------


def test_upstream_request_headers_name_the_target_and_reframe_chunked_bodies() -> None:
    target = Target("https", "api.example.test", 8443, "/x", "https://api.example.test:8443/x")
    headers = [
        (b"host", b"ignored.example"),
        (b"transfer-encoding", b"chunked"),
        (b"content-length", b"5"),
        (b"x-end", b"kept"),
    ]
    assert upstream_request_headers(headers, target) == [
        (b"host", b"api.example.test:8443"),
        (b"x-end", b"kept"),
        (b"transfer-encoding", b"chunked"),
        (b"via", VIA),
    ]


def test_session_headers_replace_what_the_client_sent() -> None:
    target = Target("http", "a.example", 80, "/", "http://a.example/")
    forged = [
        (SESSION_ID_HEADER.lower().encode(), b"forged"),
        (SEQUENCE_NUMBER_HEADER.lower().encode(), b"999"),
    ]
    out = upstream_request_headers(forged, target, ("5f0c1a3e", 7))
    assert out == [
        (b"host", b"a.example"),
        (b"via", VIA),
        (SESSION_ID_HEADER.encode(), b"5f0c1a3e"),
        (SEQUENCE_NUMBER_HEADER.encode(), b"7"),
    ]
    # Without a session, the client's headers are its own business.
    assert upstream_request_headers(forged, target)[1:3] == forged


def test_client_response_headers_let_h11_frame_the_body() -> None:
    headers = [(b"content-length", b"3"), (b"transfer-encoding", b"chunked"), (b"x-a", b"1")]
    assert client_response_headers(headers) == [(b"x-a", b"1"), (b"via", VIA)]
    sized = [(b"content-length", b"3")]
    assert client_response_headers(sized) == [(b"content-length", b"3"), (b"via", VIA)]


@pytest.mark.parametrize(
    ("headers", "no_body"),
    [
        ([], True),
        ([(b"content-length", b"0")], True),
        ([(b"content-length", b"5")], False),
        ([(b"transfer-encoding", b"chunked")], False),
        ([(b"content-length", b"0"), (b"content-length", b"0")], True),
    ],
)
def test_has_no_body(headers: list[tuple[bytes, bytes]], no_body: bool) -> None:
    assert has_no_body(headers) is no_body


def test_both_framing_headers_are_ambiguous() -> None:
    assert has_ambiguous_framing([(b"content-length", b"5"), (b"transfer-encoding", b"chunked")])
    assert not has_ambiguous_framing([(b"content-length", b"5")])
    assert not has_ambiguous_framing([(b"transfer-encoding", b"chunked")])


# -- targets ---------------------------------------------------------------------------


@given(host=HOSTS, port=PORTS, scheme=st.sampled_from(["http", "https"]))
def test_authority_round_trips(host: str, port: int, scheme: str) -> None:
    default = 80 if scheme == "http" else 443
    assert split_authority(authority(host, port, scheme), default) == (host, port)


@given(host=HOSTS, port=PORTS, path=PATHS, query=QUERIES)
def test_plain_target_round_trips(host: str, port: int, path: str, query: str) -> None:
    url = f"http://{authority(host, port, 'http')}{path}" + (f"?{query}" if query else "")
    target = plain_target(url)
    assert (target.scheme, target.host, target.port) == ("http", host, port)
    assert target.path == path + (f"?{query}" if query else "")
    assert target.url == url
    assert target.misdirected is None


@given(host=HOSTS, port=PORTS)
def test_connect_target_round_trips(host: str, port: int) -> None:
    shown = f"[{host}]" if ":" in host else host
    assert connect_target(f"{shown}:{port}".encode()) == (host, port)


def test_hosts_are_normalised() -> None:
    assert plain_target("http://API.Example.TEST./x").host == "api.example.test"
    assert connect_target(b"API.Example.test.:443") == ("api.example.test", 443)


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ("/x", "absolute URL"),
        ("https://a.example/", "use CONNECT"),
        ("http://user:pw@a.example/", "credentials"),
        ("*", "only http:// URLs"),
        ("http://a.example:99999/", "malformed request URL"),
    ],
)
def test_unproxyable_plain_targets_say_why(raw: str, reason: str) -> None:
    with pytest.raises(TargetError, match=reason):
        plain_target(raw)


@pytest.mark.parametrize(
    "raw", [b"a.example", b"a.example:notaport", b"user@a.example:1", b"\xff:1"]
)
def test_malformed_connect_targets(raw: bytes) -> None:
    with pytest.raises(TargetError, match="host:port"):
        connect_target(raw)


def test_tunnel_target_uses_the_host_header_and_flags_fronting() -> None:
    target = tunnel_target("/p?q=1", b"Api.Example.test", "api.example.test", 443)
    assert target == Target(
        "https", "api.example.test", 443, "/p?q=1", "https://api.example.test/p?q=1"
    )
    fronted = tunnel_target("/", b"elsewhere.test:8443", "api.example.test", 8443)
    assert fronted.url == "https://elsewhere.test:8443/"
    assert (
        fronted.misdirected == "Host elsewhere.test does not match the tunnel to api.example.test"
    )
    with pytest.raises(TargetError, match="origin-form"):
        tunnel_target("http://a.example/", b"a.example", "a.example", 443)
    with pytest.raises(TargetError, match="Host header"):
        tunnel_target("/", b"", "a.example", 443)


def test_request_target_picks_the_form_by_tunnel() -> None:
    request = h11.Request(method="GET", target="/x", headers=[("host", "a.example")])
    assert request_target(request, ("a.example", 443)).url == "https://a.example/x"
    with pytest.raises(TargetError, match="absolute URL"):
        request_target(request, None)


# -- answers of our own ----------------------------------------------------------------


def test_text_response_is_framed_and_says_via() -> None:
    response, body = text_response(403, "nö\n", close=True)
    assert response.status_code == 403
    assert body == "nö\n".encode()
    assert (b"content-length", str(len(body)).encode()) in response.headers
    assert (b"via", VIA) in response.headers
    assert (b"connection", b"close") in response.headers
    assert (b"connection", b"close") not in text_response(200, "")[0].headers


def test_denied_text_suggests_a_rule() -> None:
    text = denied_text("POST", "http://127.0.0.1:8080/admin/users")
    assert "POST http://127.0.0.1:8080/admin/users" in text
    assert '--allow "method=POST domain=127.0.0.1 path=/admin/users"' in text


# -- session headers -------------------------------------------------------------------


def test_session_headers_cover_a_domain_and_its_subdomains() -> None:
    session = SessionHeaders.of(["API.example.com."], "id-1")
    assert session.id_for("GET", "https://api.example.com/x") == "id-1"
    assert session.id_for("POST", "https://eu.api.example.com/") == "id-1"
    assert session.id_for("GET", "https://evilapi.example.com/") is None
    assert session.id_for("GET", "https://example.com/") is None
    assert SessionHeaders.of([], None).id_for("GET", "https://api.example.com/") is None
    with pytest.raises(ValueError, match="session_id"):
        SessionHeaders.of(["x"], None)


def test_inject_targets_take_coders_format_with_paths() -> None:
    session = SessionHeaders.of(
        session_id="id-2", targets=["domain=dev.coder.example path=/api/v2/aibridge/*"]
    )
    assert session.names == (SESSION_ID_HEADER, SEQUENCE_NUMBER_HEADER)
    assert SESSION_ID_HEADER == "X-Coder-Agent-Firewall-Session-Id"
    assert session.id_for("POST", "https://dev.coder.example/api/v2/aibridge/v1/chat") == "id-2"
    assert session.id_for("POST", "https://dev.coder.example/api/v2/users") is None
    # The path is read as servers read it: no '..' or '//' escapes a target.
    assert session.id_for("GET", "https://dev.coder.example/api/v2/aibridge/../users") is None
    assert session.id_for("GET", "https://dev.coder.example/api/v2/aibridge//../x") is None
    assert session.id_for("GET", "https://sub.dev.coder.example/api/v2/aibridge/x") is None


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"targets": ["path=/x"]}, "names no domain"),
        ({"targets": ["domian=x"]}, "inject target"),
        ({"targets": ["domain=x"], "session_id_header": "Bad Name"}, "header name"),
        (
            {"targets": ["domain=x"], "session_id_header": "X-A", "sequence_number_header": "x-a"},
            "must differ",
        ),
    ],
)
def test_bad_inject_settings_are_refused(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        SessionHeaders.of(session_id="id", **options)


def test_configured_header_names_are_sent_and_replace_forged_copies() -> None:
    target = Target("http", "a.example", 80, "/", "http://a.example/")
    forged = [(b"x-sid", b"forged"), (b"x-seq", b"999")]
    out = upstream_request_headers(forged, target, ("5f0c", 3), ("X-Sid", "X-Seq"))
    assert out == [(b"host", b"a.example"), (b"via", VIA), (b"X-Sid", b"5f0c"), (b"X-Seq", b"3")]

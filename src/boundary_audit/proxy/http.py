"""The proxy's HTTP/1.1 logic without I/O: where a request goes and what travels on.

Request targets become a :class:`Target` (or a :class:`TargetError` saying
why the request cannot be proxied), and header lists become the ones sent on
to the other side: hop-by-hop headers dropped, framing left to h11, ``Via``
added. Everything here takes and returns plain values, so it is tested
without sockets; ``server`` does the I/O.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

import h11

from .config import SEQUENCE_NUMBER_HEADER, SESSION_ID_HEADER
from .rules import normalize_host, suggest_rule

Headers = Sequence[tuple[bytes, bytes]]
HeaderList = list[tuple[bytes, bytes]]

#: Headers that describe one hop, never forwarded (RFC 9110 7.6.1, plus the
#: proxy credentials and the non-standard Proxy-Connection).
HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"proxy-connection",
        b"keep-alive",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
        b"proxy-authorization",
        b"proxy-authenticate",
    }
)
#: Our ``Via`` entry (RFC 9110 7.6.3), on every message we pass on or make.
VIA = b"1.1 boundary-audit"
DEFAULT_PORTS = {"http": 80, "https": 443}


class TargetError(ValueError):
    """The request cannot be proxied at all; the message is the client's 400 text."""


@dataclass(frozen=True, slots=True)
class Target:
    """Where one request goes and how it is written in the audit trail.

    ``misdirected`` is set when the request names another host than the
    tunnel it came through: it is audited (as denied) and answered 421.
    """

    scheme: str
    host: str
    port: int
    path: str
    url: str
    misdirected: str | None = None


def header_tokens(headers: Headers, name: bytes) -> set[bytes]:
    """The lower-cased comma-separated tokens of every ``name`` header."""
    tokens: set[bytes] = set()
    for key, value in headers:
        if key == name:
            tokens.update(t.strip().lower() for t in value.split(b",") if t.strip())
    return tokens


def strip_hop_by_hop(headers: Headers) -> HeaderList:
    """Drop hop-by-hop headers, including those the Connection header names."""
    drop = HOP_BY_HOP | header_tokens(headers, b"connection")
    return [(k, v) for k, v in headers if k not in drop]


def _end_to_end(headers: Headers) -> tuple[HeaderList, bool]:
    """The headers to pass on, and whether the message was chunked.

    A chunked message's Content-Length is dropped too (RFC 9112 6.3:
    Transfer-Encoding overrides it), so the framing h11 writes is the only one.
    """
    chunked = b"chunked" in header_tokens(headers, b"transfer-encoding")
    kept = strip_hop_by_hop(headers)
    if chunked:
        kept = [(k, v) for k, v in kept if k != b"content-length"]
    return kept, chunked


def upstream_request_headers(
    headers: Headers,
    target: Target,
    session: tuple[str, int] | None = None,
    names: tuple[str, str] = (SESSION_ID_HEADER, SEQUENCE_NUMBER_HEADER),
) -> HeaderList:
    """A client request's headers as sent upstream.

    ``Host`` is the target's authority (absolute-form wins over the client's
    Host header, RFC 9112 3.2.2); ``session`` is ``(session id, sequence
    number)`` to send in the correlation headers ``names`` (session id
    header, sequence number header), replacing any the client sent.
    """
    kept, chunked = _end_to_end(headers)
    out = [(k, v) for k, v in kept if k != b"host"]
    out.insert(0, (b"host", authority(target.host, target.port, target.scheme).encode()))
    if chunked:
        out.append((b"transfer-encoding", b"chunked"))
    out.append((b"via", VIA))
    if session is not None:
        session_id, sequence = session
        id_name, sequence_name = names
        drop = {id_name.lower().encode(), sequence_name.lower().encode()}
        out = [(k, v) for k, v in out if k not in drop]
        out.append((id_name.encode(), session_id.encode()))
        out.append((sequence_name.encode(), str(sequence).encode()))
    return out


def client_response_headers(headers: Headers) -> HeaderList:
    """An upstream response's headers as sent to the client (h11 reframes the body)."""
    kept, _ = _end_to_end(headers)
    kept.append((b"via", VIA))
    return kept


def has_no_body(headers: Headers) -> bool:
    """True when h11 frames the request with an empty body (RFC 9112 6.3)."""
    if header_tokens(headers, b"transfer-encoding"):
        return False
    lengths = header_tokens(headers, b"content-length")
    return not lengths or lengths == {b"0"}


def has_ambiguous_framing(headers: Headers) -> bool:
    """Both Content-Length and Transfer-Encoding: a classic request-smuggling
    shape (RFC 9112 6.1), refused outright."""
    names = {k for k, _ in headers}
    return b"content-length" in names and b"transfer-encoding" in names


def authority(host: str, port: int, scheme: str) -> str:
    """``host[:port]`` as written in a URL or Host header (IPv6 in brackets,
    the scheme's default port left out)."""
    shown = f"[{host}]" if ":" in host else host
    return shown if DEFAULT_PORTS.get(scheme) == port else f"{shown}:{port}"


def split_authority(text: str, default_port: int | None) -> tuple[str, int]:
    """``host[:port]`` (IPv6 in brackets) to a host and port; ValueError if malformed.

    With ``default_port`` None the port is required (CONNECT's authority-form).
    """
    parts = urlsplit("//" + text)
    if parts.hostname is None or parts.username is not None or parts.path:
        raise ValueError(f"malformed authority {text!r}")
    port = parts.port or default_port
    if port is None:
        raise ValueError(f"authority {text!r} lacks a port")
    return parts.hostname, port


def connect_target(raw: bytes) -> tuple[str, int]:
    """The host (normalised) and port a CONNECT request asks for."""
    try:
        host, port = split_authority(raw.decode("ascii"), None)
    except (ValueError, UnicodeDecodeError):
        raise TargetError("CONNECT target must be host:port") from None
    return normalize_host(host), port


def plain_target(raw: str) -> Target:
    """The target of a plain-HTTP request to the proxy (absolute-form ``http://``)."""
    if raw.startswith("/"):
        raise TargetError("this is a proxy: send the absolute URL (http://host/path)")
    try:
        parts = urlsplit(raw)
        port = parts.port or DEFAULT_PORTS["http"]
    except ValueError:
        raise TargetError("malformed request URL") from None
    if parts.scheme.lower() != "http" or not parts.hostname:
        raise TargetError("only http:// URLs can be proxied directly; use CONNECT for https")
    if parts.username is not None or parts.password is not None:
        raise TargetError("credentials in the request URL are not supported")
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    return Target("http", normalize_host(parts.hostname), port, path, raw)


def tunnel_target(
    raw: str, host_header: bytes, tunnel_host: str, tunnel_port: int, scheme: str = "https"
) -> Target:
    """The target of a request inside a CONNECT tunnel (origin-form plus Host);
    ``scheme`` is ``http`` when the tunnel carries plain HTTP, not TLS."""
    if not raw.startswith("/"):
        raise TargetError("requests inside a tunnel must use origin-form (/path)")
    try:
        named, _ = split_authority(host_header.decode("latin-1"), tunnel_port)
    except ValueError:
        raise TargetError("missing or malformed Host header") from None
    named = normalize_host(named)
    url = f"{scheme}://{authority(named, tunnel_port, scheme)}{raw}"
    # Domain fronting: the tunnel goes to one host, the request names
    # another; refuse rather than guess which one counts.
    misdirected = (
        None
        if named == tunnel_host
        else (f"Host {named} does not match the tunnel to {tunnel_host}")
    )
    return Target(scheme, named, tunnel_port, raw, url, misdirected)


def request_target(
    request: h11.Request, tunnel: tuple[str, int] | None, scheme: str = "https"
) -> Target:
    """Where ``request`` goes: through ``tunnel`` (host, port) carrying
    ``scheme``, or plain HTTP in absolute-form."""
    raw = request.target.decode("latin-1")
    if tunnel is None:
        return plain_target(raw)
    host_header = next((v for k, v in request.headers if k == b"host"), b"")
    return tunnel_target(raw, host_header, *tunnel, scheme)


#: The first byte of a TLS record carrying a handshake (RFC 8446 5.1): how a
#: tunnel that starts with a ClientHello is told from one carrying plain HTTP.
TLS_HANDSHAKE_RECORD = 0x16
#: The WebSocket scheme of each HTTP scheme, for the audit trail (RFC 6455 3).
WEBSOCKET_SCHEMES = {"http": "ws", "https": "wss"}


def is_websocket_upgrade(method: bytes, headers: Headers) -> bool:
    """A WebSocket opening handshake (RFC 6455 4.1): GET with ``Upgrade:
    websocket`` and ``Connection: upgrade``."""
    return (
        method == b"GET"
        and b"websocket" in header_tokens(headers, b"upgrade")
        and b"upgrade" in header_tokens(headers, b"connection")
    )


def websocket_url(target: Target) -> str:
    """The ``ws://`` or ``wss://`` URL of an upgrade request to ``target``."""
    scheme, rest = target.url.split("://", 1)
    return f"{WEBSOCKET_SCHEMES.get(scheme.lower(), scheme)}://{rest}"


#: What makes a request or a 101 an upgrade to WebSocket; hop-by-hop, so
#: written anew on each hop.
_UPGRADE_HEADERS = [(b"connection", b"Upgrade"), (b"upgrade", b"websocket")]


def upgrade_request_headers(
    headers: Headers,
    target: Target,
    session: tuple[str, int] | None = None,
    names: tuple[str, str] = (SESSION_ID_HEADER, SEQUENCE_NUMBER_HEADER),
) -> HeaderList:
    """A WebSocket upgrade request's headers as sent upstream: the usual
    end-to-end headers (``Sec-WebSocket-*`` among them) plus the upgrade."""
    return [*upstream_request_headers(headers, target, session, names), *_UPGRADE_HEADERS]


def upgrade_response_headers(headers: Headers) -> HeaderList:
    """The upstream's 101 as sent to the client: end-to-end headers
    (``Sec-WebSocket-Accept``, the agreed protocol and extensions), the upgrade, ``Via``."""
    return [*strip_hop_by_hop(headers), *_UPGRADE_HEADERS, (b"via", VIA)]


def text_response(status: int, text: str, *, close: bool = False) -> tuple[h11.Response, bytes]:
    """A small text/plain response the proxy answers itself: head and body."""
    body = text.encode("utf-8")
    headers = [
        (b"content-type", b"text/plain; charset=utf-8"),
        (b"content-length", str(len(body)).encode()),
        (b"via", VIA),
    ]
    if close:
        headers.append((b"connection", b"close"))
    return h11.Response(status_code=status, headers=headers), body


def denied_text(method: str, url: str) -> str:
    """The 403 body: what was blocked and a rule that would allow it."""
    try:
        example = f'  --allow "{suggest_rule(method, url)}"'
    except ValueError as exc:
        example = f"  (no rule can name this host: {exc})"
    return (
        "boundary-audit: request blocked by the allow rules\n"
        f"  {method} {url}\n"
        "To allow it, add a rule such as:\n"
        f"{example}\n"
    )


__all__ = [
    "HOP_BY_HOP",
    "TLS_HANDSHAKE_RECORD",
    "VIA",
    "Target",
    "TargetError",
    "authority",
    "client_response_headers",
    "connect_target",
    "denied_text",
    "has_ambiguous_framing",
    "has_no_body",
    "header_tokens",
    "is_websocket_upgrade",
    "plain_target",
    "request_target",
    "split_authority",
    "strip_hop_by_hop",
    "text_response",
    "tunnel_target",
    "upgrade_request_headers",
    "upgrade_response_headers",
    "upstream_request_headers",
    "websocket_url",
]

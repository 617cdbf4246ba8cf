"""Settings of the proxy: timeouts, size limits and the session-correlation headers."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from .rules import normalize_host

#: Correlation headers added to allowed requests for ``session_header_domains``.
SESSION_ID_HEADER = "X-Boundary-Session-Id"
SEQUENCE_NUMBER_HEADER = "X-Boundary-Sequence-Number"

#: Largest request or response head accepted (h11 ``max_incomplete_event_size``);
#: 64 KiB is the upper end of what common servers allow, so real clients fit and
#: a client streaming headers forever gets a 431 instead of our memory.
MAX_HEADER_BYTES = 64 * 1024
#: Socket read size: large enough that per-chunk Python overhead stays small
#: against the copy cost (hundreds of MB/s), small enough to bound per-connection memory.
READ_CHUNK = 256 * 1024
#: Bytes of a denied request's body we read so the connection can be reused;
#: anything bigger is cheaper to cut off by closing.
DENIED_BODY_DRAIN_LIMIT = 64 * 1024

# Timeouts in seconds.
#: A keep-alive client may sit idle between requests this long.
IDLE_TIMEOUT = 60.0
#: From the first byte of a request head to its end: slow-loris clients get 408.
HEADER_TIMEOUT = 10.0
#: Silence while a body is streaming in either direction (a stalled request
#: body gets 408, or its connection cut when the response has begun).
READ_TIMEOUT = 60.0
#: TCP (+ TLS) connection set-up to an upstream server.
CONNECT_TIMEOUT = 10.0
#: TLS handshake with the client inside a CONNECT tunnel.
TLS_HANDSHAKE_TIMEOUT = 10.0
#: Upstream's time to start answering after the request head was sent.
RESPONSE_TIMEOUT = 120.0
#: A WebSocket silent both ways this long is closed: long enough for agents
#: that keep one open across a slow tool call (clients ping every 20-30 s),
#: short enough that an abandoned one does not hold two sockets for hours.
WEBSOCKET_IDLE_TIMEOUT = 300.0
#: Bytes one WebSocket may carry, both directions together, before the proxy
#: cuts it: far above an agent's session (model traffic is text), low enough
#: that a confined command cannot turn one allowed upgrade into an unmetered
#: bulk channel.
WEBSOCKET_MAX_BYTES = 4 * 1024**3


@dataclass(frozen=True, slots=True)
class ProxyTimeouts:
    """Every timeout the proxy applies, in seconds (see the module constants)."""

    idle: float = IDLE_TIMEOUT
    header: float = HEADER_TIMEOUT
    read: float = READ_TIMEOUT
    connect: float = CONNECT_TIMEOUT
    tls_handshake: float = TLS_HANDSHAKE_TIMEOUT
    response: float = RESPONSE_TIMEOUT
    websocket_idle: float = WEBSOCKET_IDLE_TIMEOUT


@dataclass(frozen=True, slots=True)
class SessionHeaders:
    """Which upstream hosts get :data:`SESSION_ID_HEADER` and
    :data:`SEQUENCE_NUMBER_HEADER`, and the session id they carry.

    A domain covers itself and its subdomains; no domains, no headers.
    """

    domains: tuple[str, ...] = ()
    session_id: str | None = None

    @classmethod
    def of(cls, domains: Iterable[str], session_id: str | None) -> SessionHeaders:
        """Normalised domains; ValueError when there are domains but no id to send."""
        normal = tuple(normalize_host(d) for d in domains)
        if normal and not session_id:
            raise ValueError("session_header_domains needs a session_id to send")
        return cls(normal, session_id)

    def id_for(self, host: str) -> str | None:
        """The session id to send to ``host`` (normalised), or None for no headers."""
        if any(host == d or host.endswith("." + d) for d in self.domains):
            return self.session_id
        return None


__all__ = [
    "SEQUENCE_NUMBER_HEADER",
    "SESSION_ID_HEADER",
    "WEBSOCKET_IDLE_TIMEOUT",
    "WEBSOCKET_MAX_BYTES",
    "ProxyTimeouts",
    "SessionHeaders",
]

"""Settings of the proxy: timeouts, size limits and the session-correlation headers."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from .rules import RuleParseError, RuleSet, normalize_host, parse_rule

#: Default correlation header names: the ones Coder's AI gateway reads
#: (configurable, :class:`SessionHeaders`).
SESSION_ID_HEADER = "X-Coder-Agent-Firewall-Session-Id"
SEQUENCE_NUMBER_HEADER = "X-Coder-Agent-Firewall-Sequence-Number"

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


#: An HTTP header name (RFC 9110 5.1: a token).
_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")


@dataclass(frozen=True, slots=True)
class SessionHeaders:
    """Which allowed requests carry the session id and sequence number, and
    under which header names.

    ``targets`` are inject targets in the allow-rule format (Coder's
    ``session_id_inject_targets``: a ``domain=`` and optionally a ``path=``);
    a request gets the headers when one of them matches it, path readings
    and all, exactly as an allow rule would. No targets, no headers.
    """

    targets: RuleSet = field(default_factory=RuleSet)
    session_id: str | None = None
    session_id_header: str = SESSION_ID_HEADER
    sequence_number_header: str = SEQUENCE_NUMBER_HEADER

    @classmethod
    def of(
        cls,
        domains: Iterable[str] = (),
        session_id: str | None = None,
        *,
        targets: Iterable[str] = (),
        session_id_header: str = SESSION_ID_HEADER,
        sequence_number_header: str = SEQUENCE_NUMBER_HEADER,
    ) -> SessionHeaders:
        """From whole ``domains`` (each with its subdomains) and inject
        ``targets``; ValueError for a target without a domain, a bad header
        name, or targets but no id to send."""
        texts: list[str] = []
        for domain in domains:
            name = normalize_host(domain)
            texts += [f"domain={name}", f"domain=*.{name}"]
        texts += list(targets)
        rules = []
        for text in dict.fromkeys(texts):
            try:
                rule = parse_rule(text)
            except RuleParseError as exc:
                raise ValueError(f"inject target {text!r}: {exc}") from None
            if rule.domain is None:
                raise ValueError(f"inject target {text!r} names no domain=; a domain is required")
            rules.append(rule)
        if rules and not session_id:
            raise ValueError("session headers need a session_id to send")
        for header in (session_id_header, sequence_number_header):
            if not _HEADER_NAME.fullmatch(header):
                raise ValueError(f"{header!r} is not an HTTP header name")
        if session_id_header.lower() == sequence_number_header.lower():
            raise ValueError("the session id and sequence number headers must differ")
        return cls(RuleSet(rules), session_id, session_id_header, sequence_number_header)

    @property
    def names(self) -> tuple[str, str]:
        return self.session_id_header, self.sequence_number_header

    def id_for(self, method: str, url: str) -> str | None:
        """The session id to send with ``method`` ``url``, or None for no headers."""
        if self.session_id is None or not self.targets.rules:
            return None
        return self.session_id if self.targets.evaluate(method, url).allowed else None


__all__ = [
    "SEQUENCE_NUMBER_HEADER",
    "SESSION_ID_HEADER",
    "WEBSOCKET_IDLE_TIMEOUT",
    "WEBSOCKET_MAX_BYTES",
    "ProxyTimeouts",
    "SessionHeaders",
]

"""One exception for everything that can go wrong in an exchange: :class:`ProxyFault`.

A fault says which side failed (the client or the upstream server), its kind
(the label of ``boundary_audit_proxy_bad_clients_total`` or
``..._upstream_errors_total``) and the HTTP status the client gets if nothing
of the response has been sent yet. Turning a fault into a counter, a log line
and an answer happens in one place, ``server._ClientConnection._fail``.
"""

from __future__ import annotations

from enum import Enum, StrEnum


class Side(Enum):
    """Whose fault: the client's (bad_clients) or the upstream server's (upstream_errors)."""

    CLIENT = "client"
    UPSTREAM = "upstream"


class FaultKind(StrEnum):
    """The metric label of every fault, defined once."""

    # The client's.
    MALFORMED = "malformed"
    OVERSIZED_HEAD = "oversized_head"
    SLOW_HEAD = "slow_head"
    AMBIGUOUS_FRAMING = "ambiguous_framing"
    MALFORMED_BODY = "malformed_body"
    SLOW_BODY = "slow_body"
    EARLY_TUNNEL_DATA = "early_tunnel_data"
    TLS_HANDSHAKE = "tls_handshake"
    CONNECTION_CUT = "connection_cut"
    #: A bug in the proxy: it costs the one connection (counted as a bad client).
    INTERNAL_ERROR = "internal_error"
    # The upstream server's.
    CONNECT = "connect"
    CONNECT_TIMEOUT = "connect_timeout"
    TLS = "tls"
    TLS_VERIFY = "tls_verify"
    WRITE = "write"
    WRITE_TIMEOUT = "write_timeout"
    READ = "read"
    READ_TIMEOUT = "read_timeout"
    PROTOCOL = "protocol"
    #: A kept-alive connection the server had closed; the request was retried.
    STALE_CONNECTION = "stale_connection"


#: Upstream failures that on a reused connection mean "the server had closed it".
RETRYABLE_KINDS = frozenset({FaultKind.READ, FaultKind.WRITE, FaultKind.PROTOCOL})


class ProxyFault(Exception):
    """``side`` failed with ``kind``; ``status`` is the client's answer if the
    response has not begun (``None``: nothing can be answered, the connection
    ends)."""

    def __init__(self, side: Side, kind: FaultKind, status: int | None, message: str) -> None:
        super().__init__(message)
        self.side = side
        self.kind = kind
        self.status = status

    @classmethod
    def client(cls, kind: FaultKind, status: int | None, message: str) -> ProxyFault:
        return cls(Side.CLIENT, kind, status, message)

    @classmethod
    def upstream(cls, kind: FaultKind, status: int, message: str) -> ProxyFault:
        return cls(Side.UPSTREAM, kind, status, message)

    def __repr__(self) -> str:
        return f"ProxyFault({self.side.value}, {self.kind.value}, {self.status}, {str(self)!r})"


__all__ = ["RETRYABLE_KINDS", "FaultKind", "ProxyFault", "Side"]

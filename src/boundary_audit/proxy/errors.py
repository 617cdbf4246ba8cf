"""One exception for everything that can go wrong in an exchange: :class:`ProxyFault`.

A fault says which side failed (the client or the upstream server), its kind
(the label of ``boundary_audit_proxy_bad_clients_total`` or
``..._upstream_errors_total``) and the HTTP status the client gets if nothing
of the response has been sent yet. Turning a fault into a counter, a log line
and an answer happens in one place, ``client.ClientConnection._fail``; which
exception of which operation is which fault is written once too, in the
tables below (:data:`UPSTREAM_READ` and the rest, each a :class:`FaultTable`).
"""

from __future__ import annotations

import ssl
from collections.abc import Mapping
from enum import Enum, StrEnum

import h11


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


class FaultTable:
    """Which exception of one side's operation is which fault.

    ``entries`` maps an exception type to (kind, status, message); the
    message is formatted with the exception as ``exc``. The first matching
    type wins, so subclasses (TimeoutError and the ssl errors are OSErrors)
    come first. Used as a context manager (``with UPSTREAM_READ: ...``), it
    raises the fault for an exception it lists and lets others pass.
    """

    __slots__ = ("entries", "side")

    def __init__(
        self, side: Side, entries: Mapping[type[BaseException], tuple[FaultKind, int | None, str]]
    ) -> None:
        self.side = side
        self.entries = dict(entries)

    def fault_for(self, exc: BaseException) -> ProxyFault | None:
        for exc_type, (kind, status, message) in self.entries.items():
            if isinstance(exc, exc_type):
                return ProxyFault(self.side, kind, status, message.format(exc=exc))
        return None

    def __enter__(self) -> None:
        return None

    def __exit__(self, exc_type: object, exc: BaseException | None, tb: object) -> None:
        # A class, not contextlib.contextmanager: this wraps every read and
        # write, and a generator-based manager costs a microsecond each.
        if exc is not None and (fault := self.fault_for(exc)) is not None:
            raise fault from exc


UPSTREAM_CONNECT = FaultTable(
    Side.UPSTREAM,
    {
        TimeoutError: (FaultKind.CONNECT_TIMEOUT, 504, "upstream connect timed out"),
        ssl.SSLCertVerificationError: (
            FaultKind.TLS_VERIFY,
            502,
            "upstream certificate not trusted: {exc.verify_message}",
        ),
        ssl.SSLError: (FaultKind.TLS, 502, "upstream TLS failed: {exc}"),
        OSError: (FaultKind.CONNECT, 502, "cannot connect upstream: {exc}"),
    },
)
UPSTREAM_WRITE = FaultTable(
    Side.UPSTREAM,
    {
        TimeoutError: (FaultKind.WRITE_TIMEOUT, 504, "upstream stopped reading"),
        OSError: (FaultKind.WRITE, 502, "writing upstream failed: {exc}"),
    },
)
UPSTREAM_READ = FaultTable(
    Side.UPSTREAM,
    {
        h11.RemoteProtocolError: (FaultKind.PROTOCOL, 502, "upstream sent bad HTTP: {exc}"),
        TimeoutError: (FaultKind.READ_TIMEOUT, 504, "upstream did not answer"),
        OSError: (FaultKind.READ, 502, "reading upstream failed: {exc}"),
    },
)
#: A client we cannot write to is gone: nothing can be answered.
CLIENT_WRITE = FaultTable(
    Side.CLIENT,
    {OSError: (FaultKind.CONNECTION_CUT, None, "writing to client failed: {exc!r}")},
)
#: Reading a request body (TimeoutError is an OSError: a stall and a reset alike).
CLIENT_BODY = FaultTable(
    Side.CLIENT,
    {
        h11.RemoteProtocolError: (FaultKind.MALFORMED_BODY, 400, "bad request body: {exc}"),
        OSError: (FaultKind.SLOW_BODY, 408, "request body stalled: {exc!r}"),
    },
)


__all__ = [
    "CLIENT_BODY",
    "CLIENT_WRITE",
    "RETRYABLE_KINDS",
    "UPSTREAM_CONNECT",
    "UPSTREAM_READ",
    "UPSTREAM_WRITE",
    "FaultKind",
    "FaultTable",
    "ProxyFault",
    "Side",
]

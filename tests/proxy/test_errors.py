"""Which exception of which operation is which fault: the tables of ``proxy.errors``."""

from __future__ import annotations

import ssl

import h11
import pytest

from boundary_audit.proxy.errors import (
    CLIENT_BODY,
    CLIENT_WRITE,
    UPSTREAM_CONNECT,
    UPSTREAM_READ,
    UPSTREAM_WRITE,
    FaultKind,
    FaultTable,
    ProxyFault,
    Side,
)


def _fault(side: Side, table: FaultTable, exc: BaseException) -> ProxyFault:
    assert table.side is side
    with pytest.raises(ProxyFault) as info, table:
        raise exc
    assert info.value.__cause__ is exc
    return info.value


def _verify_error() -> ssl.SSLCertVerificationError:
    exc = ssl.SSLCertVerificationError("certificate verify failed")
    exc.verify_message = "self-signed certificate"
    return exc


@pytest.mark.parametrize(
    ("table", "exc", "kind", "status", "message"),
    [
        (UPSTREAM_CONNECT, TimeoutError(), "connect_timeout", 504, "upstream connect timed out"),
        (
            UPSTREAM_CONNECT,
            _verify_error(),
            "tls_verify",
            502,
            "upstream certificate not trusted: self-signed certificate",
        ),
        (UPSTREAM_CONNECT, ssl.SSLError(1, "bad"), "tls", 502, "upstream TLS failed: bad"),
        (
            UPSTREAM_CONNECT,
            ConnectionRefusedError("no"),
            "connect",
            502,
            "cannot connect upstream: no",
        ),
        (UPSTREAM_WRITE, TimeoutError(), "write_timeout", 504, "upstream stopped reading"),
        (UPSTREAM_WRITE, BrokenPipeError("gone"), "write", 502, "writing upstream failed: gone"),
        (UPSTREAM_READ, TimeoutError(), "read_timeout", 504, "upstream did not answer"),
        (UPSTREAM_READ, ConnectionResetError("rst"), "read", 502, "reading upstream failed: rst"),
        (
            UPSTREAM_READ,
            h11.RemoteProtocolError("junk", 400),
            "protocol",
            502,
            "upstream sent bad HTTP: junk",
        ),
    ],
)
def test_upstream_failures_map_to_kind_and_status(
    table: FaultTable, exc: BaseException, kind: str, status: int, message: str
) -> None:
    fault = _fault(Side.UPSTREAM, table, exc)
    assert (fault.side, fault.kind, fault.status, str(fault)) == (
        Side.UPSTREAM,
        kind,
        status,
        message,
    )


def test_client_failures_map_to_kind_and_status() -> None:
    malformed = _fault(Side.CLIENT, CLIENT_BODY, h11.RemoteProtocolError("bad chunk", 400))
    assert (malformed.kind, malformed.status) == (FaultKind.MALFORMED_BODY, 400)
    stalled = _fault(Side.CLIENT, CLIENT_BODY, TimeoutError())
    assert (stalled.kind, stalled.status) == (FaultKind.SLOW_BODY, 408)
    cut = _fault(Side.CLIENT, CLIENT_WRITE, ConnectionResetError())
    assert (cut.side, cut.kind, cut.status) == (Side.CLIENT, FaultKind.CONNECTION_CUT, None)


def test_other_exceptions_pass_through() -> None:
    with pytest.raises(ValueError, match="a bug"), UPSTREAM_READ:
        raise ValueError("a bug")
    with UPSTREAM_READ:
        pass  # and nothing happens without an exception

"""Issue 10 item 5: every attempt to get around the proxy is an audit event.

The confined command makes one real request, then tries a direct TCP
connect, a UDP datagram, a DNS query, a connect to the hidden agent socket
and to an abstract Unix socket of the host, a raw IP and a packet socket,
and one more real request. The
collector must hold all of them in the run's session, in the order they
were made, with what was tried (see docs/security.md for the format).
"""

from __future__ import annotations

import errno
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.helpers import DELIVERY_TIMEOUT_S, POLL_S, CollectorProcess
from tests.support import eventually
from tests.support.services import AgentProcess

from .helpers import requires_landlock, requires_scopes, run_attack, stored_events

pytestmark = [pytest.mark.timeout(300), requires_landlock, requires_scopes]

BYPASS = r"""
port, tcp_port, udp_port, agent_socket, abstract = sys.argv[1:6]
proxy = urllib.parse.urlsplit(os.environ["HTTP_PROXY"])
def get(path):
    conn = http.client.HTTPConnection(proxy.hostname, proxy.port, timeout=30)
    conn.request("GET", f"http://127.0.0.1:{port}{path}")
    status = conn.getresponse().status
    conn.close()
    return status
def tcp():
    with socket.create_connection(("127.0.0.1", int(tcp_port)), timeout=5):
        return "connected"
def udp():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        return s.sendto(b"hello", ("127.0.0.1", int(udp_port)))
def dns():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.connect(("127.0.0.1", 53))
        return "connected"
def unix(address):
    def go():
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.connect(address)
            return "connected"
    return go
attempt("first", lambda: get("/ok/first"))
attempt("tcp", tcp)
attempt("udp", udp)
attempt("dns", dns)
attempt("agent", unix(agent_socket))
attempt("abstract", unix("\0" + abstract))
attempt("raw", lambda: socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP).close())
attempt("packet", lambda: socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0).close())
attempt("last", lambda: get("/ok/last"))
print(json.dumps(out))
"""


@pytest.fixture
def host_services(sock_dir: Path) -> Iterator[tuple[int, int, str]]:
    """A TCP listener, a UDP socket and an abstract Unix listener on the host."""
    tcp = socket.create_server(("127.0.0.1", 0))
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("127.0.0.1", 0))
    name = f"boundary-audit-bypass-{sock_dir.name}"
    abstract = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    abstract.bind("\0" + name)
    abstract.listen(1)
    yield tcp.getsockname()[1], udp.getsockname()[1], name
    for s in (tcp, udp, abstract):
        s.close()


def test_every_attempt_around_the_proxy_is_an_event_of_the_session_in_order(
    tmp_path: Path,
    *,
    upstream: int,
    host_services: tuple[int, int, str],
    agent_process: AgentProcess,
    collector_process: CollectorProcess,
) -> None:
    tcp_port, udp_port, abstract = host_services
    agent_socket = str(agent_process.socket_path)
    result = run_attack(
        tmp_path,
        BYPASS,
        [str(upstream), str(tcp_port), str(udp_port), agent_socket, abstract],
        socket_path=agent_process.socket_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.out
    assert out["first"] == ["ok", 200]
    assert out["last"] == ["ok", 200]
    assert out["tcp"] == ["error", errno.EACCES], out
    # Without --isolate-network UDP is not confined: it went out, and is on record.
    assert out["udp"] == ["ok", 5], out
    assert out["agent"] == ["error", errno.ENOENT], out
    assert out["abstract"] == ["error", errno.EPERM], out
    assert out["raw"] == ["error", errno.EACCES], out
    assert out["packet"] == ["error", errno.EACCES], out
    expected = [
        ("GET", f"http://127.0.0.1:{upstream}/ok/first", True),
        ("CONNECT", f"tcp://127.0.0.1:{tcp_port}", False),
        ("UDP", f"udp://127.0.0.1:{udp_port}", True),
        ("DNS", "dns://127.0.0.1:53", True),
        ("CONNECT", f"unix://{agent_socket}", False),
        ("CONNECT", f"unix://@{abstract}", False),
        ("RAW", "raw://inet?type=3&protocol=1", False),
        ("RAW", "raw://packet?type=3&protocol=0", False),
        ("GET", f"http://127.0.0.1:{upstream}/ok/last", True),
    ]

    def all_there() -> bool:
        session = collector_process.session(result.session_id)
        return session is not None and session["allowed"] + session["denied"] >= len(expected)

    eventually(
        all_there, "every attempt at the collector", within=DELIVERY_TIMEOUT_S, interval=POLL_S
    )
    events = stored_events(collector_process.url, result.session_id)
    assert [e["sequence_number"] for e in events] == list(range(len(expected)))
    assert [(e["method"], e["url"], e["allowed"]) for e in events] == expected


ISOLATED = r"""
tcp_port, udp_port = sys.argv[1:3]
def tcp():
    with socket.create_connection(("127.0.0.1", int(tcp_port)), timeout=5):
        return "connected"
def udp():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        return s.sendto(b"hello", ("10.0.0.1", int(udp_port)))
attempt("tcp", tcp)
attempt("udp", udp)
print(json.dumps(out))
"""


def test_with_isolation_udp_is_refused_and_recorded_as_denied(
    tmp_path: Path,
    *,
    host_services: tuple[int, int, str],
    agent_process: AgentProcess,
    collector_process: CollectorProcess,
) -> None:
    tcp_port, udp_port, _ = host_services
    result = run_attack(
        tmp_path,
        ISOLATED,
        [str(tcp_port), str(udp_port)],
        socket_path=agent_process.socket_path,
        extra=("--isolate-network",),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.out["tcp"][0] == "error", result.out
    assert result.out["udp"] == ["error", errno.ENETUNREACH], result.out
    expected = [
        ("CONNECT", f"tcp://127.0.0.1:{tcp_port}", False),
        ("UDP", f"udp://10.0.0.1:{udp_port}", False),
    ]

    def all_there() -> bool:
        session = collector_process.session(result.session_id)
        return session is not None and session["allowed"] + session["denied"] >= len(expected)

    eventually(
        all_there, "both attempts at the collector", within=DELIVERY_TIMEOUT_S, interval=POLL_S
    )
    events = stored_events(collector_process.url, result.session_id)
    assert [(e["method"], e["url"], e["allowed"]) for e in events] == expected


RESOLVE = r"""
port = sys.argv[1]
attempt("resolve", lambda: socket.getaddrinfo("example.org", 443, socket.AF_INET)[0][4][0])
attempt("request", lambda: requests(int(port), "isolated"))
print(json.dumps(out))
"""


def test_with_isolation_names_resolve_through_the_stub_and_each_query_is_an_event(
    tmp_path: Path,
    *,
    upstream: int,
    agent_process: AgentProcess,
    collector_process: CollectorProcess,
) -> None:
    result = run_attack(
        tmp_path,
        RESOLVE,
        [str(upstream)],
        socket_path=agent_process.socket_path,
        extra=("--isolate-network",),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.out["resolve"] == ["ok", "127.0.0.1"], result.out
    assert result.out["request"] == ["ok", [200, 403]], result.out
    expected = [
        ("DNS", "dns://example.org?type=A", False),
        ("GET", f"http://127.0.0.1:{upstream}/ok/isolated", True),
        ("GET", f"http://127.0.0.1:{upstream}/no/isolated", False),
    ]

    def all_there() -> bool:
        session = collector_process.session(result.session_id)
        return session is not None and session["allowed"] + session["denied"] >= len(expected)

    eventually(all_there, "the query and the requests", within=DELIVERY_TIMEOUT_S, interval=POLL_S)
    events = stored_events(collector_process.url, result.session_id)
    assert [(e["method"], e["url"], e["allowed"]) for e in events] == expected

"""The private network namespace: a command that reaches only the proxy
(through the relay), tested with real child processes and sockets."""

from __future__ import annotations

import asyncio
import errno
import socket
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from boundary_audit.confine import LaunchMetrics
from tests.support import aeventually

from .helpers import (
    REQUESTS_CHILD,
    TLS_BODY,
    TunnelProxy,
    requires_isolation,
    requires_landlock,
    run_capturing,
)

REACH_CHILD = textwrap.dedent(
    """
    import socket, sys
    for target in sys.argv[1:]:
        host, port = target.rsplit(":", 1)
        try:
            socket.create_connection((host, int(port)), timeout=5).close()
            print(target, "ok")
        except OSError as exc:
            print(target, "errno", exc.errno)
    """
)


@pytest.fixture
def same_port_elsewhere(tunnel: TunnelProxy) -> Iterator[str]:
    """A listener on the proxy's port number but another loopback address,
    standing in for any host that listens on that port."""
    sock = socket.create_server(("127.0.0.2", tunnel.port))
    try:
        yield f"127.0.0.2:{tunnel.port}"
    finally:
        sock.close()


@requires_landlock
@pytest.mark.timeout(90)
async def test_landlock_alone_lets_the_proxy_port_number_through_anywhere(
    tunnel: TunnelProxy, same_port_elsewhere: str, ca_file: Path, tmp_path: Path
) -> None:
    """The documented limit of port-only rules, shown so that the isolated
    mode's test below proves something."""
    code, out = await run_capturing(
        [sys.executable, "-c", REACH_CHILD, same_port_elsewhere], tunnel.port, ca_file, tmp_path
    )
    assert (code, out) == (0, f"{same_port_elsewhere} ok\n")


@requires_isolation
@pytest.mark.timeout(90)
async def test_isolated_command_reaches_only_the_proxy(
    tunnel: TunnelProxy,
    *,
    https_port: int,
    same_port_elsewhere: str,
    listener: int,
    ca_file: Path,
    tmp_path: Path,
) -> None:
    registry = CollectorRegistry()
    metrics = LaunchMetrics(registry)
    url = f"https://localhost:{https_port}/"
    code, out = await run_capturing(
        [sys.executable, "-c", REQUESTS_CHILD, url],
        tunnel.port,
        ca_file,
        tmp_path,
        metrics=metrics,
        isolate_network=True,
    )
    assert (code, out) == (0, TLS_BODY.decode())
    assert tunnel.targets == [f"localhost:{https_port}"]
    assert registry.get_sample_value("boundary_audit_run_relay_connections_total") == 1

    host_service = f"127.0.0.1:{listener}"
    code, out = await run_capturing(
        [sys.executable, "-c", REACH_CHILD, same_port_elsewhere, host_service],
        tunnel.port,
        ca_file,
        tmp_path,
        isolate_network=True,
    )
    assert code == 0
    outcomes = dict(line.split(" ", 1) for line in out.splitlines())
    assert outcomes[same_port_elsewhere] == f"errno {errno.ECONNREFUSED}"
    assert outcomes[host_service] in {f"errno {errno.EACCES}", f"errno {errno.ECONNREFUSED}"}


@requires_isolation
@pytest.mark.timeout(90)
async def test_isolated_command_cannot_send_udp_to_the_host(
    tunnel: TunnelProxy, ca_file: Path, tmp_path: Path
) -> None:
    receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    receiver.bind(("127.0.0.1", 0))
    receiver.setblocking(False)
    port = receiver.getsockname()[1]
    sender = (
        "import socket, sys\n"
        "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
        "s.sendto(b'leak', ('127.0.0.1', int(sys.argv[1])))\n"
        "print('sent')\n"
    )
    with receiver:
        code, out = await run_capturing(
            [sys.executable, "-c", sender, str(port)],
            tunnel.port,
            ca_file,
            tmp_path,
            isolate_network=True,
        )
        assert (code, out) == (0, "sent\n")  # into the namespace's own loopback
        with pytest.raises(BlockingIOError):
            receiver.recv(16)
        # Control: the same sender without isolation does reach the host.
        code, out = await run_capturing(
            [sys.executable, "-c", sender, str(port)], tunnel.port, ca_file, tmp_path
        )
        assert (code, out) == (0, "sent\n")

        def received() -> bytes | None:
            try:
                return receiver.recv(16)
            except BlockingIOError:
                return None

        assert await aeventually(received, "the control datagram") == b"leak"


ECHO_CHILD = textwrap.dedent(
    """
    import os, socket, sys
    port, size = int(sys.argv[1]), int(sys.argv[2])
    payload = os.urandom(size)
    sock = socket.create_connection(("127.0.0.1", port), timeout=20)
    sock.sendall(payload)
    sock.shutdown(socket.SHUT_WR)  # the half-close must travel through the relay
    received = bytearray()
    while chunk := sock.recv(65536):
        received += chunk
    print(len(received), received == payload)
    """
)


@requires_isolation
@pytest.mark.timeout(90)
async def test_relay_carries_large_streams_and_half_close(ca_file: Path, tmp_path: Path) -> None:
    """The relay between the namespace and the proxy, with an echo server in
    the proxy's place: every byte back, and EOF only after the client's."""

    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(echo, "127.0.0.1", 0)
    size = 4 * 1024 * 1024 + 7
    async with server:
        port = server.sockets[0].getsockname()[1]
        code, out = await run_capturing(
            [sys.executable, "-c", ECHO_CHILD, str(port), str(size)],
            port,
            ca_file,
            tmp_path,
            isolate_network=True,
        )
    assert (code, out) == (0, f"{size} True\n")

"""Only the run's own user may use its proxy (issue 10 item 6).

The proxy finds the owner of a loopback client's socket in the kernel's TCP
tables; the end-to-end test makes a throwaway user and has it send a
request through a live ``boundary-audit run``'s proxy.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

from boundary_audit.proxy.peer import find_uid, peer_uid, proc_address
from tests.cli.helpers import run_boundary
from tests.proxy.helpers import Upstream
from tests.support import eventually, free_port
from tests.support.users import SYSTEM_PYTHON, as_user, cannot_make_users, throwaway_user

pytestmark = pytest.mark.timeout(90)

TABLE = """\
  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1
   1: 0100007F:D431 0100007F:1F90 01 00000000:00000000 00:00000000 00000000   998        0 2 1
   2: 0100007F:1F90 0100007F:D431 01 00000000:00000000 00:00000000 00000000     0        0 3 1
"""


def test_proc_addresses_are_written_as_the_kernel_writes_them() -> None:
    assert proc_address("127.0.0.1", 8080) == "0100007F:1F90"
    assert proc_address("::1", 443) == "00000000000000000000000001000000:01BB"
    assert proc_address("::ffff:127.0.0.1", 80) == "0000000000000000FFFF00000100007F:0050"


def test_a_dual_stack_client_of_an_ipv4_listener_is_found() -> None:
    """gRPC connects to 127.0.0.1 from an IPv6 socket (``::ffff:127.0.0.1``)."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        with socket.socket(socket.AF_INET6) as client:
            client.connect(("::ffff:127.0.0.1", listener.getsockname()[1]))
            accepted, _ = listener.accept()
            with accepted:
                assert peer_uid(accepted) == os.getuid()


def test_the_client_row_is_the_one_whose_remote_is_us() -> None:
    client, proxy = proc_address("127.0.0.1", 0xD431), proc_address("127.0.0.1", 8080)
    assert find_uid(TABLE, client, proxy) == 998
    assert find_uid(TABLE, proxy, client) == 0  # the proxy's own accepted socket
    assert find_uid(TABLE, proc_address("127.0.0.2", 1), proxy) is None


ATTACK = """
import socket, sys
port, target = int(sys.argv[1]), sys.argv[2]
with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
    sock.sendall(f"GET {target} HTTP/1.1\\r\\nHost: x\\r\\nConnection: close\\r\\n\\r\\n".encode())
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
print(data.split(b"\\r\\n", 1)[0].decode())
print(data.rsplit(b"\\r\\n\\r\\n", 1)[-1].decode().strip())
"""


@pytest.mark.skipif(
    cannot_make_users(python=True) is not None, reason=str(cannot_make_users(python=True))
)
def test_another_user_cannot_use_a_runs_proxy(http_upstream: Upstream, tmp_path: Path) -> None:
    port = free_port()
    ready, done = tmp_path / "ready", tmp_path / "done"
    target = http_upstream.url("/allowed?from-attacker")
    # COMMAND (this user) waits for the attacker, then makes its own request.
    command = textwrap.dedent(f"""
        import pathlib, time, urllib.request
        pathlib.Path({str(ready)!r}).touch()
        deadline = time.monotonic() + 60
        while not pathlib.Path({str(done)!r}).exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        print(urllib.request.urlopen({http_upstream.url("/allowed?own")!r}).status)
    """)
    results: list[subprocess.CompletedProcess[str]] = []
    runner = threading.Thread(
        target=lambda: results.append(
            run_boundary(
                [
                    "run",
                    "--no-audit-socket",
                    "--log-level",
                    "info",
                    "--proxy-port",
                    str(port),
                    "--allow",
                    "domain=127.0.0.1 path=/allowed",
                    "--",
                    sys.executable,
                    "-c",
                    command,
                ],
                tmp_path,
            )
        )
    )
    runner.start()
    try:
        eventually(ready.exists)
        with throwaway_user("ba-proxy-peer") as user:
            attack = subprocess.run(
                as_user(user, [SYSTEM_PYTHON, "-c", ATTACK, str(port), target]),
                capture_output=True,
                text=True,
                timeout=30,
                check=False,
            )
    finally:
        done.touch()
        runner.join(90)
    assert attack.stdout.splitlines() == [
        "HTTP/1.1 403 Forbidden",
        "boundary-audit: this proxy serves another user only",
    ], attack.stderr
    [result] = results
    assert result.returncode == 0, result.stderr
    assert result.stdout == "200\n"  # the run's own process is served
    queries = [hit["query"] for hit in http_upstream.hits]
    assert "own" in queries
    assert "from-attacker" not in queries  # never forwarded, never audited
    assert "from-attacker" not in result.stderr.split("client of another user refused")[0]
    assert "client of another user refused" in result.stderr

"""What the confinement tests share: the kernel's Landlock status, probes run
in confined children, and ``run_confined`` with the child's stdout captured.

Fixtures live in ``conftest.py``; this module is imported by the test modules.
"""

from __future__ import annotations

import asyncio
import errno
import shlex
import socket
import subprocess
import sys
import textwrap
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from boundary_audit.confine import (
    ConfinementUnavailable,
    LaunchMetrics,
    helper_argv,
    landlock_status,
    run_confined,
)

STATUS = landlock_status()
NO_LANDLOCK = f"kernel cannot confine the network with Landlock: {STATUS.reason}"
requires_landlock = pytest.mark.skipif(not STATUS.network_available, reason=NO_LANDLOCK)
#: A child's connect() that Landlock refuses fails with one of these.
DENIED_ERRNOS = {errno.EACCES, errno.EPERM}
#: curl's exit code for "failed to connect to host".
CURL_COULDNT_CONNECT = 7
#: Proxy URL of runs whose command never uses the proxy (port 9: discard).
UNUSED_PROXY_URL = "http://127.0.0.1:9"
#: Far longer than any step here takes; only bounds a broken test.
STEP_TIMEOUT = 30.0
TLS_BODY = b"hello over tls\n"
PEM_BEGIN = b"-----BEGIN CERTIFICATE-----"

#: Connects to each HOST:PORT argument; prints "TARGET ok" or "TARGET errno N".
CONNECT_PROBE = """
import socket, sys
for target in sys.argv[1:]:
    host, port = target.rsplit(":", 1)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    s = socket.socket(family, socket.SOCK_STREAM)
    try:
        s.connect((host, int(port)))
        print(target, "ok")
    except OSError as exc:
        print(target, "errno", exc.errno)
    finally:
        s.close()
"""

#: Fetches URL with requests (which trusts REQUESTS_CA_BUNDLE) and prints the body.
REQUESTS_CHILD = textwrap.dedent(
    """
    import sys, requests
    response = requests.get(sys.argv[1], timeout=20)
    sys.stdout.write(response.text)
    """
)


def probe_results(output: str) -> dict[str, str]:
    """``TARGET outcome`` lines (of CONNECT_PROBE and the like) as a mapping."""
    results = {}
    for line in output.splitlines():
        target, _, outcome = line.partition(" ")
        results[target] = outcome
    return results


def confined(command: list[str], *ports: int) -> subprocess.CompletedProcess[str]:
    """Run ``command`` through the exec helper; status goes to fd -1 (stderr)."""
    argv = helper_argv(sys.executable, ports, -1, command)
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)


def ipv6_listener() -> socket.socket | None:
    """A listener on ::1, or None where IPv6 loopback is unavailable."""
    if not socket.has_ipv6:
        return None
    try:
        return socket.create_server(("::1", 0), family=socket.AF_INET6)
    except OSError:
        return None


def unavailable() -> int:
    """Stands in for ``require_network_confinement`` on a kernel without network rules."""
    raise ConfinementUnavailable("kernel Landlock ABI 3 has no network rules", abi=3)


def _isolation_problem() -> str | None:
    """Why this machine cannot run the isolation tests (None: it can)."""
    if not STATUS.network_available:
        return NO_LANDLOCK
    ours, theirs = socket.socketpair()
    with ours, theirs:
        # Any port: nothing connects to the namespace's listener in this probe.
        argv = helper_argv(sys.executable, [1], theirs.fileno(), ["true"], 40000)
        proc = subprocess.run(
            argv, pass_fds=(theirs.fileno(),), capture_output=True, timeout=60, check=False
        )
        theirs.close()
        ours.settimeout(5)
        status = ours.recv(4096)
    if proc.returncode != 0:
        return f"cannot create a private network namespace here: {status!r}"
    return None


ISOLATION_PROBLEM = _isolation_problem()
requires_isolation = pytest.mark.skipif(
    ISOLATION_PROBLEM is not None, reason=str(ISOLATION_PROBLEM)
)


@dataclass
class TunnelProxy:
    """A minimal CONNECT-only proxy standing in for the real one (owned by
    another package): enough to prove the child's traffic goes through
    ``HTTPS_PROXY`` and verifies TLS with the bundle."""

    port: int = 0
    targets: list[str] = field(default_factory=list)


async def run_capturing(
    command: list[str],
    proxy_port: int,
    ca_file: Path,
    tmp_path: Path,
    *,
    metrics: LaunchMetrics | None = None,
    require_enforcement: bool = False,
    enforced: bool | None = None,
    isolate_network: bool = False,
) -> tuple[int, str]:
    """run_confined with the child's stdout captured into a file (stdout is
    otherwise passed through, which pytest would swallow)."""
    out = tmp_path / "child-stdout"
    shell = f'exec "$@" > {shlex.quote(str(out))}'
    code = await asyncio.wait_for(
        run_confined(
            ["sh", "-c", shell, "sh", *command],
            proxy_url=f"http://127.0.0.1:{proxy_port}",
            ca_cert_path=ca_file,
            metrics=metrics,
            require_enforcement=require_enforcement,
            enforced=enforced,
            isolate_network=isolate_network,
        ),
        STEP_TIMEOUT,
    )
    return code, out.read_text() if out.exists() else ""

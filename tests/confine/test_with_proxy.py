"""The launcher with the project's real proxy: confined curl and requests,
allowed and denied, over TLS the proxy intercepts.

The one test module that joins ``boundary_audit.proxy`` and
``boundary_audit.confine`` (as ``boundary_audit.cli.run`` does).
"""

from __future__ import annotations

import io
import json
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import trustme

from boundary_audit.auditor import LogAuditor
from boundary_audit.proxy import CertificateAuthority, ProxyServer, parse_rules

from .helpers import (
    CURL_COULDNT_CONNECT,
    ISOLATION_PROBLEM,
    NO_LANDLOCK,
    REQUESTS_CHILD,
    STATUS,
    TLS_BODY,
    run_capturing,
)

CURL = ["curl", "--silent", "--show-error", "--fail", "--max-time", "20"]


@dataclass
class RealProxy:
    url: str
    port: int
    ca_cert: Path
    audit: io.StringIO

    def events(self) -> list[dict[str, object]]:
        return [json.loads(line) for line in self.audit.getvalue().splitlines()]


@pytest.fixture
async def real_proxy(ca: trustme.CA, https_port: int, tmp_path: Path) -> AsyncIterator[RealProxy]:
    """The project's proxy (rules, local CA, TLS interception) in this loop,
    trusting the test CA upstream."""
    upstream_ca = tmp_path / "upstream-ca.pem"
    ca.cert_pem.write_to_path(str(upstream_ca))
    local_ca = CertificateAuthority.load_or_create(tmp_path / "proxy-ca")
    audit = io.StringIO()
    rules = parse_rules(["method=GET domain=localhost path=/allowed/*"])
    async with ProxyServer(
        rules, LogAuditor(audit), ca=local_ca, upstream_ca_file=str(upstream_ca)
    ) as proxy:
        yield RealProxy(proxy.url, proxy.port, local_ca.cert_path, audit)


@pytest.mark.parametrize("isolate", [False, True])
@pytest.mark.timeout(120)
async def test_confined_clients_through_the_real_proxy(
    real_proxy: RealProxy, https_port: int, tmp_path: Path, isolate: bool
) -> None:
    """curl and requests, allowed and denied, over TLS intercepted by the
    proxy; a direct connection fails. Each request is audited once."""
    if isolate and ISOLATION_PROBLEM is not None:
        pytest.skip(ISOLATION_PROBLEM)
    if not STATUS.network_available:
        pytest.skip(NO_LANDLOCK)
    base = f"https://localhost:{https_port}"

    async def run(command: list[str]) -> tuple[int, str]:
        return await run_capturing(
            command, real_proxy.port, real_proxy.ca_cert, tmp_path, isolate_network=isolate
        )

    assert await run([*CURL, f"{base}/allowed/curl"]) == (0, TLS_BODY.decode())
    code, _ = await run([*CURL, f"{base}/denied/curl"])
    assert code == 22  # curl --fail: HTTP 403 from the proxy
    code, out = await run([sys.executable, "-c", REQUESTS_CHILD, f"{base}/allowed/requests"])
    assert (code, out) == (0, TLS_BODY.decode())
    code, out = await run([*CURL, "--noproxy", "*", f"{base}/allowed/direct"])
    assert code == CURL_COULDNT_CONNECT
    decisions = [(e["decision"], e["url"]) for e in real_proxy.events()]
    assert decisions == [
        ("allow", f"{base}/allowed/curl"),
        ("deny", f"{base}/denied/curl"),
        ("allow", f"{base}/allowed/requests"),
    ]

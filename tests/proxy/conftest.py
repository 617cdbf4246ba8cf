"""Fixtures: real upstream servers (HTTP and HTTPS, uvicorn), a real proxy, a local CA."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import trustme

from boundary_audit.proxy import CertificateAuthority, ProxyServer, ProxyTimeouts, parse_rules

from .helpers import ProxyFactory, RecordingAuditor, RunningProxy, Upstream, serve_upstream


@pytest.fixture(scope="session")
def upstream_ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="session")
def upstream_ca_file(upstream_ca: trustme.CA, tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("upstream-ca") / "ca.pem"
    upstream_ca.cert_pem.write_to_path(str(path))
    return str(path)


@pytest.fixture(scope="session")
def http_upstream(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Upstream]:
    with serve_upstream("http", None, tmp_path_factory.mktemp("http")) as upstream:
        yield upstream


@pytest.fixture(scope="session")
def https_upstream(
    upstream_ca: trustme.CA, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Upstream]:
    cert = upstream_ca.issue_cert("localhost", "127.0.0.1")
    with serve_upstream("https", cert, tmp_path_factory.mktemp("https")) as upstream:
        yield upstream


@pytest.fixture(autouse=True)
def _clear_hits(request: pytest.FixtureRequest) -> None:
    for name in ("http_upstream", "https_upstream"):
        if name in request.fixturenames:
            request.getfixturevalue(name).hits.clear()


@pytest.fixture(scope="session")
def ca(tmp_path_factory: pytest.TempPathFactory) -> CertificateAuthority:
    return CertificateAuthority.load_or_create(tmp_path_factory.mktemp("home") / "ca")


@pytest.fixture
def make_proxy(ca: CertificateAuthority, upstream_ca_file: str) -> Iterator[ProxyFactory]:
    """Start a proxy with the given rules; extra keywords go to ProxyServer."""
    running: list[RunningProxy] = []

    def make(*rules: str, **options: Any) -> RunningProxy:
        auditor = RecordingAuditor()
        options.setdefault("upstream_ca_file", upstream_ca_file)
        options.setdefault("timeouts", ProxyTimeouts(header=2.0, idle=10.0, read=10.0))
        server = ProxyServer(parse_rules(rules), auditor, ca=ca, **options)
        proxy = RunningProxy(server, auditor).start()
        running.append(proxy)
        return proxy

    yield make
    for proxy in running:
        proxy.stop()

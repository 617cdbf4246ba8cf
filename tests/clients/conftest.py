"""Fixtures of the client matrix: real local servers, one of each kind."""

from __future__ import annotations

import shutil
from collections.abc import Iterator

import pytest
import trustme

from tests.proxy.grpc_echo import GrpcEcho, serve_grpc
from tests.proxy.helpers import Upstream, serve_upstream
from tests.proxy.ws_echo import EchoServer, serve_ws

from .servers import LocalhostCA, Served, serve_git, serve_index, serve_npm_registry


@pytest.fixture(scope="session")
def upstream_ca() -> trustme.CA:
    return LocalhostCA()


@pytest.fixture(scope="session")
def upstream_ca_file(upstream_ca: trustme.CA, tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("upstream-ca") / "ca.pem"
    upstream_ca.cert_pem.write_to_path(str(path))
    return str(path)


@pytest.fixture(scope="session")
def https_upstream(
    upstream_ca: trustme.CA, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Upstream]:
    cert = upstream_ca.issue_cert("127.0.0.1")
    with serve_upstream("https", cert, tmp_path_factory.mktemp("https")) as upstream:
        yield upstream


@pytest.fixture(scope="session")
def wss_echo(upstream_ca: trustme.CA) -> Iterator[EchoServer]:
    with serve_ws("wss", upstream_ca) as server:
        yield server


@pytest.fixture(scope="session")
def grpc_echo(upstream_ca: trustme.CA) -> Iterator[GrpcEcho]:
    with serve_grpc(upstream_ca) as server:
        yield server


@pytest.fixture(scope="session")
def git_server(
    upstream_ca: trustme.CA, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Served]:
    with serve_git(upstream_ca, tmp_path_factory.mktemp("git")) as served:
        yield served


@pytest.fixture(scope="session")
def package_index(
    upstream_ca: trustme.CA, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Served]:
    with serve_index(upstream_ca, tmp_path_factory.mktemp("pip")) as served:
        yield served


@pytest.fixture(scope="session")
def npm_registry(
    upstream_ca: trustme.CA, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Served]:
    if shutil.which("npm") is None:
        pytest.skip("npm absent (Debian's npm package is not installed)")
    with serve_npm_registry(upstream_ca, tmp_path_factory.mktemp("npm")) as served:
        yield served

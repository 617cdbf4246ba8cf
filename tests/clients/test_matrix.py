"""The client matrix (issue 13 item 3): real clients through ``boundary-audit
run`` against local servers, each allowed, denied, and audited with the
method and URL it used.

The run sets what each client needs (the proxy variables, the CA bundle in
``SSL_CERT_FILE``, ``CURL_CA_BUNDLE``, ``GIT_SSL_CAINFO``, ``PIP_CERT``,
``GRPC_DEFAULT_SSL_ROOTS_FILE_PATH``, ``NODE_EXTRA_CA_CERTS``,
``NODE_USE_ENV_PROXY``, ``npm_config_cafile``); the tests set nothing of it
themselves. What each request was is read from the run's ``--log-dir`` JSON
lines. The Node.js rows are in ``test_node.py``.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from tests.proxy.grpc_echo import GrpcEcho
from tests.proxy.helpers import Upstream
from tests.proxy.ws_echo import EchoServer

from .helpers import python, run_client
from .servers import PACKAGE, Served

pytestmark = pytest.mark.timeout(120)


@pytest.mark.parametrize("version", ["--http1.1", "--http2"])
def test_curl(
    version: str, tmp_path: Path, https_upstream: Upstream, upstream_ca_file: str
) -> None:
    ok, denied = https_upstream.url("/allowed"), https_upstream.url("/denied")
    fmt = "%{http_code} %{http_version}\\n"
    script = f"curl -sS {version} -w '{fmt}' -o /dev/null {ok} -o /dev/null {denied}"
    result, audited = run_client(
        tmp_path, ["domain=127.0.0.1 path=/allowed"], ["sh", "-c", script], upstream_ca_file
    )
    wanted = "1.1" if version == "--http1.1" else "2"
    assert result.stdout == f"200 {wanted}\n403 {wanted}\n", result.stderr
    assert audited == [("allow", "GET", ok), ("deny", "GET", denied)]


def test_requests(tmp_path: Path, https_upstream: Upstream, upstream_ca_file: str) -> None:
    ok, denied = https_upstream.url("/allowed"), https_upstream.url("/denied")
    script = f"""
        import requests
        print(requests.post({ok!r}, data=b"x" * 1000).json()["body_length"])
        print(requests.get({denied!r}).status_code)
    """
    result, audited = run_client(
        tmp_path, ["domain=127.0.0.1 path=/allowed"], python(script), upstream_ca_file
    )
    assert result.stdout == "1000\n403\n", result.stderr
    assert audited == [("allow", "POST", ok), ("deny", "GET", denied)]


def test_httpx_http2(tmp_path: Path, https_upstream: Upstream, upstream_ca_file: str) -> None:
    ok, denied = https_upstream.url("/allowed"), https_upstream.url("/denied")
    script = f"""
        import httpx
        with httpx.Client(http2=True) as client:
            first = client.get({ok!r})
            print(first.http_version, first.status_code, client.get({denied!r}).status_code)
    """
    result, audited = run_client(
        tmp_path, ["domain=127.0.0.1 path=/allowed"], python(script), upstream_ca_file
    )
    assert result.stdout == "HTTP/2 200 403\n", result.stderr
    assert audited == [("allow", "GET", ok), ("deny", "GET", denied)]


def test_websockets_wss(tmp_path: Path, wss_echo: EchoServer, upstream_ca_file: str) -> None:
    ok, denied = wss_echo.uri("/echo"), wss_echo.uri("/secret")
    script = f"""
        from websockets.exceptions import InvalidStatus
        from websockets.sync.client import connect
        with connect({ok!r}, open_timeout=10) as ws:
            ws.send("through the proxy")
            print(ws.recv(10))
        try:
            connect({denied!r}, open_timeout=10)
        except InvalidStatus as exc:
            print(exc.response.status_code)
    """
    result, audited = run_client(
        tmp_path, ["domain=127.0.0.1 path=/echo"], python(script), upstream_ca_file
    )
    assert result.stdout == "through the proxy\n403\n", result.stderr
    assert audited == [("allow", "GET", ok), ("deny", "GET", denied)]


@pytest.mark.parametrize("channel", ["tls", "insecure"])
def test_grpcio(channel: str, tmp_path: Path, grpc_echo: GrpcEcho, upstream_ca_file: str) -> None:
    if channel == "tls":
        opening = (
            f"grpc.secure_channel('127.0.0.1:{grpc_echo.tls_port}', grpc.ssl_channel_credentials())"
        )
        base = f"https://127.0.0.1:{grpc_echo.tls_port}/t.Echo/"
    else:
        opening = f"grpc.insecure_channel('127.0.0.1:{grpc_echo.plain_port}')"
        base = f"http://127.0.0.1:{grpc_echo.plain_port}/t.Echo/"
    script = f"""
        import grpc
        same = lambda b: b
        with {opening} as channel:
            unary = channel.unary_unary("/t.Echo/Unary", request_serializer=same,
                                        response_deserializer=same)
            print(unary(b"hi", timeout=10).decode())
            stream = channel.stream_stream("/t.Echo/Stream", request_serializer=same,
                                           response_deserializer=same)
            print(b",".join(stream(iter([b"a", b"b"]), timeout=10)).decode())
            secret = channel.unary_unary("/t.Echo/Secret", request_serializer=same,
                                         response_deserializer=same)
            try:
                secret(b"x", timeout=10)
            except grpc.RpcError as exc:
                print(exc.code().name)
    """
    result, audited = run_client(
        tmp_path,
        ["domain=127.0.0.1 path=/t.Echo/Unary,/t.Echo/Stream"],
        python(script),
        upstream_ca_file,
    )
    assert result.stdout == "echo:hi\ns:a,s:b\nPERMISSION_DENIED\n", result.stderr
    assert audited == [
        ("allow", "POST", base + "Unary"),
        ("allow", "POST", base + "Stream"),
        ("deny", "POST", base + "Secret"),
    ]


def test_git_clone_over_https(tmp_path: Path, git_server: Served, upstream_ca_file: str) -> None:
    ok, denied = git_server.url("/repo.git"), git_server.url("/other.git")
    script = (
        f"git clone -q {ok} {tmp_path}/clone && cat {tmp_path}/clone/hello.txt; "
        f"git clone -q {denied} {tmp_path}/denied 2>/dev/null || echo refused"
    )
    env = {"GIT_TERMINAL_PROMPT": "0", "GIT_CONFIG_NOSYSTEM": "1"}
    result, audited = run_client(
        tmp_path, ["domain=127.0.0.1 path=/repo.git/*"], ["sh", "-c", script], upstream_ca_file, env
    )
    assert result.stdout == "hello from git http-backend\nrefused\n", result.stderr
    assert audited[0] == ("allow", "GET", ok + "/info/refs?service=git-upload-pack")
    assert ("allow", "POST", ok + "/git-upload-pack") in audited
    assert audited[-1] == ("deny", "GET", denied + "/info/refs?service=git-upload-pack")


def test_pip_install_from_a_local_https_index(
    tmp_path: Path, package_index: Served, upstream_ca_file: str
) -> None:
    target = tmp_path / "site"
    index = package_index.url("/simple/")
    pip = [sys.executable, "-m", "pip", "install", "--no-deps", "--index-url", index]
    script = (
        f"{' '.join(pip)} --target {target} {PACKAGE} -q && echo installed; "
        f"{' '.join(pip)} --target {target}-2 ba-denied -q 2>/dev/null || echo refused"
    )
    env = {"PIP_CONFIG_FILE": os.devnull, "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    result, audited = run_client(
        tmp_path,
        [f"domain=127.0.0.1 path=/simple/{PACKAGE}/*,/files/*"],
        ["sh", "-c", script],
        upstream_ca_file,
        env,
    )
    assert result.stdout == "installed\nrefused\n", result.stderr
    assert (target / "ba_probe" / "__init__.py").exists()
    assert ("allow", "GET", package_index.url(f"/simple/{PACKAGE}/")) in audited
    assert any(d == "allow" and "/files/ba_probe-" in u for d, _, u in audited)
    assert audited[-1] == ("deny", "GET", package_index.url("/simple/ba-denied/"))

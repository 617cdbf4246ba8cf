"""Running a command behind the proxy: env, CA bundle, confinement, exit codes,
signals and stdio, with real child processes, sockets and TLS."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import io
import json
import os
import select
import shlex
import signal
import socket
import ssl
import stat
import subprocess
import sys
import textwrap
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import trustme
from cryptography import x509
from prometheus_client import CollectorRegistry

from boundary_audit.auditor import LogAuditor
from boundary_audit.proxy import CertificateAuthority, ProxyServer, confine, launch, parse_rules
from boundary_audit.proxy.confine import ConfinementUnavailable, landlock_status
from boundary_audit.proxy.launch import (
    CA_ENV_VARS,
    CLEARED_ENV_VARS,
    PROXY_ENV_VARS,
    ChildEnvironment,
    LaunchError,
    LaunchMetrics,
    build_child_env,
    exit_code_from_returncode,
    find_system_ca_files,
    run_confined,
    write_ca_bundle,
)

STATUS = landlock_status()
requires_landlock = pytest.mark.skipif(
    not STATUS.network_available,
    reason=f"kernel cannot confine the network with Landlock: {STATUS.reason}",
)
TLS_BODY = b"hello over tls\n"
PEM_BEGIN = b"-----BEGIN CERTIFICATE-----"
#: curl's exit code for "failed to connect to host".
CURL_COULDNT_CONNECT = 7
#: Far longer than any step here takes; only bounds a broken test.
STEP_TIMEOUT = 30.0


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def ca_file(ca: trustme.CA, tmp_path: Path) -> Path:
    path = tmp_path / "proxy-ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return path


@dataclass
class TunnelProxy:
    """A minimal CONNECT-only proxy standing in for the real one (owned by
    another module): enough to prove the child's traffic goes through
    ``HTTPS_PROXY`` and verifies TLS with the bundle."""

    port: int = 0
    targets: list[str] = field(default_factory=list)


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        writer.close()


@pytest.fixture
async def tunnel() -> AsyncIterator[TunnelProxy]:
    state = TunnelProxy()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        method, target, _ = head.split(b"\r\n", 1)[0].decode().split(" ", 2)
        if method != "CONNECT":
            writer.write(b"HTTP/1.1 405 Method Not Allowed\r\nContent-Length: 0\r\n\r\n")
            writer.close()
            return
        state.targets.append(target)
        host, port = target.rsplit(":", 1)
        up_reader, up_writer = await asyncio.open_connection(host, int(port))
        writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
        await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    state.port = server.sockets[0].getsockname()[1]
    async with server:
        yield state


@pytest.fixture
async def https_port(ca: trustme.CA) -> AsyncIterator[int]:
    """A real HTTPS server whose certificate is signed by ``ca``."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ca.issue_cert("localhost", "127.0.0.1").configure_cert(context)

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await reader.readuntil(b"\r\n\r\n")
            writer.write(
                b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s"
                % (len(TLS_BODY), TLS_BODY)
            )
            await writer.drain()
        except (ConnectionError, OSError, asyncio.IncompleteReadError):
            pass  # a client that gave up on the handshake (the untrusted-CA test)
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=context)
    async with server:
        yield server.sockets[0].getsockname()[1]


async def _run(
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


# --------------------------------------------------------------------------- environment


def test_child_env_points_at_proxy_and_bundle() -> None:
    base = {
        "PATH": "/usr/bin",
        "HOME": "/home/u",
        "NO_PROXY": "localhost",
        "no_proxy": "*",
        "ALL_PROXY": "socks5://elsewhere:1080",
        "all_proxy": "socks5://elsewhere:1080",
        "HTTPS_PROXY": "http://corporate:3128",
        "SSL_CERT_FILE": "/old/bundle.pem",
    }
    env = build_child_env("http://127.0.0.1:4321", "/tmp/x/ca-bundle.pem", base)
    assert {name: env[name] for name in PROXY_ENV_VARS} == dict.fromkeys(
        PROXY_ENV_VARS, "http://127.0.0.1:4321"
    )
    assert {name: env[name] for name in CA_ENV_VARS} == dict.fromkeys(
        CA_ENV_VARS, "/tmp/x/ca-bundle.pem"
    )
    for name in (
        "SSL_CERT_FILE",
        "REQUESTS_CA_BUNDLE",
        "CURL_CA_BUNDLE",
        "NODE_EXTRA_CA_CERTS",
        "GIT_SSL_CAINFO",
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "http_proxy",
        "https_proxy",
    ):
        assert name in env, name
    assert not set(CLEARED_ENV_VARS) & set(env)
    assert env["PATH"] == "/usr/bin"
    assert env["HOME"] == "/home/u"
    assert base["NO_PROXY"] == "localhost", "the caller's mapping must not change"


def test_child_env_defaults_to_our_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BOUNDARY_TEST_MARKER", "kept")
    monkeypatch.setenv("no_proxy", "example.com")
    env = build_child_env("http://127.0.0.1:1", "/b.pem")
    assert env["BOUNDARY_TEST_MARKER"] == "kept"
    assert "no_proxy" not in env


def test_system_ca_store_is_found() -> None:
    files = find_system_ca_files()
    assert files, "this machine has a system CA store (ca-certificates)"
    assert all(path.is_file() for path in files)
    assert files[0].read_bytes().count(PEM_BEGIN) > 1


def test_bundle_is_private_and_holds_system_cas_plus_ours(
    ca: trustme.CA, ca_file: Path, tmp_path: Path
) -> None:
    system = find_system_ca_files()
    with ChildEnvironment("http://127.0.0.1:9", ca_file, base_env={}) as child:
        assert child.bundle_path is not None
        bundle = child.bundle_path
        directory = bundle.parent
        assert stat.S_IMODE(bundle.stat().st_mode) == 0o600
        assert stat.S_IMODE(directory.stat().st_mode) == 0o700
        # Counted by PEM markers: some system roots have serials that newer
        # cryptography releases refuse to parse, and the bundle is not ours to judge.
        text = bundle.read_bytes()
        last = x509.load_pem_x509_certificate(PEM_BEGIN + text.split(PEM_BEGIN)[-1])
        assert last == x509.load_pem_x509_certificate(ca.cert_pem.bytes())
        assert text.count(PEM_BEGIN) == system[0].read_bytes().count(PEM_BEGIN) + 1
        assert text.startswith(system[0].read_bytes())
        assert child.env["SSL_CERT_FILE"] == str(bundle)
    assert not directory.exists(), "the private dir is removed after the run"


def test_private_key_in_ca_file_never_reaches_the_bundle(ca: trustme.CA, tmp_path: Path) -> None:
    combined = tmp_path / "ca-with-key.pem"
    combined.write_bytes(ca.cert_pem.bytes() + ca.private_key_pem.bytes())
    bundle = write_ca_bundle(combined, tmp_path, system_ca_files=[])
    text = bundle.read_bytes()
    assert b"PRIVATE KEY" not in text
    assert x509.load_pem_x509_certificates(text) == [
        x509.load_pem_x509_certificate(ca.cert_pem.bytes())
    ]


def test_bad_ca_files_fail_clearly(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate\n")
    with pytest.raises(LaunchError, match="holds no valid PEM certificate") as info:
        write_ca_bundle(garbage, tmp_path, system_ca_files=[])
    assert str(garbage) in str(info.value)
    with pytest.raises(LaunchError, match="cannot read the proxy CA certificate"):
        write_ca_bundle(tmp_path / "missing.pem", tmp_path, system_ca_files=[])
    before = set(Path(os.environ.get("TMPDIR", "/tmp")).glob("boundary-audit-run-*"))
    with pytest.raises(LaunchError), ChildEnvironment("http://127.0.0.1:9", garbage):
        pass
    after = set(Path(os.environ.get("TMPDIR", "/tmp")).glob("boundary-audit-run-*"))
    assert after <= before, "a failed set-up leaves no temp dir behind"


@pytest.mark.parametrize(
    ("returncode", "code"), [(0, 0), (3, 3), (255, 255), (-9, 137), (-15, 143)]
)
def test_exit_code_mapping(returncode: int, code: int) -> None:
    assert exit_code_from_returncode(returncode) == code


# --------------------------------------------------------------------------- running


REQUESTS_CHILD = textwrap.dedent(
    """
    import sys, requests
    response = requests.get(sys.argv[1], timeout=20)
    sys.stdout.write(response.text)
    """
)

SSL_CHILD = textwrap.dedent(
    """
    import os, socket, ssl, sys
    from urllib.parse import urlsplit
    proxy = urlsplit(os.environ["HTTPS_PROXY"])
    target = sys.argv[1]
    sock = socket.create_connection((proxy.hostname, proxy.port), timeout=20)
    sock.sendall(f"CONNECT {target} HTTP/1.1\\r\\nHost: {target}\\r\\n\\r\\n".encode())
    head = b""
    while not head.endswith(b"\\r\\n\\r\\n"):
        head += sock.recv(1)
    assert head.startswith(b"HTTP/1.1 200"), head
    context = ssl.create_default_context()  # trusts SSL_CERT_FILE
    tls = context.wrap_socket(sock, server_hostname=target.rsplit(":", 1)[0])
    tls.sendall(b"GET / HTTP/1.1\\r\\nHost: localhost\\r\\n\\r\\n")
    data = b""
    while chunk := tls.recv(4096):
        data += chunk
    sys.stdout.write(data.split(b"\\r\\n\\r\\n", 1)[1].decode())
    """
)

DIRECT_CHILD = textwrap.dedent(
    """
    import socket, sys
    try:
        socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=20).close()
        print("direct ok")
    except OSError as exc:
        print("direct errno", exc.errno)
    """
)


@pytest.mark.timeout(90)
async def test_requests_child_trusts_the_bundle_through_the_proxy(
    tunnel: TunnelProxy, https_port: int, ca_file: Path, tmp_path: Path
) -> None:
    url = f"https://localhost:{https_port}/"
    code, out = await _run(
        [sys.executable, "-c", REQUESTS_CHILD, url], tunnel.port, ca_file, tmp_path
    )
    assert (code, out) == (0, TLS_BODY.decode())
    assert tunnel.targets == [f"localhost:{https_port}"]


@pytest.mark.timeout(90)
async def test_ssl_and_curl_children_trust_the_bundle(
    tunnel: TunnelProxy, https_port: int, ca_file: Path, tmp_path: Path
) -> None:
    target = f"localhost:{https_port}"
    code, out = await _run(
        [sys.executable, "-c", SSL_CHILD, target], tunnel.port, ca_file, tmp_path
    )
    assert (code, out) == (0, TLS_BODY.decode())
    code, out = await _run(
        ["curl", "--silent", "--show-error", "--max-time", "20", f"https://{target}/"],
        tunnel.port,
        ca_file,
        tmp_path,
    )
    assert (code, out) == (0, TLS_BODY.decode())
    assert tunnel.targets == [target, target]


@pytest.mark.timeout(90)
async def test_a_ca_not_in_the_bundle_is_not_trusted(
    tunnel: TunnelProxy, https_port: int, tmp_path: Path
) -> None:
    stranger = tmp_path / "other-ca.pem"
    trustme.CA().cert_pem.write_to_path(str(stranger))
    url = f"https://localhost:{https_port}/"
    code, out = await _run(
        [sys.executable, "-c", REQUESTS_CHILD, url], tunnel.port, stranger, tmp_path
    )
    assert code == 1
    assert out == ""


@requires_landlock
@pytest.mark.timeout(90)
async def test_direct_connections_fail_while_proxied_ones_work(
    tunnel: TunnelProxy, https_port: int, ca_file: Path, tmp_path: Path
) -> None:
    registry = CollectorRegistry()
    metrics = LaunchMetrics(registry)
    code, out = await _run(
        [sys.executable, "-c", DIRECT_CHILD, str(https_port)],
        tunnel.port,
        ca_file,
        tmp_path,
        metrics=metrics,
        require_enforcement=True,
    )
    assert code == 0
    assert out.split()[:2] == ["direct", "errno"]
    assert int(out.split()[2]) in {13, 1}  # EACCES / EPERM
    assert registry.get_sample_value("boundary_audit_run_launches_total", {"confined": "true"}) == 1
    url = f"https://localhost:{https_port}/"
    code, out = await _run(
        [sys.executable, "-c", REQUESTS_CHILD, url], tunnel.port, ca_file, tmp_path
    )
    assert (code, out) == (0, TLS_BODY.decode())


@pytest.mark.parametrize("exit_code", [0, 3, 255])
@pytest.mark.timeout(60)
async def test_exit_codes_are_returned(exit_code: int, ca_file: Path) -> None:
    code = await run_confined(
        [sys.executable, "-c", f"raise SystemExit({exit_code})"],
        proxy_url="http://127.0.0.1:9",
        ca_cert_path=ca_file,
    )
    assert code == exit_code


@pytest.mark.timeout(60)
async def test_death_by_signal_is_128_plus_n(ca_file: Path) -> None:
    code = await run_confined(
        [sys.executable, "-c", "import os, signal; os.kill(os.getpid(), signal.SIGKILL)"],
        proxy_url="http://127.0.0.1:9",
        ca_cert_path=ca_file,
    )
    assert code == 128 + signal.SIGKILL


@pytest.fixture(params=["confined", "unconfined"])
def spawn_path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Both ways of starting the command: through the exec helper (Landlock)
    and directly (no Landlock); the probe is the only thing replaced."""
    mode: str = request.param
    if mode == "confined" and not STATUS.network_available:
        pytest.skip(f"kernel cannot confine the network with Landlock: {STATUS.reason}")
    if mode == "unconfined":
        monkeypatch.setattr(confine, "require_network_confinement", _unavailable)
    return mode


@pytest.mark.timeout(60)
async def test_missing_and_non_executable_commands(
    spawn_path: str, ca_file: Path, tmp_path: Path
) -> None:
    registry = CollectorRegistry()
    metrics = LaunchMetrics(registry)
    with pytest.raises(LaunchError, match="command not found") as info:
        await run_confined(
            [str(tmp_path / "nope")],
            proxy_url="http://127.0.0.1:9",
            ca_cert_path=ca_file,
            metrics=metrics,
        )
    assert info.value.exit_code == confine.EXIT_NOT_FOUND
    plain = tmp_path / "plain.txt"
    plain.write_text("echo hi\n")
    with pytest.raises(LaunchError, match="cannot execute") as info:
        await run_confined(
            [str(plain)], proxy_url="http://127.0.0.1:9", ca_cert_path=ca_file, metrics=metrics
        )
    assert info.value.exit_code == confine.EXIT_CANNOT_EXECUTE
    assert str(plain) in str(info.value)
    missing_dir = tmp_path / "no-such-dir"
    with pytest.raises(LaunchError, match="cannot change to directory") as info:
        await run_confined(
            ["true"],
            proxy_url="http://127.0.0.1:9",
            ca_cert_path=ca_file,
            metrics=metrics,
            cwd=str(missing_dir),
        )
    assert info.value.exit_code == confine.EXIT_CANNOT_EXECUTE
    assert str(missing_dir) in str(info.value)
    failures = "boundary_audit_run_launch_failures_total"
    assert registry.get_sample_value(failures, {"reason": "not_found"}) == 1
    assert registry.get_sample_value(failures, {"reason": "cannot_execute"}) == 1
    assert registry.get_sample_value(failures, {"reason": "bad_cwd"}) == 1
    launches = registry.get_sample_value("boundary_audit_run_launches_total", {"confined": "true"})
    assert launches is None


@requires_landlock
@pytest.mark.timeout(60)
async def test_a_helper_that_dies_early_is_not_taken_for_a_started_command(
    ca_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """EOF on the status pipe without the helper's marker means the helper
    never got to exec (here: the "interpreter" is /bin/false)."""
    registry = CollectorRegistry()
    metrics = LaunchMetrics(registry)
    monkeypatch.setattr(sys, "executable", "/bin/false")
    marker = tmp_path / "ran"
    with pytest.raises(LaunchError, match="died before starting touch") as info:
        await run_confined(
            ["touch", str(marker)],
            proxy_url="http://127.0.0.1:9",
            ca_cert_path=ca_file,
            metrics=metrics,
        )
    assert info.value.exit_code == confine.EXIT_CANNOT_EXECUTE
    assert "exit code 1" in str(info.value)
    assert not marker.exists()
    monkeypatch.setattr(sys, "executable", str(tmp_path / "no-python"))
    with pytest.raises(LaunchError, match="cannot start the confinement helper") as info:
        await run_confined(
            ["touch", str(marker)],
            proxy_url="http://127.0.0.1:9",
            ca_cert_path=ca_file,
            metrics=metrics,
        )
    assert info.value.exit_code == confine.EXIT_CANNOT_EXECUTE
    assert not marker.exists()
    failures = "boundary_audit_run_launch_failures_total"
    assert registry.get_sample_value(failures, {"reason": "helper_failed"}) == 2


@pytest.mark.timeout(60)
async def test_bad_ca_file_stops_the_run_before_anything_starts(tmp_path: Path) -> None:
    registry = CollectorRegistry()
    marker = tmp_path / "ran"
    with pytest.raises(LaunchError, match="cannot read the proxy CA certificate"):
        await run_confined(
            ["touch", str(marker)],
            proxy_url="http://127.0.0.1:9",
            ca_cert_path=tmp_path / "missing-ca.pem",
            metrics=LaunchMetrics(registry),
        )
    assert not marker.exists()
    failures = "boundary_audit_run_launch_failures_total"
    assert registry.get_sample_value(failures, {"reason": "environment"}) == 1


@pytest.mark.timeout(60)
async def test_bad_arguments(ca_file: Path) -> None:
    with pytest.raises(ValueError, match="no command"):
        await run_confined([], proxy_url="http://127.0.0.1:9", ca_cert_path=ca_file)
    with pytest.raises(ValueError, match="has no port"):
        await run_confined(["true"], proxy_url="http://127.0.0.1", ca_cert_path=ca_file)
    with pytest.raises(ValueError, match="proxy port"):
        await run_confined(
            ["true"], proxy_url="http://127.0.0.1:9", ca_cert_path=ca_file, proxy_port=70000
        )


def _unavailable() -> int:
    raise ConfinementUnavailable("kernel Landlock ABI 3 has no network rules", abi=3)


@pytest.fixture
def no_landlock(monkeypatch: pytest.MonkeyPatch) -> None:
    """Stand in for a kernel without Landlock network rules: the probe is the
    only thing replaced, everything else (spawning, env) runs for real."""
    monkeypatch.setattr(confine, "require_network_confinement", _unavailable)


@pytest.mark.timeout(60)
async def test_enforcement_checked_up_front_is_not_checked_again(
    no_landlock: None, ca_file: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    enforced = launch.check_enforcement(require=False)
    assert enforced is False
    code, out = await _run(["echo", "ran"], 9, ca_file, tmp_path, enforced=enforced)
    assert (code, out) == (0, "ran\n")
    warnings = [
        record
        for record in caplog.records
        if isinstance(record.msg, dict) and "NOT ENFORCED" in record.msg["event"]
    ]
    assert len(warnings) == 1
    with pytest.raises(ConfinementUnavailable):
        launch.check_enforcement(require=True)


@pytest.mark.timeout(60)
async def test_require_enforcement_refuses_without_landlock(
    no_landlock: None, ca_file: Path, tmp_path: Path
) -> None:
    registry = CollectorRegistry()
    marker = tmp_path / "ran"
    with pytest.raises(ConfinementUnavailable, match="ABI 3"):
        await run_confined(
            ["touch", str(marker)],
            proxy_url="http://127.0.0.1:9",
            ca_cert_path=ca_file,
            require_enforcement=True,
            metrics=LaunchMetrics(registry),
        )
    assert not marker.exists()
    assert (
        registry.get_sample_value(
            "boundary_audit_run_launch_failures_total", {"reason": "confinement_unavailable"}
        )
        == 1
    )


@pytest.mark.timeout(60)
async def test_without_landlock_it_warns_once_and_runs_unconfined(
    no_landlock: None,
    ca_file: Path,
    tmp_path: Path,
    listener_port: int,
    caplog: pytest.LogCaptureFixture,
) -> None:
    registry = CollectorRegistry()
    code, out = await _run(
        [sys.executable, "-c", DIRECT_CHILD, str(listener_port)],
        9,
        ca_file,
        tmp_path,
        metrics=LaunchMetrics(registry),
    )
    assert (code, out) == (0, "direct ok\n")
    warnings = [
        record.msg
        for record in caplog.records
        if isinstance(record.msg, dict) and "NOT ENFORCED" in record.msg["event"]
    ]
    assert len(warnings) == 1
    assert "ABI 3" in warnings[0]["event"]
    assert warnings[0]["reason"] == "kernel Landlock ABI 3 has no network rules"
    assert (
        registry.get_sample_value("boundary_audit_run_launches_total", {"confined": "false"}) == 1
    )


@pytest.fixture
def listener_port() -> Iterator[int]:
    sock = socket.create_server(("127.0.0.1", 0))
    try:
        yield sock.getsockname()[1]
    finally:
        sock.close()


@pytest.mark.parametrize("ignores_sigterm", [False, True])
@pytest.mark.timeout(60)
async def test_cancelling_the_run_stops_the_command(
    ca_file: Path, tmp_path: Path, ignores_sigterm: bool
) -> None:
    pid_file = tmp_path / "pid"
    code = (
        "import os, signal, time\n"
        f"if {ignores_sigterm}: signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        f"open({str(pid_file)!r}, 'w').write(str(os.getpid()))\n"
        "time.sleep(600)\n"
    )
    task = asyncio.create_task(
        run_confined(
            [sys.executable, "-c", code],
            proxy_url="http://127.0.0.1:9",
            ca_cert_path=ca_file,
            cancel_grace=0.5,
        )
    )
    for _ in range(int(STEP_TIMEOUT / 0.05)):
        if pid_file.exists() and pid_file.read_text():
            break
        await asyncio.sleep(0.05)
    pid = int(pid_file.read_text())
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


# --------------------------------------------------------------------------- driver process

#: A small program embedding run_confined as ``boundary-audit run`` will: the
#: test talks to it from outside (stdin, signals), like a user or supervisor.
DRIVER = textwrap.dedent(
    """
    import asyncio, sys
    from boundary_audit.logs import configure_logging
    from boundary_audit.proxy.launch import run_confined
    configure_logging("debug")
    ca, command = sys.argv[1], sys.argv[2:]
    sys.exit(asyncio.run(run_confined(command, proxy_url="http://127.0.0.1:9", ca_cert_path=ca)))
    """
)

SIGNAL_CHILD = textwrap.dedent(
    """
    import os, signal, sys
    if sys.argv[1:] == ["setsid"]:
        os.setsid()  # leaves our process group and the terminal
    NAMES = ["SIGINT", "SIGHUP", "SIGQUIT", "SIGUSR1", "SIGUSR2"]
    def note(number, frame):
        print("got", signal.Signals(number).name, flush=True)
    def term(number, frame):
        print("got SIGTERM, exiting 42", flush=True)
        sys.exit(42)
    for name in NAMES:
        signal.signal(getattr(signal, name), note)
    signal.signal(signal.SIGTERM, term)
    print("ready", flush=True)
    while True:
        signal.pause()
    """
)


@contextlib.contextmanager
def _driver(ca_file: Path, command: list[str]) -> Iterator[subprocess.Popen[str]]:
    proc = subprocess.Popen(
        [sys.executable, "-c", DRIVER, str(ca_file), *command],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate(timeout=STEP_TIMEOUT)


@pytest.mark.timeout(90)
def test_signals_are_forwarded_and_exit_code_returned(ca_file: Path) -> None:
    with _driver(ca_file, [sys.executable, "-c", SIGNAL_CHILD]) as proc:
        assert proc.stdout is not None
        assert proc.stdout.readline() == "ready\n"
        for sig in (signal.SIGINT, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2):
            proc.send_signal(sig)
            assert proc.stdout.readline() == f"got {sig.name}\n"
        proc.send_signal(signal.SIGTERM)
        assert proc.stdout.readline() == "got SIGTERM, exiting 42\n"
        assert proc.wait(timeout=STEP_TIMEOUT) == 42
        assert proc.stderr is not None
        err = proc.stderr.read()
    assert err.count('"signal forwarded"') == 6


@pytest.mark.timeout(60)
def test_stdin_and_stdout_pass_through(ca_file: Path) -> None:
    child = (
        "import sys; data = sys.stdin.read(); sys.stdout.write(data.upper()); sys.exit(len(data))"
    )
    with _driver(ca_file, [sys.executable, "-c", child]) as proc:
        out, _ = proc.communicate("hello through the boundary\n", timeout=STEP_TIMEOUT)
        assert out == "HELLO THROUGH THE BOUNDARY\n"
        assert proc.returncode == len("hello through the boundary\n")


@pytest.mark.timeout(60)
def test_child_killed_by_sigkill_exits_137(ca_file: Path) -> None:
    child = "import os, signal; print('dying', flush=True); os.kill(os.getpid(), signal.SIGKILL)"
    with _driver(ca_file, [sys.executable, "-c", child]) as proc:
        out, err = proc.communicate(timeout=STEP_TIMEOUT)
        assert out == "dying\n"
        assert proc.returncode == 137
        assert '"signal": "SIGKILL"' in err


#: Starts DRIVER as the leader of a new session whose controlling terminal is
#: its stdin (a pty), like a shell running ``boundary-audit run`` in a terminal.
SESSION_LEADER = textwrap.dedent(
    """
    import fcntl, os, sys, termios
    os.setsid()
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)
    os.execv(sys.executable, [sys.executable, "-c", *sys.argv[1:]])
    """
)


def _read_until(master: int, wanted: bytes, buffer: bytearray) -> bytes:
    """Read the pty until ``wanted`` shows up (or EOF); return all output."""
    deadline = time.monotonic() + STEP_TIMEOUT
    while wanted not in buffer and time.monotonic() < deadline:
        ready, _, _ = select.select([master], [], [], 0.1)
        if not ready:
            continue
        try:
            chunk = os.read(master, 4096)
        except OSError:  # EIO: every slave end closed
            break
        if not chunk:
            break
        buffer.extend(chunk)
    return bytes(buffer)


@pytest.mark.parametrize("child_session", ["same", "setsid"])
@pytest.mark.timeout(90)
def test_ctrl_c_at_a_terminal_reaches_the_child_once(ca_file: Path, child_session: str) -> None:
    """The tty already delivers SIGINT to a child in the foreground group:
    forwarding it as well would make one Ctrl-C count twice. A child that left
    for its own session is not reached by the tty and must get it forwarded."""
    command = [sys.executable, "-c", SIGNAL_CHILD, child_session]
    master, slave = os.openpty()
    try:
        proc = subprocess.Popen(
            [sys.executable, "-c", SESSION_LEADER, DRIVER, str(ca_file), *command],
            stdin=slave,
            stdout=slave,
            stderr=subprocess.PIPE,
            text=True,
        )
        os.close(slave)
        slave = -1
        output = bytearray()
        assert b"ready" in _read_until(master, b"ready", output)
        os.write(master, b"\x03")  # Ctrl-C
        _read_until(master, b"got SIGINT", output)
        # Barrier: had the driver forwarded the SIGINT, it would have been sent
        # (and, as the lower signal number, handled) before this SIGUSR1.
        proc.send_signal(signal.SIGUSR1)
        _read_until(master, b"got SIGUSR1", output)
        proc.send_signal(signal.SIGTERM)
        final = _read_until(master, b"exiting 42", output)
        assert proc.wait(timeout=STEP_TIMEOUT) == 42
        assert proc.stderr is not None
        with proc.stderr:
            err = proc.stderr.read()
    finally:
        os.close(master)
        if slave >= 0:
            os.close(slave)
    assert final.count(b"got SIGINT") == 1, final
    if child_session == "same":
        assert '"reason": "terminal_delivered"' in err
        assert err.count('"signal forwarded"') == 2  # only SIGUSR1 and SIGTERM
    else:
        assert "terminal_delivered" not in err
        assert err.count('"signal forwarded"') == 3


def test_ca_directory_is_used_when_no_bundle_file_exists(
    ca: trustme.CA, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Distributions with only a hashed cert directory: its PEM files are
    concatenated (only the lookup paths are redirected here)."""
    certs = tmp_path / "certs"
    certs.mkdir()
    other = trustme.CA()
    ca.cert_pem.write_to_path(str(certs / "one.pem"))
    other.cert_pem.write_to_path(str(certs / "two.crt"))
    (certs / "README").write_text("not a certificate\n")
    (certs / "link.pem").symlink_to(certs / "one.pem")  # hashed-name links are deduplicated
    missing = str(tmp_path / "none.pem")
    paths = ssl.DefaultVerifyPaths(
        missing, str(certs), "SSL_CERT_FILE", missing, "SSL_CERT_DIR", str(certs)
    )
    monkeypatch.setattr(ssl, "get_default_verify_paths", lambda: paths)
    monkeypatch.setattr(launch, "WELL_KNOWN_CA_FILES", ())
    assert launch.find_system_ca_files() == [certs / "one.pem", certs / "two.crt"]
    out = tmp_path / "out"
    out.mkdir()
    bundle = write_ca_bundle(certs / "one.pem", out).read_bytes()
    assert bundle.count(PEM_BEGIN) == 3


# --------------------------------------------------------------------------- network isolation


def _isolation_problem() -> str | None:
    """Why this machine cannot run the isolation tests (None: it can)."""
    if not STATUS.network_available:
        return f"kernel cannot confine the network with Landlock: {STATUS.reason}"
    ours, theirs = socket.socketpair()
    with ours, theirs:
        argv = confine.helper_argv(sys.executable, [1], theirs.fileno(), ["true"], 40000)
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
    code, out = await _run(
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
    listener_port: int,
    ca_file: Path,
    tmp_path: Path,
) -> None:
    registry = CollectorRegistry()
    metrics = LaunchMetrics(registry)
    url = f"https://localhost:{https_port}/"
    code, out = await _run(
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

    host_service = f"127.0.0.1:{listener_port}"
    code, out = await _run(
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
        code, out = await _run(
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
        code, out = await _run(
            [sys.executable, "-c", sender, str(port)], tunnel.port, ca_file, tmp_path
        )
        assert (code, out) == (0, "sent\n")
        await asyncio.sleep(0.1)
        assert receiver.recv(16) == b"leak"


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
        code, out = await _run(
            [sys.executable, "-c", ECHO_CHILD, str(port), str(size)],
            port,
            ca_file,
            tmp_path,
            isolate_network=True,
        )
    assert (code, out) == (0, f"{size} True\n")


# --------------------------------------------------------------------------- with the real proxy

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
        pytest.skip(f"kernel cannot confine the network with Landlock: {STATUS.reason}")
    base = f"https://localhost:{https_port}"

    async def run(command: list[str]) -> tuple[int, str]:
        return await _run(
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

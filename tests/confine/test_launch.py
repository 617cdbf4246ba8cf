"""Running a command behind the proxy: CA trust through a proxy, confinement,
exit codes, launch failures and cancellation, with real child processes."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
import trustme
from prometheus_client import CollectorRegistry

from boundary_audit.confine import (
    EXIT_CANNOT_EXECUTE,
    EXIT_NOT_FOUND,
    ConfinementUnavailable,
    LaunchError,
    LaunchMetrics,
    check_enforcement,
    exit_code_from_returncode,
    landlock,
    run_confined,
)
from tests.support import aeventually

from .helpers import (
    NO_LANDLOCK,
    REQUESTS_CHILD,
    STATUS,
    STEP_TIMEOUT,
    TLS_BODY,
    UNUSED_PROXY_URL,
    TunnelProxy,
    requires_landlock,
    run_capturing,
    unavailable,
)


@pytest.mark.parametrize(
    ("returncode", "code"), [(0, 0), (3, 3), (255, 255), (-9, 137), (-15, 143)]
)
def test_exit_code_mapping(returncode: int, code: int) -> None:
    assert exit_code_from_returncode(returncode) == code


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


async def _launch(command: list[str], ca_file: Path, **options: Any) -> int:
    """run_confined for a command that never uses the proxy (stdio passed through)."""
    return await run_confined(command, proxy_url=UNUSED_PROXY_URL, ca_cert_path=ca_file, **options)


def _tls_client(kind: str, target: str) -> list[str]:
    """A child that fetches https://TARGET/ through HTTPS_PROXY and prints the body."""
    if kind == "requests":
        return [sys.executable, "-c", REQUESTS_CHILD, f"https://{target}/"]
    if kind == "ssl":
        return [sys.executable, "-c", SSL_CHILD, target]
    return ["curl", "--silent", "--show-error", "--max-time", "20", f"https://{target}/"]


@pytest.mark.parametrize("kind", ["requests", "ssl", "curl"])
@pytest.mark.timeout(90)
async def test_children_trust_the_bundle_through_the_proxy(
    tunnel: TunnelProxy, https_port: int, ca_file: Path, tmp_path: Path, kind: str
) -> None:
    """Python's requests and ssl, and curl, each verify the server through the
    CONNECT tunnel with the bundle that holds the test CA."""
    target = f"localhost:{https_port}"
    code, out = await run_capturing(_tls_client(kind, target), tunnel.port, ca_file, tmp_path)
    assert (code, out) == (0, TLS_BODY.decode())
    assert tunnel.targets == [target]


@pytest.mark.timeout(90)
async def test_a_ca_not_in_the_bundle_is_not_trusted(
    tunnel: TunnelProxy, https_port: int, tmp_path: Path
) -> None:
    stranger = tmp_path / "other-ca.pem"
    trustme.CA().cert_pem.write_to_path(str(stranger))
    url = f"https://localhost:{https_port}/"
    code, out = await run_capturing(
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
    code, out = await run_capturing(
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
    code, out = await run_capturing(
        [sys.executable, "-c", REQUESTS_CHILD, url], tunnel.port, ca_file, tmp_path
    )
    assert (code, out) == (0, TLS_BODY.decode())


@pytest.mark.parametrize("exit_code", [0, 3, 255])
@pytest.mark.timeout(60)
async def test_exit_codes_are_returned(exit_code: int, ca_file: Path) -> None:
    code = await _launch(
        [sys.executable, "-c", f"raise SystemExit({exit_code})"],
        ca_file,
    )
    assert code == exit_code


@pytest.mark.timeout(60)
async def test_death_by_signal_is_128_plus_n(ca_file: Path) -> None:
    code = await _launch(
        [sys.executable, "-c", "import os, signal; os.kill(os.getpid(), signal.SIGKILL)"],
        ca_file,
    )
    assert code == 128 + signal.SIGKILL


@pytest.fixture(params=["confined", "unconfined"])
def spawn_path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Both ways of starting the command: through the exec helper (Landlock)
    and directly (no Landlock); the probe is the only thing replaced."""
    mode: str = request.param
    if mode == "confined" and not STATUS.network_available:
        pytest.skip(NO_LANDLOCK)
    if mode == "unconfined":
        monkeypatch.setattr(landlock, "require_network_confinement", unavailable)
    return mode


@pytest.mark.timeout(60)
async def test_missing_and_non_executable_commands(
    spawn_path: str, ca_file: Path, tmp_path: Path
) -> None:
    registry = CollectorRegistry()
    metrics = LaunchMetrics(registry)
    with pytest.raises(LaunchError, match="command not found") as info:
        await _launch(
            [str(tmp_path / "nope")],
            ca_file,
            metrics=metrics,
        )
    assert info.value.exit_code == EXIT_NOT_FOUND
    plain = tmp_path / "plain.txt"
    plain.write_text("echo hi\n")
    with pytest.raises(LaunchError, match="cannot execute") as info:
        await _launch([str(plain)], ca_file, metrics=metrics)
    assert info.value.exit_code == EXIT_CANNOT_EXECUTE
    assert str(plain) in str(info.value)
    missing_dir = tmp_path / "no-such-dir"
    with pytest.raises(LaunchError, match="cannot change to directory") as info:
        await _launch(
            ["true"],
            ca_file,
            metrics=metrics,
            cwd=str(missing_dir),
        )
    assert info.value.exit_code == EXIT_CANNOT_EXECUTE
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
    marker = tmp_path / "ran"
    cases = [
        ("/bin/false", ["died before starting touch", "exit code 1"]),
        (str(tmp_path / "no-python"), ["cannot start the confinement helper"]),
    ]
    for interpreter, phrases in cases:
        monkeypatch.setattr(sys, "executable", interpreter)
        with pytest.raises(LaunchError) as info:
            await _launch(["touch", str(marker)], ca_file, metrics=metrics)
        assert info.value.exit_code == EXIT_CANNOT_EXECUTE
        for phrase in phrases:
            assert phrase in str(info.value)
        assert not marker.exists()
    failures = "boundary_audit_run_launch_failures_total"
    assert registry.get_sample_value(failures, {"reason": "helper_failed"}) == 2


@pytest.mark.timeout(60)
async def test_bad_ca_file_stops_the_run_before_anything_starts(tmp_path: Path) -> None:
    registry = CollectorRegistry()
    marker = tmp_path / "ran"
    with pytest.raises(LaunchError, match="cannot read the proxy CA certificate"):
        await _launch(
            ["touch", str(marker)],
            tmp_path / "missing-ca.pem",
            metrics=LaunchMetrics(registry),
        )
    assert not marker.exists()
    failures = "boundary_audit_run_launch_failures_total"
    assert registry.get_sample_value(failures, {"reason": "environment"}) == 1


@pytest.mark.timeout(60)
async def test_bad_arguments(ca_file: Path) -> None:
    with pytest.raises(ValueError, match="no command"):
        await _launch([], ca_file)
    with pytest.raises(ValueError, match="has no port"):
        await run_confined(["true"], proxy_url="http://127.0.0.1", ca_cert_path=ca_file)
    with pytest.raises(ValueError, match="proxy port"):
        await _launch(["true"], ca_file, proxy_port=70000)


@pytest.mark.timeout(60)
async def test_enforcement_checked_up_front_is_not_checked_again(
    no_landlock: None, ca_file: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    enforced = check_enforcement(require=False)
    assert enforced is False
    code, out = await run_capturing(["echo", "ran"], 9, ca_file, tmp_path, enforced=enforced)
    assert (code, out) == (0, "ran\n")
    warnings = [
        record
        for record in caplog.records
        if isinstance(record.msg, dict) and "NOT ENFORCED" in record.msg["event"]
    ]
    assert len(warnings) == 1
    with pytest.raises(ConfinementUnavailable):
        check_enforcement(require=True)


@pytest.mark.timeout(60)
async def test_require_enforcement_refuses_without_landlock(
    no_landlock: None, ca_file: Path, tmp_path: Path
) -> None:
    registry = CollectorRegistry()
    marker = tmp_path / "ran"
    with pytest.raises(ConfinementUnavailable, match="ABI 3"):
        await _launch(
            ["touch", str(marker)],
            ca_file,
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
    listener: int,
    caplog: pytest.LogCaptureFixture,
) -> None:
    registry = CollectorRegistry()
    code, out = await run_capturing(
        [sys.executable, "-c", DIRECT_CHILD, str(listener)],
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
        "while True: signal.pause()\n"
    )
    task = asyncio.create_task(
        _launch(
            [sys.executable, "-c", code],
            ca_file,
            cancel_grace=0.5,
        )
    )
    await aeventually(
        lambda: pid_file.exists() and pid_file.read_text(),
        "the command to write its pid",
        within=STEP_TIMEOUT,
    )
    pid = int(pid_file.read_text())
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)

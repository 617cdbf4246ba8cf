"""Who listens: the sender finds the agent where Coder's or our old default puts it,
and never sends a byte to a socket another user bound first."""

from __future__ import annotations

import json
import logging
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from boundary_audit.auditor import OpenResult, SocketAuditor
from boundary_audit.wire import DEFAULT_SOCKET_NAME
from tests.auditor.helpers import ev, project_python_env
from tests.receiver import Receiver
from tests.support import eventually, stop_process
from tests.support.users import SYSTEM_PYTHON, as_user, cannot_make_users, throwaway_user

pytestmark = pytest.mark.timeout(120)

#: A uid no account has: a socket file owned by it belongs to "someone else".
STRANGER_UID = 54_321
NO_USERS = cannot_make_users(python=True)


@pytest.fixture
def temp_dir(sock_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The OS temp dir as the sender resolves it, moved somewhere private to the test."""
    shared = sock_dir / "tmp"
    shared.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(shared))
    return shared


@pytest.fixture
def runtime_dir(sock_dir: Path) -> Path:
    runtime = sock_dir / "run"
    runtime.mkdir(mode=0o700)
    return runtime


def test_an_agent_at_our_old_default_is_found(temp_dir: Path, runtime_dir: Path) -> None:
    old = Receiver(runtime_dir / DEFAULT_SOCKET_NAME, acks=True).start()
    try:
        a = SocketAuditor(env={"XDG_RUNTIME_DIR": str(runtime_dir)})
        assert a.socket_paths == (temp_dir / DEFAULT_SOCKET_NAME, old.path)
        assert a.connect_now(timeout=10) is OpenResult.ACKNOWLEDGED
        assert a.stats.agent_socket == str(old.path)
        a.close()
    finally:
        old.stop()


def test_coders_default_is_preferred_when_both_listen(temp_dir: Path, runtime_dir: Path) -> None:
    new = Receiver(temp_dir / DEFAULT_SOCKET_NAME, acks=True).start()
    old = Receiver(runtime_dir / DEFAULT_SOCKET_NAME, acks=True).start()
    try:
        a = SocketAuditor(env={"XDG_RUNTIME_DIR": str(runtime_dir)})
        assert a.connect_now(timeout=10) is OpenResult.ACKNOWLEDGED
        assert a.stats.agent_socket == str(new.path)
        a.close()
        assert old.connections == 0
    finally:
        new.stop()
        old.stop()


@pytest.mark.skipif(os.geteuid() != 0, reason="chown to another uid needs root")
def test_an_untrusted_socket_is_refused_loudly_and_the_right_agent_taken_when_it_appears(
    temp_dir: Path, runtime_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    squatted = Receiver(temp_dir / DEFAULT_SOCKET_NAME).start()
    os.chown(squatted.path, STRANGER_UID, -1)  # bound "by someone else"
    try:
        with caplog.at_level(logging.ERROR, logger="boundary_audit"):
            a = SocketAuditor(env={"XDG_RUNTIME_DIR": str(runtime_dir)}, batch_interval=0.01)
            for i in range(3):
                a.audit(ev(i))
            eventually(lambda: a.stats.refused_listeners >= 3, "several refusals")
        refusals = [r for r in caplog.records if "not trusted" in str(r.msg)]
        assert len(refusals) == 1  # loud, once per change of state
        assert a.stats.sent == 0
        # The real agent starts at our old default: taken, the squatter never is.
        real = Receiver(runtime_dir / DEFAULT_SOCKET_NAME, acks=True).start()
        try:
            eventually(lambda: a.stats.delivered == 3, "delivered to the trusted agent")
            a.close()
            assert real.sequence_numbers() == [0, 1, 2]
        finally:
            real.stop()
        assert (squatted.connections, squatted.bytes_read) == (0, 0)
    finally:
        squatted.stop()


# -- a real second user ------------------------------------------------------------

SQUATTER = textwrap.dedent(
    """
    import os, select, signal, socket, sys
    path = sys.argv[1]
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(path)
    os.chmod(path, 0o777)  # "everyone is welcome"
    listener.listen(16)
    conns, total = [], 0
    signal.signal(signal.SIGTERM, lambda *_: (print("total", total, flush=True), os._exit(0)))
    print("listening", os.getuid(), flush=True)
    while True:
        readable, _, _ = select.select([listener, *conns], [], [])
        for s in readable:
            if s is listener:
                conns.append(listener.accept()[0])
                print("connection", flush=True)
            else:
                data = s.recv(65536)
                total += len(data)
                if not data:
                    conns.remove(s)
    """
)

SENDER = textwrap.dedent(
    """
    import dataclasses, json, os
    from boundary_audit.auditor import AuditEvent, SocketAuditor
    a = SocketAuditor(batch_interval=0.01)
    for i in range(5):
        url = f"https://secret.example/?token={i}"
        a.audit(AuditEvent("GET", url, "secret.example", True, "r"))
    result = a.connect_now(timeout=float(os.environ["CONNECT_NOW_TIMEOUT"]))
    a.close(timeout=0.5)
    stats = dataclasses.asdict(a.stats)
    print(json.dumps({"uid": os.getuid(), "result": str(result), **stats}), flush=True)
    """
)


@pytest.fixture(scope="module")
def squatter_user() -> Iterator[pwd.struct_passwd]:
    with throwaway_user("ba-squatter") as user:
        yield user


@pytest.fixture(scope="module")
def sender_user() -> Iterator[pwd.struct_passwd]:
    with throwaway_user("ba-sender") as user:
        yield user


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A world-writable sticky dir, like /tmp."""
    with tempfile.TemporaryDirectory(prefix="ba-shared-") as d:
        os.chmod(d, 0o1777)  # noqa: S103 - the shared dir under attack is world-writable
        yield Path(d)


def _start_squatter(user: pwd.struct_passwd, path: Path) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        as_user(user, [SYSTEM_PYTHON, "-I", "-c", SQUATTER, str(path)]),
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().split() == ["listening", str(user.pw_uid)]
    return proc


def _squatter_report(proc: subprocess.Popen[str]) -> list[str]:
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=30)
    return out.split()


#: How long the sender waits to claim its session when no trusted agent can
#: answer (the whole wait is spent), and when one can (it answers in ms).
REFUSED_WAIT_S = "0.5"
ANSWERED_WAIT_S = "10"


def _run_sender(user: pwd.struct_passwd, shared: Path, **env: str) -> dict[str, object]:
    spill = shared / f"spill-{user.pw_name}"  # made by the sender itself: its own, 0700
    result = subprocess.run(
        as_user(user, [SYSTEM_PYTHON, "-c", SENDER]),
        env={
            **project_python_env(),
            "TMPDIR": str(shared),
            "BOUNDARY_AUDIT_SPILL_DIR": str(spill),
            "CONNECT_NOW_TIMEOUT": REFUSED_WAIT_S,
        }
        | env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    report: dict[str, object] = json.loads(result.stdout)
    assert report["uid"] == user.pw_uid
    return report


@pytest.mark.skipif(NO_USERS is not None, reason=NO_USERS or "")
def test_a_squatter_in_the_shared_temp_dir_gets_not_one_byte(
    squatter_user: pwd.struct_passwd, sender_user: pwd.struct_passwd, shared_dir: Path
) -> None:
    """Another user binds the default socket first; a sender (a third,
    unprivileged user) refuses it, twice over: the file is not owned by a
    trusted uid, and, when the file looks right, the listener's SO_PEERCRED."""
    path = shared_dir / DEFAULT_SOCKET_NAME
    squatter = _start_squatter(squatter_user, path)
    try:
        report = _run_sender(sender_user, shared_dir)
    finally:
        assert _squatter_report(squatter) == ["total", "0"]
    assert report["result"] == "unreachable"
    assert (report["sent"], report["agent_socket"]) == (0, "")
    assert isinstance(report["refused_listeners"], int)
    assert report["refused_listeners"] >= 1
    assert (report["spilled"], report["undelivered"]) == (5, 0)  # kept for a real agent

    # The file made to look like the sender's own: only the listener check is left.
    path.unlink()
    squatter = _start_squatter(squatter_user, path)
    os.chown(path, sender_user.pw_uid, sender_user.pw_gid)
    try:
        report = _run_sender(sender_user, shared_dir)
    finally:
        words = _squatter_report(squatter)
    # It connected (that is how SO_PEERCRED is read) and sent nothing.
    assert words[-2:] == ["total", "0"]
    assert "connection" in words
    assert (report["sent"], report["result"]) == (0, "unreachable")
    assert isinstance(report["refused_listeners"], int)
    assert report["refused_listeners"] >= 1


@pytest.mark.skipif(NO_USERS is not None, reason=NO_USERS or "")
def test_a_service_users_agent_in_a_directory_root_gave_it_is_sent_to(
    squatter_user: pwd.struct_passwd, sender_user: pwd.struct_passwd, shared_dir: Path
) -> None:
    """The same listener, in a directory root made for it (systemd's
    RuntimeDirectory= of a DynamicUser agent: its uid is not known in
    advance), is the real agent: nobody else could have bound there."""
    run = Path(tempfile.mkdtemp(prefix="ba-run-"))  # like /run: root's, 0755
    try:
        os.chmod(run, 0o755)  # noqa: S103 - readable, writable by root only
        service = run / "boundary-audit"
        service.mkdir()
        os.chmod(service, 0o711)  # noqa: S103 - others may reach the socket, not list or add
        os.chown(service, squatter_user.pw_uid, squatter_user.pw_gid)
        path = service / DEFAULT_SOCKET_NAME
        agent = _start_squatter(squatter_user, path)
        try:
            report = _run_sender(
                sender_user,
                shared_dir,
                CODER_AGENT_BOUNDARY_LOG_PROXY_SOCKET_PATH=str(path),
                CONNECT_NOW_TIMEOUT=ANSWERED_WAIT_S,
            )
        finally:
            words = _squatter_report(agent)
        assert (report["result"], report["refused_listeners"]) == ("read", 0)
        assert report["sent"] == 5
        assert int(words[-1]) > 0
    finally:
        shutil.rmtree(run, ignore_errors=True)


@pytest.mark.skipif(NO_USERS is not None, reason=NO_USERS or "")
def test_past_a_squatter_the_sender_delivers_to_its_real_agent(
    squatter_user: pwd.struct_passwd, sender_user: pwd.struct_passwd, shared_dir: Path
) -> None:
    """The squatter holds Coder's default; the user's agent (run by root here)
    listens at our old default in the user's runtime dir: found, and only it."""
    runtime = shared_dir / "run"
    runtime.mkdir(mode=0o700)
    os.chown(runtime, sender_user.pw_uid, sender_user.pw_gid)
    squatter = _start_squatter(squatter_user, shared_dir / DEFAULT_SOCKET_NAME)
    agent = Receiver(runtime / DEFAULT_SOCKET_NAME, acks=True).start()
    # Connecting takes write permission on the socket file; root's agent grants it.
    os.chmod(agent.path, 0o666)  # noqa: S103
    try:
        report = _run_sender(
            sender_user,
            shared_dir,
            XDG_RUNTIME_DIR=str(runtime),
            CONNECT_NOW_TIMEOUT=ANSWERED_WAIT_S,
        )
        assert report["result"] == "acknowledged"
        assert report["agent_socket"] == str(agent.path)
        assert (report["delivered"], report["spilled"]) == (5, 0)
        assert sorted(agent.sequence_numbers()) == list(range(5))
    finally:
        agent.stop()
        assert _squatter_report(squatter) == ["total", "0"]
        stop_process(squatter, 5)

"""Issue 10 item 2: the confined command cannot kill, stop or trace its launcher.

Landlock's scopes (ABI 6) refuse signals from inside the sandbox to any
process outside it, and every Landlock ABI refuses ptrace of such processes.
The attack makes two real requests, then goes for the launcher (its parent):
SIGKILL, SIGSTOP, kill(0) of its whole process group, pidfd_send_signal and
PTRACE_ATTACH. The launcher must survive to deliver both events.
"""

from __future__ import annotations

import errno
from pathlib import Path

import pytest

from tests.e2e.helpers import DELIVERY_TIMEOUT_S, POLL_S, CollectorProcess
from tests.support import eventually
from tests.support.services import AgentProcess

from .helpers import requires_landlock, requires_scopes, run_attack

pytestmark = [pytest.mark.timeout(300), requires_landlock, requires_scopes]

#: Refusals of a signal or ptrace across the sandbox's edge.
REFUSED = ["error", errno.EPERM]

KILL_LAUNCHER = r"""
port = int(sys.argv[1])
out["requests"] = requests(port, "kill")
launcher = os.getppid()
libc = ctypes.CDLL(None, use_errno=True)
def ptrace_attach():
    if libc.ptrace(16, launcher, 0, 0) != 0:  # PTRACE_ATTACH
        raise OSError(ctypes.get_errno(), "ptrace")
attempt("sigstop", lambda: os.kill(launcher, signal.SIGSTOP))
attempt("sigkill", lambda: os.kill(launcher, signal.SIGKILL))
group = os.getpgid(launcher)
os.setpgid(0, 0)  # out of the launcher's group, so killpg cannot hit us
attempt("group_kill", lambda: os.killpg(group, signal.SIGKILL))
def pidfd_kill():
    fd = os.pidfd_open(launcher)
    try:
        signal.pidfd_send_signal(fd, signal.SIGKILL)
    finally:
        os.close(fd)
attempt("pidfd_kill", pidfd_kill)
attempt("ptrace", ptrace_attach)
attempt("mem", lambda: open(f"/proc/{launcher}/mem", "rb").close())
attempt("root", lambda: os.listdir(f"/proc/{launcher}/root/"))
print(json.dumps(out))
"""


def test_launcher_survives_kill_stop_and_ptrace_and_both_events_are_stored(
    tmp_path: Path, upstream: int, agent_process: AgentProcess, collector_process: CollectorProcess
) -> None:
    result = run_attack(
        tmp_path, KILL_LAUNCHER, [str(upstream)], socket_path=agent_process.socket_path
    )
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.out
    assert out["requests"] == [200, 403]
    for step in ("sigstop", "sigkill", "group_kill", "pidfd_kill", "ptrace"):
        assert out[step] == REFUSED, (step, out[step])
    # The launcher's memory and its view of the filesystem are out of reach too.
    assert out["mem"][0] == "error", out["mem"]
    assert out["mem"][1] in (errno.EPERM, errno.EACCES), out["mem"]
    assert out["root"][0] == "error", out["root"]
    summary = result.summary()
    assert summary["sent_to_agent"] == 2, summary
    assert summary["undelivered"] == 0, summary

    def stored() -> bool:
        session = collector_process.session(result.session_id)
        return session is not None and session["allowed"] + session["denied"] == 2

    eventually(stored, "both events at the collector", within=DELIVERY_TIMEOUT_S, interval=POLL_S)
    session = collector_process.session(result.session_id)
    assert session is not None
    assert (session["allowed"], session["denied"]) == (1, 1), session

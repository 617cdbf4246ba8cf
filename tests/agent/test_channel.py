"""The audit channel cannot be exhausted or squatted (issue 10, the agent's part)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import sys
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from boundary_audit.agent import Agent, SocketInUseError
from boundary_audit.auditor import SocketAuditor
from tests.support import aeventually
from tests.support.doubles import CollectorDouble
from tests.support.users import cannot_make_users, run_as, throwaway_user

from .helpers import ConfigFactory, connect, metric
from .test_interop import event

pytestmark = pytest.mark.timeout(120)

#: Idle connections the hostile process holds (the issue's "a few hundred").
HOG_CONNECTIONS = 300
#: First-frame timeout of the agent in the idle-connection test: short, so
#: the test sees the held slots freed.
SHORT_FIRST_FRAME_TIMEOUT_S = 1.0
#: The hog: double-forks (a daemon, no longer our child), opens its
#: connections (refused ones are closed by the agent; it keeps trying to
#: hold them), writes its pid, and waits to be killed.
HOG = """
import os, socket, sys, time
path, pidfile, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
if os.fork():
    sys.exit(0)
os.setsid()
if os.fork():
    sys.exit(0)
held = []
for _ in range(n):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.connect(path)
    except OSError:
        s.close()
        continue
    held.append(s)
with open(pidfile + ".tmp", "w") as f:
    f.write(str(os.getpid()))
os.rename(pidfile + ".tmp", pidfile)
while True:
    time.sleep(60)
"""


@contextlib.asynccontextmanager
async def daemon_hog(socket_path: Path, workdir: Path) -> AsyncIterator[int]:
    pidfile = workdir / "hog.pid"
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", HOG, str(socket_path), str(pidfile), str(HOG_CONNECTIONS)
    )
    assert await proc.wait() == 0  # the first fork exits at once: the hog is a daemon
    await aeventually(pidfile.exists)
    pid = int(pidfile.read_text())
    try:
        yield pid
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


async def test_one_process_holding_hundreds_of_idle_connections_locks_nobody_out(
    make_config: ConfigFactory, collector_double: CollectorDouble, sock_dir: Path
) -> None:
    config = make_config(first_frame_timeout=SHORT_FIRST_FRAME_TIMEOUT_S)
    async with Agent(config) as agent, daemon_hog(agent.socket_path, sock_dir):
        refused = "boundary_audit_agent_connections_rejected_total"
        await aeventually(
            lambda: (
                metric(agent, refused, reason="too_many_per_pid")
                == HOG_CONNECTIONS - config.max_connections_per_pid
            )
        )
        session = str(uuid.uuid4())
        auditor = SocketAuditor(agent.socket_path, session_id=session)
        for i in range(100):
            auditor.audit(event(i))
        await asyncio.to_thread(auditor.close, 20)
        assert auditor.stats.agent_acknowledges is True
        await aeventually(lambda: collector_double.order(session) == list(range(100)))
        # The held slots that never sent a frame are freed after the timeout.
        await aeventually(
            lambda: (
                metric(
                    agent,
                    "boundary_audit_agent_connections_closed_total",
                    reason="no_frame_timeout",
                )
                == config.max_connections_per_pid
            )
        )
        assert agent.health()[1]["connections"] == 0


async def test_a_connection_that_sends_a_frame_is_not_closed_for_idleness(
    make_config: ConfigFactory, collector_double: CollectorDouble
) -> None:
    from .helpers import closed_by_peer, logs_frame, new_session

    config = make_config(first_frame_timeout=SHORT_FIRST_FRAME_TIMEOUT_S)
    async with Agent(config) as agent:
        reader, writer = await connect(agent.socket_path)
        writer.write(logs_frame(new_session(), 0, 1))
        # Waiting twice the first-frame timeout proves the agent keeps a
        # quiet connection that did send a frame.
        assert not await closed_by_peer(reader, within=2 * SHORT_FIRST_FRAME_TIMEOUT_S)
        writer.close()


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A world-writable sticky directory, like /tmp (in it, so every user can reach it)."""
    base = Path(tempfile.mkdtemp(prefix="ba-shared-"))
    base.chmod(0o755)
    shared = base / "shared"
    shared.mkdir()
    shared.chmod(0o1777)
    try:
        yield shared
    finally:
        shutil.rmtree(base)


@pytest.mark.skipif(cannot_make_users() is not None, reason=str(cannot_make_users()))
@pytest.mark.parametrize("planted", ["lock_symlink", "socket_symlink", "foreign_lock"])
async def test_files_planted_by_another_user_in_a_shared_dir_are_refused_loudly(
    make_config: ConfigFactory, shared_dir: Path, planted: str
) -> None:
    socket_path = shared_dir / "agent.sock"
    target = shared_dir / "victim"
    with throwaway_user(f"ba-squat-{os.getpid() % 10000}") as user:
        if planted == "lock_symlink":
            run_as(user, "ln", "-s", str(target), str(shared_dir / "agent.sock.lock"))
            expected = "symlink"
        elif planted == "socket_symlink":
            run_as(user, "ln", "-s", str(target), str(socket_path))
            expected = "symlink"
        else:
            run_as(user, "touch", str(shared_dir / "agent.sock.lock"))
            expected = f"uid {user.pw_uid}"
        agent = Agent(make_config(socket_path=socket_path))
        with pytest.raises(SocketInUseError, match=expected):
            await agent.start()
    assert not target.exists()  # nothing was created through the symlink

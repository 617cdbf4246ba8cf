"""Starting the command, directly or through the exec helper (the parent's side).

The helper reports on a socket pair (see :mod:`.helper` for the protocol);
what it says, or its silence, becomes a started process or a
:class:`LaunchError` with the exit code a shell would give.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from ..logs import get_logger
from .errors import EXIT_CANNOT_EXECUTE, EXIT_NOT_FOUND, LaunchError
from .helper import (
    DNS_MESSAGE,
    EXEC_MARKER,
    HELPER_SCRIPT,
    LISTENER_MESSAGE,
    OBSERVER_MESSAGE,
    WARNING_PREFIX,
    helper_argv,
)
from .metrics import LaunchMetrics

#: Offset of the exit code reported for a child killed by a signal (shells).
SIGNAL_EXIT_BASE = 128
#: Most bytes read from the exec helper's status pipe; its messages are one
#: short line (an error and a path).
STATUS_READ_LIMIT = 65536
#: Descriptors accepted on the status channel (the helper sends one).
MAX_STATUS_FDS = 4


def exit_code_from_returncode(returncode: int) -> int:
    """Map a ``Popen.returncode`` to a process exit code (signal N -> 128 + N)."""
    return SIGNAL_EXIT_BASE - returncode if returncode < 0 else returncode


async def _wait_readable(sock: socket.socket) -> None:
    loop = asyncio.get_running_loop()
    ready: asyncio.Future[None] = loop.create_future()

    def wake() -> None:
        if not ready.done():
            ready.set_result(None)

    loop.add_reader(sock.fileno(), wake)
    try:
        await ready
    finally:
        loop.remove_reader(sock.fileno())


async def _read_status(sock: socket.socket) -> tuple[bytes, list[int]]:
    """Read the helper's status channel to EOF (it is close-on-exec in the
    helper, so EOF comes with the exec or the helper's death): its messages
    and any descriptors passed along (the isolated listener)."""
    sock.setblocking(False)
    data = bytearray()
    fds: list[int] = []
    while len(data) < STATUS_READ_LIMIT:
        try:
            chunk, new_fds, _flags, _addr = socket.recv_fds(sock, STATUS_READ_LIMIT, MAX_STATUS_FDS)
        except BlockingIOError:
            await _wait_readable(sock)
            continue
        fds.extend(new_fds)
        if not chunk:
            break
        data += chunk
    return bytes(data), fds


async def _create(
    argv: Sequence[str],
    command: Sequence[str],
    *,
    env: Mapping[str, str],
    cwd: str | None,
    metrics: LaunchMetrics,
    pass_fds: Sequence[int] = (),
) -> asyncio.subprocess.Process:
    """Start ``argv``; turn the fork/exec errors into :class:`LaunchError`."""
    try:
        return await asyncio.create_subprocess_exec(*argv, env=env, cwd=cwd, pass_fds=pass_fds)
    except OSError as exc:
        if cwd is not None and exc.filename == cwd:
            reason, code = "bad_cwd", EXIT_CANNOT_EXECUTE
            message = f"cannot change to directory {cwd}: {exc.strerror}"
        elif argv[0] != command[0]:  # the confinement helper's interpreter
            reason, code = "helper_failed", EXIT_CANNOT_EXECUTE
            message = f"cannot start the confinement helper {argv[0]}: {exc.strerror}"
        elif isinstance(exc, FileNotFoundError):
            reason, code = "not_found", EXIT_NOT_FOUND
            message = f"{command[0]}: command not found"
        else:
            reason, code = "cannot_execute", EXIT_CANNOT_EXECUTE
            message = f"{command[0]}: cannot execute: {exc.strerror}"
        metrics.launch_failures.labels(reason=reason).inc()
        raise LaunchError(message, code) from exc


async def spawn_direct(
    command: Sequence[str], env: Mapping[str, str], cwd: str | None, metrics: LaunchMetrics
) -> asyncio.subprocess.Process:
    return await _create(command, command, env=env, cwd=cwd, metrics=metrics)


@dataclass(slots=True)
class Handed:
    """What the exec helper handed over: the isolated listener, the DNS
    stub's socket, the seccomp notification listener (each when asked for
    and available)."""

    listener: socket.socket | None = None
    dns: socket.socket | None = None
    observer: int | None = None

    def close(self) -> None:
        for sock in (self.listener, self.dns):
            if sock is not None:
                sock.close()
        if self.observer is not None:
            os.close(self.observer)


def _take_status(
    status: bytes, fds: list[int], metrics: LaunchMetrics, name: str
) -> tuple[bytes, Handed]:
    """Log the helper's warnings, take the descriptors it sent (in the order
    of their messages) and return what is left of its status."""
    while status.startswith(WARNING_PREFIX):
        line, _, status = status.partition(b"\n")
        metrics.confinement_warnings.inc()
        get_logger("run").warning(
            line.removeprefix(WARNING_PREFIX).decode("utf-8", "replace"), command=name
        )
    listener: socket.socket | None = None
    if status.startswith(LISTENER_MESSAGE) and fds:
        listener = socket.socket(fileno=fds.pop(0))
        status = status.removeprefix(LISTENER_MESSAGE)
    dns: socket.socket | None = None
    if status.startswith(DNS_MESSAGE) and fds:
        dns = socket.socket(fileno=fds.pop(0))
        status = status.removeprefix(DNS_MESSAGE)
    observer: int | None = None
    if status.startswith(OBSERVER_MESSAGE) and fds:
        observer = fds.pop(0)
        status = status.removeprefix(OBSERVER_MESSAGE)
    for fd in fds:  # nothing else is expected; do not leak it
        os.close(fd)
    return status, Handed(listener, dns, observer)


async def spawn_confined(
    command: Sequence[str],
    *,
    port: int,
    env: Mapping[str, str],
    cwd: str | None,
    metrics: LaunchMetrics,
    isolate: bool = False,
    cover_dirs: Sequence[str] = (),
    cover_files: Sequence[str] = (),
    observe: bool = False,
    resolv_conf: str | None = None,
) -> tuple[asyncio.subprocess.Process, Handed]:
    """Start COMMAND through the exec helper; with ``isolate`` also return the
    listener the helper made in the command's network namespace (and, with
    ``resolv_conf``, the DNS stub's socket), with ``observe`` the seccomp
    notification listener (each None where the kernel has none; the helper
    warned). The ``cover_*`` paths are hidden from it (see :mod:`.mounts`)."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        argv = helper_argv(
            sys.executable,
            [port],
            theirs.fileno(),
            command,
            port if isolate else None,
            cover_dirs=cover_dirs,
            cover_files=cover_files,
            observe=observe,
            resolv_conf=resolv_conf if isolate else None,
        )
        process = await _create(
            argv, command, env=env, cwd=cwd, metrics=metrics, pass_fds=(theirs.fileno(),)
        )
    except BaseException:
        ours.close()
        raise
    finally:
        theirs.close()
    try:
        with ours:
            status, fds = await _read_status(ours)
    except BaseException:
        # Cancelled before COMMAND even started: do not leave it behind.
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        await process.wait()
        raise
    status, handed = _take_status(status, fds, metrics, command[0])
    if status == EXEC_MARKER and (handed.listener is not None or not isolate):
        return process, handed
    handed.close()
    returncode = await process.wait()
    exited = exit_code_from_returncode(returncode)
    if not status:
        metrics.launch_failures.labels(reason="helper_failed").inc()
        raise LaunchError(
            f"the confinement helper {HELPER_SCRIPT} died before starting "
            f"{command[0]} (exit code {exited})",
            EXIT_CANNOT_EXECUTE,
        )
    message = status.removeprefix(EXEC_MARKER).decode("utf-8", "replace")
    kind, _, detail = message.partition(": ")
    if kind == "confine":
        metrics.launch_failures.labels(reason="confinement_failed").inc()
        raise LaunchError(f"could not confine {command[0]}: {detail}", exited)
    errno_text, _, reason = detail.partition(": ")
    if exited == EXIT_NOT_FOUND:
        metrics.launch_failures.labels(reason="not_found").inc()
        raise LaunchError(f"{command[0]}: command not found", exited)
    metrics.launch_failures.labels(reason="cannot_execute").inc()
    raise LaunchError(f"cannot execute {reason} (errno {errno_text})", exited)


__all__ = [
    "SIGNAL_EXIT_BASE",
    "Handed",
    "exit_code_from_returncode",
    "spawn_confined",
    "spawn_direct",
]

"""The exec helper: confine the child, then exec COMMAND (both sides of its protocol).

Confinement is applied in the child only, between ``fork`` and the final
``exec``, by running ``python -I -S exec_helper.py --connect-port P -- COMMAND``
(:data:`HELPER_SCRIPT`): the parent is never restricted, and no Python code
runs in a forked copy of a multi-threaded parent (what ``preexec_fn`` would
do). ``-I -S``: the helper must not be steered by the child's ``PYTHON*``
variables or ``site`` hooks, and starts faster without them; so it and every
module it loads (:mod:`.landlock`, :mod:`.seccomp`, :mod:`.netns`) use the
standard library only.

The protocol on the status descriptor: the helper writes :data:`EXEC_MARKER`
just before the final exec (a failure message may follow it), or a one-line
``confine: ...`` reason and exits 126; with ``--isolate-port`` it first sends
:data:`LISTENER_MESSAGE` with the in-namespace listener (SCM_RIGHTS). The
descriptor is close-on-exec, so EOF right after the marker means COMMAND runs.
Before any of these, lines starting with :data:`WARNING_PREFIX` say what
protection the kernel could not give (the parent logs them as warnings).

``--cover-dir``/``--cover-file``: hide these paths from COMMAND in a private
mount namespace (:mod:`.mounts`), locked before the exec.
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import socket
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import NoReturn

from .errors import EXIT_CANNOT_EXECUTE, EXIT_NOT_FOUND, ConfinementError
from .landlock import check_port, restrict_connect
from .mounts import (
    CLONE_NEWNS,
    cover_directory,
    cover_file,
    enter_user_namespace,
    lock_mounts,
    make_mounts_private,
)
from .netns import LOOPBACK_ADDRESS, enter_network_namespace, open_isolated_listener
from .seccomp import install_bypass_filter, install_observer

#: The file the child's interpreter runs (it loads this module; see its docstring).
HELPER_SCRIPT = Path(os.path.abspath(__file__)).with_name("exec_helper.py")
#: Written to the status pipe just before the final exec; a failure message
#: may follow it, and EOF right after it means COMMAND is running.
EXEC_MARKER = b"exec\n"
#: Status message that carries the in-namespace listener (SCM_RIGHTS).
LISTENER_MESSAGE = b"listener\n"
#: Status message that carries the DNS stub's UDP socket (SCM_RIGHTS).
DNS_MESSAGE = b"dns\n"
#: Where resolvers look for their name server, and where the stub listens.
RESOLV_CONF = "/etc/resolv.conf"
DNS_STUB_PORT = 53
#: Status message that carries the seccomp notification listener (SCM_RIGHTS).
OBSERVER_MESSAGE = b"observer\n"
#: Start of a status line that carries a warning (one line, up to ``\n``).
WARNING_PREFIX = b"warning: "
#: Signals whose disposition Python sets to SIG_IGN at start-up and which an
#: exec'd program would otherwise inherit as ignored (``yes | head`` would
#: never stop on SIGPIPE).
_SIGNALS_TO_RESET = ("SIGPIPE", "SIGXFSZ", "SIGXFZ", "SIGINT")


def restrict_network(allowed_connect_ports: Iterable[int], refuse_raw: bool = True) -> None:
    """Restrict the calling thread, and everything it later executes, so that
    TCP connections can only be opened to ``allowed_connect_ports``: Landlock
    for ``connect()``, then the seccomp filter for the ways around it.

    Irreversible: call it only in a child about to exec (see :func:`main`).
    """
    restrict_connect(allowed_connect_ports)
    install_bypass_filter(refuse_raw)


def helper_argv(
    python: str,
    allowed_connect_ports: Iterable[int],
    status_fd: int,
    command: Sequence[str],
    isolate_port: int | None = None,
    *,
    cover_dirs: Sequence[str] = (),
    cover_files: Sequence[str] = (),
    observe: bool = False,
    resolv_conf: str | None = None,
) -> list[str]:
    """The argv that runs ``command`` through the exec helper.

    ``isolate_port``: first enter a private network namespace and hand back a
    listener on that loopback port (the status fd must then be a Unix socket).
    ``cover_dirs``/``cover_files``: absolute paths hidden from the command.
    ``observe``: hand back a seccomp listener for connect/sendto (:mod:`.supervisor`).
    ``resolv_conf`` (with ``isolate_port`` and covers): bind this file over
    /etc/resolv.conf and hand back a UDP socket on the namespace's port 53
    for the launcher's DNS stub (:mod:`.dnsstub`).
    """
    argv = [python, "-I", "-S", str(HELPER_SCRIPT), "--status-fd", str(status_fd)]
    for port in allowed_connect_ports:
        argv += ["--connect-port", str(check_port(port))]
    if isolate_port is not None:
        argv += ["--isolate-port", str(check_port(isolate_port))]
    for flag, paths in (("--cover-dir", cover_dirs), ("--cover-file", cover_files)):
        for path in paths:
            if not os.path.isabs(path):
                raise ValueError(f"cover path must be absolute: {path!r}")
            argv += [flag, path]
    if observe:
        argv += ["--observe", "1"]
    if resolv_conf is not None:
        argv += ["--resolv-conf", resolv_conf]
    return [*argv, "--", *command]


def _send_socket(status_fd: int, message: bytes, sock: socket.socket) -> None:
    with sock:
        channel = socket.socket(fileno=status_fd)
        try:
            socket.send_fds(channel, [message], [sock.fileno()])
        finally:
            channel.detach()


def _send_dns_stub(status_fd: int, resolv_conf: str) -> None:
    """Point the namespace's resolver at 127.0.0.1 and hand the stub's socket over."""
    try:
        cover_file(RESOLV_CONF, resolv_conf)
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            sock.bind((LOOPBACK_ADDRESS, DNS_STUB_PORT))
        except BaseException:
            sock.close()
            raise
    except (ConfinementError, OSError) as exc:
        _warn(status_fd, f"no DNS stub, names do not resolve: {exc}")
        return
    _send_socket(status_fd, DNS_MESSAGE, sock)


def _warn(status_fd: int, message: str) -> None:
    line = WARNING_PREFIX + message.replace("\n", " ").encode("utf-8", "replace") + b"\n"
    try:
        os.write(status_fd, line)
    except OSError:
        sys.stderr.write(f"boundary-audit: {message}\n")


def _apply_covers(status_fd: int, args: _HelperArgs) -> None:
    make_mounts_private()
    for path in args.cover_dirs:
        cover_directory(path)
    for path in args.cover_files:
        if not os.path.lexists(path):
            continue  # gone since the parent looked: nothing left to hide
        try:
            cover_file(path)
        except ConfinementError as exc:
            _warn(status_fd, f"{path} is NOT hidden from the command: {exc}")


def _install_observer(status_fd: int) -> int | None:
    """The observation filter's listener, or None (with a warning) where the
    kernel has none."""
    try:
        return install_observer()
    except ConfinementError as exc:
        _warn(status_fd, f"attempts around the proxy are NOT recorded: {exc}")
        return None


def _send_observer(status_fd: int, listener: int) -> None:
    """Last step before exec: the listener goes to the parent and is closed
    here (the command must never hold it)."""
    try:
        channel = socket.socket(fileno=status_fd)
        try:
            socket.send_fds(channel, [OBSERVER_MESSAGE], [listener])
        finally:
            channel.detach()
    finally:
        os.close(listener)


def _enter_sandbox(status_fd: int, args: _HelperArgs) -> None:
    """Namespaces: the network one when isolating (its failure is fatal), the
    mount one with the covers (its absence a warning), locked before exec."""
    covers = bool(args.cover_dirs or args.cover_files)
    if args.isolate_port is not None:
        enter_network_namespace(CLONE_NEWNS if covers else 0)
    elif covers:
        try:
            enter_user_namespace(CLONE_NEWNS)
        except ConfinementError as exc:
            _warn(
                status_fd,
                "the agent's socket and the audit trail's files are NOT hidden from the "
                f"command: {exc}",
            )
            return
    if covers:
        _apply_covers(status_fd, args)
    if args.isolate_port is not None:
        _send_socket(status_fd, LISTENER_MESSAGE, open_isolated_listener(args.isolate_port))
        if covers and args.resolv_conf is not None:
            _send_dns_stub(status_fd, args.resolv_conf)
    if covers:
        lock_mounts()


def _report(status_fd: int, message: str) -> None:
    try:
        os.write(status_fd, message.encode("utf-8", "replace"))
    except OSError:
        # The parent's exit code check still tells a failure apart; stderr
        # is the only other place left to say it.
        sys.stderr.write(f"boundary-audit: {message}\n")


@dataclass(slots=True)
class _HelperArgs:
    command: list[str]
    status_fd: int = -1
    ports: list[int] = field(default_factory=list)
    isolate_port: int | None = None
    cover_dirs: list[str] = field(default_factory=list)
    cover_files: list[str] = field(default_factory=list)
    observe: bool = False
    resolv_conf: str | None = None


def _parse_helper_args(argv: Sequence[str]) -> _HelperArgs:
    args = list(argv)
    if "--" not in args:
        raise ValueError("no -- before the command")
    sep = args.index("--")
    options, command = args[:sep], args[sep + 1 :]
    if not command:
        raise ValueError("no command after --")
    parsed = _HelperArgs(command=command)
    for flag, value in zip(options[::2], options[1::2], strict=True):
        if flag == "--status-fd":
            parsed.status_fd = int(value)
        elif flag == "--connect-port":
            parsed.ports.append(int(value))
        elif flag == "--isolate-port":
            parsed.isolate_port = int(value)
        elif flag == "--cover-dir":
            parsed.cover_dirs.append(value)
        elif flag == "--cover-file":
            parsed.cover_files.append(value)
        elif flag == "--observe":
            parsed.observe = value == "1"
        elif flag == "--resolv-conf":
            parsed.resolv_conf = value
        else:
            raise ValueError(f"unknown option {flag}")
    return parsed


def main(argv: Sequence[str]) -> NoReturn:
    """Exec helper: confine, then exec ``COMMAND``; on failure write a one-line
    reason to the status descriptor and exit 126/127 (never run unconfined)."""
    for name in _SIGNALS_TO_RESET:
        number = getattr(signal, name, None)
        if number is not None:
            signal.signal(number, signal.SIG_DFL)
    try:
        args = _parse_helper_args(argv)
    except ValueError as exc:
        sys.stderr.write(f"boundary-audit confine helper: bad arguments: {exc}\n")
        os._exit(EXIT_CANNOT_EXECUTE)
    status_fd, command = args.status_fd, args.command
    if status_fd >= 0:
        os.set_inheritable(status_fd, False)
    try:
        _enter_sandbox(status_fd, args)
        # The observer first: with it, raw sockets are refused (and
        # recorded) through the launcher instead of by the bypass filter.
        observer = _install_observer(status_fd) if args.observe else None
        restrict_network(args.ports, refuse_raw=observer is None)
        if observer is not None:
            _send_observer(status_fd, observer)
    except (ConfinementError, OSError, ValueError) as exc:
        _report(status_fd, f"confine: {exc}")
        os._exit(EXIT_CANNOT_EXECUTE)
    if status_fd >= 0:
        # Tells the parent the helper got this far: EOF without this marker
        # means the helper itself died (e.g. Python could not start), which
        # must not pass for a successful exec.
        with contextlib.suppress(OSError):
            os.write(status_fd, EXEC_MARKER)
    try:
        # Exec'ing COMMAND is this helper's whole purpose (no shell involved).
        os.execvp(command[0], command)  # noqa: S606
    except OSError as exc:
        code = EXIT_NOT_FOUND if exc.errno == errno.ENOENT else EXIT_CANNOT_EXECUTE
        _report(status_fd, f"exec: {exc.errno}: {command[0]}: {exc.strerror}")
        os._exit(code)


__all__ = [
    "DNS_MESSAGE",
    "EXEC_MARKER",
    "HELPER_SCRIPT",
    "LISTENER_MESSAGE",
    "OBSERVER_MESSAGE",
    "WARNING_PREFIX",
    "helper_argv",
    "main",
    "restrict_network",
]

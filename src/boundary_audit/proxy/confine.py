"""Landlock network confinement: only the proxy's TCP port may be connected to.

Why Landlock: it needs no root (an unprivileged process restricts itself and
everything it later starts) and it cannot be undone by the confined process.
Its network rules (ABI >= 4, Linux 6.7+) decide ``connect()`` on TCP sockets by
destination *port only*, for any address, IPv4 and IPv6 alike. Consequences:

* another local service listening on the proxy's port number (on another
  address) is reachable too; the proxy listens on a random free port, which
  makes a collision unlikely but not impossible;
* only TCP is covered: UDP (DNS, QUIC), Unix sockets and already-open
  descriptors are not restricted by these rules.

Binding is left unrestricted on purpose: ``bind``/``listen`` send nothing out,
and confined build tools and test suites legitimately run local servers (which
they then cannot connect to over TCP, except through the proxy port).

This module imports only the standard library because it doubles as the tiny
exec helper (``python -I -S confine.py --connect-port P -- COMMAND``) that
applies the ruleset in the child, between ``fork`` and the final ``exec``, so
the parent is never restricted and no Python code runs in a forked copy of a
multi-threaded parent (what ``preexec_fn`` would do).
"""

from __future__ import annotations

import ctypes
import errno
import os
import platform
import signal
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import NoReturn

#: Landlock syscall numbers per machine (``uname -m``). x86_64 and aarch64
#: (asm-generic table) share them since syscall numbers were unified in 5.x.
LANDLOCK_SYSCALLS: dict[str, tuple[int, int, int]] = {
    # (landlock_create_ruleset, landlock_add_rule, landlock_restrict_self)
    "x86_64": (444, 445, 446),
    "aarch64": (444, 445, 446),
}

#: Flag of landlock_create_ruleset: return the highest supported ABI instead
#: of creating a ruleset (include/uapi/linux/landlock.h).
LANDLOCK_CREATE_RULESET_VERSION = 1 << 0
#: Network access rights (ABI >= 4).
LANDLOCK_ACCESS_NET_BIND_TCP = 1 << 0
LANDLOCK_ACCESS_NET_CONNECT_TCP = 1 << 1
#: Rule type whose attribute is ``struct landlock_net_port_attr``.
LANDLOCK_RULE_NET_PORT = 2
#: First ABI with network rules (Linux 6.7).
LANDLOCK_NET_MIN_ABI = 4
#: prctl option that makes privileges impossible to gain on exec; Landlock
#: requires it for unprivileged callers (include/uapi/linux/prctl.h).
PR_SET_NO_NEW_PRIVS = 38

#: Exit codes of the exec helper when it fails before running COMMAND,
#: following the shell's convention (126: cannot run, 127: not found).
EXIT_CANNOT_EXECUTE = 126
EXIT_NOT_FOUND = 127
#: Largest TCP port number.
MAX_PORT = 65535
#: Signals whose disposition Python sets to SIG_IGN at start-up and which an
#: exec'd program would otherwise inherit as ignored (``yes | head`` would
#: never stop on SIGPIPE).
_SIGNALS_TO_RESET = ("SIGPIPE", "SIGXFSZ", "SIGXFZ", "SIGINT")


class ConfinementError(RuntimeError):
    """Network confinement could not be set up."""


class ConfinementUnavailable(ConfinementError):
    """This kernel (or machine, or sandbox) cannot confine the network with Landlock."""

    def __init__(self, reason: str, abi: int | None = None) -> None:
        self.reason = reason
        self.abi = abi
        super().__init__(f"Landlock network confinement is unavailable: {reason}")


class _RulesetAttr(ctypes.Structure):
    # Only the fields up to handled_access_net: the kernel accepts a shorter
    # struct from older callers and treats the missing fields as zero.
    _fields_ = (("handled_access_fs", ctypes.c_uint64), ("handled_access_net", ctypes.c_uint64))


class _NetPortAttr(ctypes.Structure):
    _fields_ = (("allowed_access", ctypes.c_uint64), ("port", ctypes.c_uint64))


@dataclass(frozen=True, slots=True)
class LandlockStatus:
    """The kernel's Landlock ABI (``None`` when absent) and, when network rules
    cannot be used, why not."""

    abi: int | None
    reason: str | None

    @property
    def network_available(self) -> bool:
        return self.reason is None


def _syscall_numbers() -> tuple[int, int, int] | None:
    return LANDLOCK_SYSCALLS.get(platform.machine())


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def _syscall(libc: ctypes.CDLL, number: int, *args: object) -> int:
    ctypes.set_errno(0)
    result: int = libc.syscall(ctypes.c_long(number), *args)
    return result


def landlock_status() -> LandlockStatus:
    """Probe the kernel's Landlock support without changing anything."""
    numbers = _syscall_numbers()
    if numbers is None:
        return LandlockStatus(None, f"no Landlock syscall numbers known for {platform.machine()}")
    if sys.platform != "linux":
        return LandlockStatus(None, f"Landlock is Linux-only (this is {sys.platform})")
    libc = _libc()
    abi = _syscall(
        libc,
        numbers[0],
        ctypes.c_void_p(None),
        ctypes.c_size_t(0),
        ctypes.c_uint32(LANDLOCK_CREATE_RULESET_VERSION),
    )
    if abi < 0:
        err = ctypes.get_errno()
        if err == errno.ENOSYS:
            why = "the kernel has no Landlock support (ENOSYS: too old or built without it)"
        elif err == errno.EOPNOTSUPP:
            why = "Landlock is built in but disabled at boot (not in the kernel's lsm= list)"
        else:
            why = f"landlock_create_ruleset failed: {os.strerror(err)} (errno {err})"
        return LandlockStatus(None, why)
    if abi < LANDLOCK_NET_MIN_ABI:
        return LandlockStatus(
            abi,
            f"kernel Landlock ABI {abi} has no network rules "
            f"(needs ABI >= {LANDLOCK_NET_MIN_ABI}, Linux 6.7 or later)",
        )
    return LandlockStatus(abi, None)


def landlock_abi_version() -> int | None:
    """The highest Landlock ABI the kernel supports, ``None`` without Landlock."""
    return landlock_status().abi


def require_network_confinement() -> int:
    """Return the Landlock ABI, or raise :class:`ConfinementUnavailable` saying why
    the network cannot be confined here."""
    status = landlock_status()
    if status.reason is not None:
        raise ConfinementUnavailable(status.reason, status.abi)
    assert status.abi is not None
    return status.abi


def _check_port(port: int) -> int:
    if not 1 <= port <= MAX_PORT:
        raise ValueError(f"TCP port must be in 1..{MAX_PORT}, got {port}")
    return port


def restrict_network(allowed_connect_ports: Iterable[int]) -> None:
    """Restrict the calling thread, and everything it later executes, so that
    TCP ``connect()`` only succeeds to ``allowed_connect_ports``.

    Irreversible: call it only in a child about to exec (see :func:`main`).
    """
    ports = sorted({_check_port(p) for p in allowed_connect_ports})
    numbers = _syscall_numbers()
    status = landlock_status()
    if status.reason is not None or numbers is None:
        raise ConfinementUnavailable(status.reason or "unsupported machine", status.abi)
    create, add_rule, restrict_self = numbers
    libc = _libc()
    attr = _RulesetAttr(handled_access_fs=0, handled_access_net=LANDLOCK_ACCESS_NET_CONNECT_TCP)
    ruleset_fd = _syscall(
        libc, create, ctypes.byref(attr), ctypes.c_size_t(ctypes.sizeof(attr)), ctypes.c_uint32(0)
    )
    if ruleset_fd < 0:
        raise _os_failure("landlock_create_ruleset")
    try:
        for port in ports:
            rule = _NetPortAttr(allowed_access=LANDLOCK_ACCESS_NET_CONNECT_TCP, port=port)
            rc = _syscall(
                libc,
                add_rule,
                ctypes.c_int(ruleset_fd),
                ctypes.c_int(LANDLOCK_RULE_NET_PORT),
                ctypes.byref(rule),
                ctypes.c_uint32(0),
            )
            if rc < 0:
                raise _os_failure(f"landlock_add_rule (port {port})")
        ctypes.set_errno(0)
        if libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
            raise _os_failure("prctl(PR_SET_NO_NEW_PRIVS)")
        if _syscall(libc, restrict_self, ctypes.c_int(ruleset_fd), ctypes.c_uint32(0)) < 0:
            raise _os_failure("landlock_restrict_self")
    finally:
        os.close(ruleset_fd)


def _os_failure(what: str) -> ConfinementError:
    err = ctypes.get_errno()
    return ConfinementError(f"{what} failed: {os.strerror(err)} (errno {err})")


def helper_argv(
    python: str, allowed_connect_ports: Iterable[int], status_fd: int, command: Sequence[str]
) -> list[str]:
    """The argv that runs ``command`` through this module's exec helper.

    ``-I -S``: the helper must not be steered by the child's ``PYTHON*``
    variables or ``site`` hooks, and starts faster without them.
    """
    argv = [python, "-I", "-S", os.path.abspath(__file__), "--status-fd", str(status_fd)]
    for port in allowed_connect_ports:
        argv += ["--connect-port", str(_check_port(port))]
    return [*argv, "--", *command]


def _report(status_fd: int, message: str) -> None:
    try:
        os.write(status_fd, message.encode("utf-8", "replace"))
    except OSError:
        # The parent's exit code check still tells a failure apart; stderr
        # is the only other place left to say it.
        sys.stderr.write(f"boundary-audit: {message}\n")


def main(argv: Sequence[str]) -> NoReturn:
    """Exec helper: confine, then exec ``COMMAND``; on failure write a one-line
    reason to the status descriptor and exit 126/127 (never run unconfined)."""
    for name in _SIGNALS_TO_RESET:
        number = getattr(signal, name, None)
        if number is not None:
            signal.signal(number, signal.SIG_DFL)
    args = list(argv)
    status_fd = -1
    ports: list[int] = []
    try:
        sep = args.index("--")
        options, command = args[:sep], args[sep + 1 :]
        for flag, value in zip(options[::2], options[1::2], strict=True):
            if flag == "--status-fd":
                status_fd = int(value)
            elif flag == "--connect-port":
                ports.append(int(value))
            else:
                raise ValueError(f"unknown option {flag}")
        if not command:
            raise ValueError("no command after --")
    except ValueError as exc:
        sys.stderr.write(f"boundary-audit confine helper: bad arguments: {exc}\n")
        os._exit(EXIT_CANNOT_EXECUTE)
    if status_fd >= 0:
        os.set_inheritable(status_fd, False)
    try:
        restrict_network(ports)
    except (ConfinementError, ValueError) as exc:
        _report(status_fd, f"confine: {exc}")
        os._exit(EXIT_CANNOT_EXECUTE)
    try:
        # Exec'ing COMMAND is this helper's whole purpose (no shell involved).
        os.execvp(command[0], command)  # noqa: S606
    except OSError as exc:
        code = EXIT_NOT_FOUND if exc.errno == errno.ENOENT else EXIT_CANNOT_EXECUTE
        _report(status_fd, f"exec: {exc.errno}: {command[0]}: {exc.strerror}")
        os._exit(code)


if __name__ == "__main__":
    main(sys.argv[1:])

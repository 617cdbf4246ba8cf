"""Landlock network confinement: only the proxy's TCP port may be connected to.

Why Landlock: it needs no root (an unprivileged process restricts itself and
everything it later starts) and it cannot be undone by the confined process.
Its network rules (ABI >= 4, Linux 6.7+) decide ``connect()`` on TCP sockets by
destination *port only*, for any address, IPv4 and IPv6 alike. Consequences:

* any host listening on the proxy's port number is reachable too: another
  local service on another address, or a remote server whose owner
  listens on that port on purpose (the port is no secret to the child, it is
  in ``HTTP_PROXY``). The proxy listens on a random free port, which makes
  an accidental match unlikely; a deliberate one is not prevented by
  Landlock (the optional network namespace below closes it);
* only TCP is covered: UDP (DNS, QUIC), Unix sockets (a local service such
  as a Docker socket can still be asked to connect out) and already-open
  descriptors are not restricted by these rules (the namespace closes UDP).

Landlock only sees ``connect()``. TCP Fast Open sends and MPTCP sockets open
TCP connections without it, and raw IP/packet sockets (for a process that
has CAP_NET_RAW) bypass TCP altogether, so a seccomp filter installed
alongside refuses them (and io_uring, whose operations seccomp cannot
inspect); 32-bit compat programs get no sockets at all, since their socket
calls could dodge the filter's argument checks.

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

import contextlib
import ctypes
import errno
import fcntl
import os
import platform
import signal
import socket
import struct
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
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
#: Written to the status pipe just before the final exec; a failure message
#: may follow it, and EOF right after it means COMMAND is running.
EXEC_MARKER = b"exec\n"
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
    TCP connections can only be opened to ``allowed_connect_ports`` (Landlock
    for ``connect()``, plus :func:`install_bypass_filter` for the rest).

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
    install_bypass_filter()


# --------------------------------------------------------------------------- seccomp
#
# Landlock decides in the kernel's socket_connect hook, and two ways of opening
# a TCP connection never pass through it (verified on Linux 6.18):
#   * TCP Fast Open: sendto/sendmsg/sendmmsg with MSG_FASTOPEN connects and
#     sends in one call;
#   * MPTCP sockets (IPPROTO_MPTCP), which fall back to plain TCP with any
#     server and are not subject to Landlock's TCP rules.
# Raw IP and packet sockets skip the TCP stack entirely (CAP_NET_RAW only).
# io_uring operations are invisible to seccomp, so io_uring is refused as a
# whole. A classic-BPF seccomp filter closes these; it is permanent and
# inherited like the Landlock domain.


@dataclass(frozen=True, slots=True)
class _SeccompArch:
    audit_arch: int
    socket: int
    sendto: int
    sendmsg: int
    sendmmsg: int
    io_uring_setup: int
    #: Syscall numbers with this bit set belong to another ABI of the same
    #: audit arch (x86_64's x32); all are refused.
    foreign_nr_bit: int | None
    #: 32-bit compat ABI of this machine and its socket-creating syscalls,
    #: refused so a 32-bit program cannot bypass the argument checks.
    compat_arch: int
    compat_socket_syscalls: tuple[int, ...]


#: Per-machine numbers (arch/*/include/uapi/asm/unistd*.h, linux/audit.h).
SECCOMP_ARCHES: dict[str, _SeccompArch] = {
    "x86_64": _SeccompArch(
        audit_arch=0xC000003E,  # AUDIT_ARCH_X86_64
        socket=41,
        sendto=44,
        sendmsg=46,
        sendmmsg=307,
        io_uring_setup=425,
        foreign_nr_bit=0x40000000,  # __X32_SYSCALL_BIT
        compat_arch=0x40000003,  # AUDIT_ARCH_I386
        compat_socket_syscalls=(102, 359),  # socketcall, socket
    ),
    "aarch64": _SeccompArch(
        audit_arch=0xC00000B7,  # AUDIT_ARCH_AARCH64
        socket=198,
        sendto=206,
        sendmsg=211,
        sendmmsg=269,
        io_uring_setup=425,
        foreign_nr_bit=None,
        compat_arch=0x40000028,  # AUDIT_ARCH_ARM
        compat_socket_syscalls=(281,),  # socket (EABI has no socketcall)
    ),
}
#: linux/socket.h: the send flag that turns a send into connect + send.
MSG_FASTOPEN = 0x20000000
#: netinet/in.h: Multipath TCP.
IPPROTO_MPTCP = 262
#: Address families and socket type bits (linux/socket.h, linux/net.h). Raw
#: IP and packet sockets build TCP by hand past Landlock; only a process with
#: CAP_NET_RAW (e.g. one run as root) can open them, and it must not either.
#: Raw netlink sockets stay allowed (getaddrinfo and getifaddrs use them).
AF_INET = 2
AF_INET6 = 10
AF_PACKET = 17
SOCK_RAW = 3
#: The socket type without SOCK_NONBLOCK/SOCK_CLOEXEC.
SOCK_TYPE_MASK = 0xF
#: prctl option and mode that install a seccomp BPF filter.
PR_SET_SECCOMP = 22
SECCOMP_MODE_FILTER = 2
#: Filter return values (linux/seccomp.h); ERRNO carries the errno in the
#: low 16 bits.
SECCOMP_RET_ALLOW = 0x7FFF0000
SECCOMP_RET_ERRNO = 0x00050000
#: Offsets in struct seccomp_data: nr, arch, then 64-bit args from 16. Both
#: supported machines are little-endian, so an argument's low 32 bits (all an
#: int flag or protocol has) come first.
_SECCOMP_NR_OFFSET = 0
_SECCOMP_ARCH_OFFSET = 4
_SECCOMP_ARGS_OFFSET = 16
_SECCOMP_ARG_SIZE = 8
#: Classic BPF opcodes (linux/filter.h).
_BPF_LD_W_ABS = 0x20
_BPF_JEQ_K = 0x15
_BPF_JSET_K = 0x45
_BPF_JGE_K = 0x35
_BPF_RET_K = 0x06
_BPF_AND_K = 0x54
#: Largest classic-BPF conditional jump offset (an unsigned byte).
_BPF_MAX_JUMP = 255


class _SockFilter(ctypes.Structure):
    _fields_ = (
        ("code", ctypes.c_uint16),
        ("jt", ctypes.c_uint8),
        ("jf", ctypes.c_uint8),
        ("k", ctypes.c_uint32),
    )


class _SockFprog(ctypes.Structure):
    _fields_ = (("len", ctypes.c_ushort), ("filter", ctypes.POINTER(_SockFilter)))


# An instruction before assembly: opcode, true/false jump targets (labels or
# None for "next"), constant.
_Insn = tuple[int, str | None, str | None, int]


def _arg_low(index: int) -> int:
    return _SECCOMP_ARGS_OFFSET + _SECCOMP_ARG_SIZE * index


def _errno_ret(err: int) -> _Insn:
    return (_BPF_RET_K, None, None, SECCOMP_RET_ERRNO | err)


def _bypass_program(arch: _SeccompArch) -> list[tuple[int, int, int, int]]:
    """The filter as (code, jt, jf, k) tuples, jumps resolved from labels."""
    allow: _Insn = (_BPF_RET_K, None, None, SECCOMP_RET_ALLOW)
    blocks: list[tuple[str, list[_Insn]]] = [
        (
            "start",
            [
                (_BPF_LD_W_ABS, None, None, _SECCOMP_ARCH_OFFSET),
                (_BPF_JEQ_K, None, "compat", arch.audit_arch),
                (_BPF_LD_W_ABS, None, None, _SECCOMP_NR_OFFSET),
                *(
                    [(_BPF_JGE_K, "enosys", None, arch.foreign_nr_bit)]
                    if arch.foreign_nr_bit is not None
                    else []
                ),
                (_BPF_JEQ_K, "socket", None, arch.socket),
                (_BPF_JEQ_K, "flags3", None, arch.sendto),
                (_BPF_JEQ_K, "flags3", None, arch.sendmmsg),
                (_BPF_JEQ_K, "flags2", None, arch.sendmsg),
                (_BPF_JEQ_K, "enosys", None, arch.io_uring_setup),
                allow,
            ],
        ),
        (
            "socket",
            [
                (_BPF_LD_W_ABS, None, None, _arg_low(0)),
                (_BPF_JEQ_K, "eacces", None, AF_PACKET),
                (_BPF_JEQ_K, "inet", None, AF_INET),
                (_BPF_JEQ_K, "inet", None, AF_INET6),
                allow,
            ],
        ),
        (
            "inet",
            [
                (_BPF_LD_W_ABS, None, None, _arg_low(2)),
                (_BPF_JEQ_K, "noproto", None, IPPROTO_MPTCP),
                (_BPF_LD_W_ABS, None, None, _arg_low(1)),
                (_BPF_AND_K, None, None, SOCK_TYPE_MASK),
                (_BPF_JEQ_K, "eacces", None, SOCK_RAW),
                allow,
            ],
        ),
        (
            "flags3",
            [
                (_BPF_LD_W_ABS, None, None, _arg_low(3)),
                (_BPF_JSET_K, "eacces", None, MSG_FASTOPEN),
                allow,
            ],
        ),
        (
            "flags2",
            [
                (_BPF_LD_W_ABS, None, None, _arg_low(2)),
                (_BPF_JSET_K, "eacces", None, MSG_FASTOPEN),
                allow,
            ],
        ),
        (
            "compat",
            [
                (_BPF_JEQ_K, None, "enosys", arch.compat_arch),
                (_BPF_LD_W_ABS, None, None, _SECCOMP_NR_OFFSET),
                *[(_BPF_JEQ_K, "eacces", None, nr) for nr in arch.compat_socket_syscalls],
                allow,
            ],
        ),
        # What programs get where the kernel lacks a feature, so they fall back.
        ("noproto", [_errno_ret(errno.EPROTONOSUPPORT)]),
        ("enosys", [_errno_ret(errno.ENOSYS)]),
        # Same errno as a connect() that Landlock refuses.
        ("eacces", [_errno_ret(errno.EACCES)]),
    ]
    labels: dict[str, int] = {}
    flat: list[_Insn] = []
    for label, insns in blocks:
        labels[label] = len(flat)
        flat.extend(insns)

    def offset(here: int, target: str | None) -> int:
        if target is None:
            return 0
        jump = labels[target] - here - 1
        if not 0 <= jump <= _BPF_MAX_JUMP:
            raise ConfinementError(f"seccomp filter jump to {target} out of range ({jump})")
        return jump

    return [(code, offset(i, jt), offset(i, jf), k) for i, (code, jt, jf, k) in enumerate(flat)]


def install_bypass_filter() -> None:
    """Refuse TCP Fast Open sends, MPTCP, raw IP and packet sockets, and
    io_uring in the calling thread and everything it later executes (see the
    comment above).

    Irreversible, like :func:`restrict_network` (which calls it).
    """
    arch = SECCOMP_ARCHES.get(platform.machine())
    if arch is None:
        raise ConfinementUnavailable(f"no seccomp syscall table for {platform.machine()}")
    program = _bypass_program(arch)
    filters = (_SockFilter * len(program))(*(_SockFilter(*insn) for insn in program))
    fprog = _SockFprog(len(program), ctypes.cast(filters, ctypes.POINTER(_SockFilter)))
    libc = _libc()
    ctypes.set_errno(0)
    if libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        raise _os_failure("prctl(PR_SET_NO_NEW_PRIVS)")
    if libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.byref(fprog), 0, 0) != 0:
        raise _os_failure("prctl(PR_SET_SECCOMP)")


def _os_failure(what: str) -> ConfinementError:
    err = ctypes.get_errno()
    return ConfinementError(f"{what} failed: {os.strerror(err)} (errno {err})")


# --------------------------------------------------------------------------- network namespace
#
# Optional, stronger isolation: the command runs in a new (unprivileged) user
# and network namespace that has nothing but its own loopback. The helper
# listens there on the proxy's port and hands that listening socket to the
# parent, which relays each connection to the real proxy. Nothing else is
# reachable: no other host on the proxy's port number, no UDP (so no DNS and
# no QUIC), no TCP service of the host. Needs unprivileged user namespaces.

#: unshare(2) flags (linux/sched.h).
CLONE_NEWUSER = 0x10000000
CLONE_NEWNET = 0x40000000
#: ioctls that read and set an interface's flags (linux/sockios.h); IFF_UP.
SIOCGIFFLAGS = 0x8913
SIOCSIFFLAGS = 0x8914
IFF_UP = 0x1
#: struct ifreq on 64-bit Linux: a 16-byte name, then a 24-byte union whose
#: first member is the short flags.
_IFREQ = struct.Struct("16sH22x")
LOOPBACK_INTERFACE = b"lo"
LOOPBACK_ADDRESS = "127.0.0.1"
#: Pending connections the in-namespace listener queues before the parent
#: accepts them; a burst of parallel downloads should not be refused.
ISOLATED_LISTEN_BACKLOG = 128
#: Status message that carries the in-namespace listener (SCM_RIGHTS).
LISTENER_MESSAGE = b"listener\n"


def _write_proc(path: str, text: str) -> None:
    with open(path, "w", encoding="ascii") as fh:
        fh.write(text)


def enter_network_namespace() -> None:
    """Move the calling process into a new user + network namespace whose
    only interface, loopback, is up. Same uid/gid inside, so files keep their
    owners and the command gets no capabilities once it execs."""
    uid, gid = os.getuid(), os.getgid()
    libc = _libc()
    ctypes.set_errno(0)
    if libc.unshare(CLONE_NEWUSER | CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise ConfinementUnavailable(
            f"cannot create a user and network namespace: {os.strerror(err)} (errno {err}); "
            "unprivileged user namespaces may be disabled on this system"
        )
    try:
        _write_proc("/proc/self/setgroups", "deny")
        _write_proc("/proc/self/uid_map", f"{uid} {uid} 1")
        _write_proc("/proc/self/gid_map", f"{gid} {gid} 1")
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            current = fcntl.ioctl(sock, SIOCGIFFLAGS, _IFREQ.pack(LOOPBACK_INTERFACE, 0))
            flags = _IFREQ.unpack(current)[1]
            fcntl.ioctl(sock, SIOCSIFFLAGS, _IFREQ.pack(LOOPBACK_INTERFACE, flags | IFF_UP))
    except OSError as exc:
        raise ConfinementUnavailable(f"cannot set up the network namespace: {exc}") from exc


def open_isolated_listener(port: int) -> socket.socket:
    """Listen on loopback ``port`` in the current (new) network namespace."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.bind((LOOPBACK_ADDRESS, _check_port(port)))
        sock.listen(ISOLATED_LISTEN_BACKLOG)
    except BaseException:
        sock.close()
        raise
    return sock


def helper_argv(
    python: str,
    allowed_connect_ports: Iterable[int],
    status_fd: int,
    command: Sequence[str],
    isolate_port: int | None = None,
) -> list[str]:
    """The argv that runs ``command`` through this module's exec helper.

    ``isolate_port``: first enter a private network namespace and hand back a
    listener on that loopback port (the status fd must then be a Unix socket).
    ``-I -S``: the helper must not be steered by the child's ``PYTHON*``
    variables or ``site`` hooks, and starts faster without them.
    """
    argv = [python, "-I", "-S", os.path.abspath(__file__), "--status-fd", str(status_fd)]
    for port in allowed_connect_ports:
        argv += ["--connect-port", str(_check_port(port))]
    if isolate_port is not None:
        argv += ["--isolate-port", str(_check_port(isolate_port))]
    return [*argv, "--", *command]


def _isolate(status_fd: int, port: int) -> None:
    enter_network_namespace()
    with open_isolated_listener(port) as listener:
        channel = socket.socket(fileno=status_fd)
        try:
            socket.send_fds(channel, [LISTENER_MESSAGE], [listener.fileno()])
        finally:
            channel.detach()


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
        if args.isolate_port is not None:
            _isolate(status_fd, args.isolate_port)
        restrict_network(args.ports)
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


if __name__ == "__main__":
    main(sys.argv[1:])

"""A seccomp filter that closes the ways around Landlock's ``connect()`` hook.

Landlock decides in the kernel's socket_connect hook, and two ways of opening
a TCP connection never pass through it (verified on Linux 6.18):

* TCP Fast Open: sendto/sendmsg/sendmmsg with MSG_FASTOPEN connects and
  sends in one call;
* MPTCP sockets (IPPROTO_MPTCP), which fall back to plain TCP with any
  server and are not subject to Landlock's TCP rules.

Raw IP and packet sockets skip the TCP stack entirely (CAP_NET_RAW only).
io_uring operations are invisible to seccomp, so io_uring is refused as a
whole. 32-bit compat programs get no sockets at all, since their socket calls
could dodge the filter's argument checks. The classic-BPF filter is permanent
and inherited like the Landlock domain.

The program is assembled by a pure function (:func:`bypass_program`, tested
for every known machine); only :func:`install_bypass_filter` touches the
kernel. Standard library only, like every module the exec helper loads.
"""

from __future__ import annotations

import ctypes
import errno
import platform
from dataclasses import dataclass

from .errors import ConfinementError, ConfinementUnavailable
from .syscall import libc, os_failure, set_no_new_privs


@dataclass(frozen=True, slots=True)
class SeccompArch:
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
    #: connect(2) and seccomp(2), for the observation filter.
    connect: int
    seccomp: int


#: Per-machine numbers (arch/*/include/uapi/asm/unistd*.h, linux/audit.h).
SECCOMP_ARCHES: dict[str, SeccompArch] = {
    "x86_64": SeccompArch(
        audit_arch=0xC000003E,  # AUDIT_ARCH_X86_64
        socket=41,
        sendto=44,
        sendmsg=46,
        sendmmsg=307,
        io_uring_setup=425,
        foreign_nr_bit=0x40000000,  # __X32_SYSCALL_BIT
        compat_arch=0x40000003,  # AUDIT_ARCH_I386
        compat_socket_syscalls=(102, 359),  # socketcall, socket
        connect=42,
        seccomp=317,
    ),
    "aarch64": SeccompArch(
        audit_arch=0xC00000B7,  # AUDIT_ARCH_AARCH64
        socket=198,
        sendto=206,
        sendmsg=211,
        sendmmsg=269,
        io_uring_setup=425,
        foreign_nr_bit=None,
        compat_arch=0x40000028,  # AUDIT_ARCH_ARM
        compat_socket_syscalls=(281,),  # socket (EABI has no socketcall)
        connect=203,
        seccomp=277,
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
#: Ask the filter's listener (the launcher's supervisor) what to do.
SECCOMP_RET_USER_NOTIF = 0x7FC00000
#: seccomp(2) operation and flag that install a filter and return its
#: notification listener descriptor.
SECCOMP_SET_MODE_FILTER = 1
SECCOMP_FILTER_FLAG_NEW_LISTENER = 1 << 3
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


def bypass_program(arch: SeccompArch, refuse_raw: bool = True) -> list[tuple[int, int, int, int]]:
    """The filter as (code, jt, jf, k) tuples, jumps resolved from labels.

    ``refuse_raw=False`` leaves raw IP and packet sockets to the observation
    filter, which refuses them through the launcher and records them.
    """
    allow: _Insn = (_BPF_RET_K, None, None, SECCOMP_RET_ALLOW)
    raw = "eacces" if refuse_raw else "allow"
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
                (_BPF_JEQ_K, raw, None, AF_PACKET),
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
                (_BPF_JEQ_K, raw, None, SOCK_RAW),
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
        ("allow", [allow]),
        # What programs get where the kernel lacks a feature, so they fall back.
        ("noproto", [_errno_ret(errno.EPROTONOSUPPORT)]),
        ("enosys", [_errno_ret(errno.ENOSYS)]),
        # Same errno as a connect() that Landlock refuses.
        ("eacces", [_errno_ret(errno.EACCES)]),
    ]
    return _assemble(blocks)


def _assemble(blocks: list[tuple[str, list[_Insn]]]) -> list[tuple[int, int, int, int]]:
    """Lay out labelled blocks and resolve their jumps to offsets."""
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


def observe_program(arch: SeccompArch) -> list[tuple[int, int, int, int]]:
    """The observation filter: connect(), sendto() with a destination
    address, and raw IP or packet socket() calls go to the listener;
    everything else (and other ABIs, whose sockets the bypass filter
    refuses) is allowed."""
    notify: _Insn = (_BPF_RET_K, None, None, SECCOMP_RET_USER_NOTIF)
    allow: _Insn = (_BPF_RET_K, None, None, SECCOMP_RET_ALLOW)
    dest = _arg_low(4)
    blocks: list[tuple[str, list[_Insn]]] = [
        (
            "start",
            [
                (_BPF_LD_W_ABS, None, None, _SECCOMP_ARCH_OFFSET),
                (_BPF_JEQ_K, None, "allow", arch.audit_arch),
                (_BPF_LD_W_ABS, None, None, _SECCOMP_NR_OFFSET),
                (_BPF_JEQ_K, "notify", None, arch.connect),
                (_BPF_JEQ_K, "socket", None, arch.socket),
                (_BPF_JEQ_K, None, "allow", arch.sendto),
                (_BPF_LD_W_ABS, None, None, dest),
                (_BPF_JEQ_K, None, "notify", 0),
                (_BPF_LD_W_ABS, None, None, dest + 4),
                (_BPF_JEQ_K, "allow", "notify", 0),
            ],
        ),
        (
            "socket",
            [
                (_BPF_LD_W_ABS, None, None, _arg_low(0)),
                (_BPF_JEQ_K, "notify", None, AF_PACKET),
                (_BPF_JEQ_K, "inet", None, AF_INET),
                (_BPF_JEQ_K, "inet", "allow", AF_INET6),
            ],
        ),
        (
            "inet",
            [
                (_BPF_LD_W_ABS, None, None, _arg_low(1)),
                (_BPF_AND_K, None, None, SOCK_TYPE_MASK),
                (_BPF_JEQ_K, "notify", "allow", SOCK_RAW),
            ],
        ),
        ("notify", [notify]),
        ("allow", [allow]),
    ]
    return _assemble(blocks)


def install_observer() -> int:
    """Install :func:`observe_program` in the calling thread (inherited by
    everything it execs) and return the notification listener's descriptor.

    Observation only: the launcher's supervisor answers every notification
    with "continue", so the call goes on into Landlock, which decides. A
    supervisor that is gone makes these calls fail with ENOSYS.
    """
    arch = SECCOMP_ARCHES.get(platform.machine())
    if arch is None:
        raise ConfinementUnavailable(f"no seccomp syscall table for {platform.machine()}")
    program = observe_program(arch)
    filters = (_SockFilter * len(program))(*(_SockFilter(*insn) for insn in program))
    fprog = _SockFprog(len(program), ctypes.cast(filters, ctypes.POINTER(_SockFilter)))
    lib = libc()
    set_no_new_privs(lib)
    ctypes.set_errno(0)
    fd: int = lib.syscall(
        ctypes.c_long(arch.seccomp),
        ctypes.c_uint(SECCOMP_SET_MODE_FILTER),
        ctypes.c_uint(SECCOMP_FILTER_FLAG_NEW_LISTENER),
        ctypes.byref(fprog),
    )
    if fd < 0:
        err = ctypes.get_errno()
        raise ConfinementUnavailable(
            f"seccomp user notification unavailable: {errno.errorcode.get(err, err)}"
        )
    return fd


def install_bypass_filter(refuse_raw: bool = True) -> None:
    """Refuse TCP Fast Open sends, MPTCP, raw IP and packet sockets (unless
    ``refuse_raw`` is false: the observation filter then refuses and records
    them), and io_uring in the calling thread and everything it later
    executes (see the module docstring).

    Irreversible, like Landlock's :func:`.landlock.restrict_connect`.
    """
    arch = SECCOMP_ARCHES.get(platform.machine())
    if arch is None:
        raise ConfinementUnavailable(f"no seccomp syscall table for {platform.machine()}")
    program = bypass_program(arch, refuse_raw)
    filters = (_SockFilter * len(program))(*(_SockFilter(*insn) for insn in program))
    fprog = _SockFprog(len(program), ctypes.cast(filters, ctypes.POINTER(_SockFilter)))
    lib = libc()
    set_no_new_privs(lib)
    if lib.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.byref(fprog), 0, 0) != 0:
        raise os_failure("prctl(PR_SET_SECCOMP)")


__all__ = [
    "SECCOMP_ARCHES",
    "SeccompArch",
    "bypass_program",
    "install_bypass_filter",
    "install_observer",
    "observe_program",
]

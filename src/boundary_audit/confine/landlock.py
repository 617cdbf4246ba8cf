"""Landlock network rules: only the proxy's TCP port may be connected to.

Why Landlock: it needs no root (an unprivileged process restricts itself and
everything it later starts) and it cannot be undone by the confined process.
Its network rules (ABI >= 4, Linux 6.7+) decide ``connect()`` on TCP sockets by
destination *port only*, for any address, IPv4 and IPv6 alike. Consequences:

* any host listening on the proxy's port number is reachable too: another
  local service on another address, or a remote server whose owner
  listens on that port on purpose (the port is no secret to the child, it is
  in ``HTTP_PROXY``). The proxy listens on a random free port, which makes
  an accidental match unlikely; a deliberate one is not prevented by
  Landlock (the optional network namespace, :mod:`.netns`, closes it);
* only TCP is covered: UDP (DNS, QUIC), Unix sockets (a local service such
  as a Docker socket can still be asked to connect out) and already-open
  descriptors are not restricted by these rules (the namespace closes UDP);
* Landlock only sees ``connect()``: the seccomp filter of :mod:`.seccomp`
  closes the ways of opening TCP connections without it.

Binding is left unrestricted on purpose: ``bind``/``listen`` send nothing out,
and confined build tools and test suites legitimately run local servers (which
they then cannot connect to over TCP, except through the proxy port).

Scoping (ABI >= 6, Linux 6.12): the same domain also stops the command from
signalling any process outside it (``kill``, ``pidfd_send_signal``, SIGIO
owners) and from connecting to abstract Unix sockets made outside it, so it
cannot kill or stop the launcher that audits it. Ptrace of processes outside
the domain (and ``/proc/PID/mem``, ``/proc/PID/root`` of them) is refused by
every Landlock ABI. On ABI 4 and 5 the network rules still apply, without
the scopes (:func:`missing_scopes` says so, and ``run`` warns).

Standard library only: the exec helper (:mod:`.helper`) applies these rules
in the child.
"""

from __future__ import annotations

import ctypes
import errno
import os
import platform
import sys
from collections.abc import Iterable
from dataclasses import dataclass

from .errors import ConfinementUnavailable
from .syscall import libc, os_failure, set_no_new_privs, syscall

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
#: Scopes (ABI >= 6): no connect to abstract Unix sockets created outside the
#: domain, no signals to processes outside it.
LANDLOCK_SCOPE_ABSTRACT_UNIX_SOCKET = 1 << 0
LANDLOCK_SCOPE_SIGNAL = 1 << 1
#: First ABI with scopes (Linux 6.12).
LANDLOCK_SCOPE_MIN_ABI = 6
#: Largest TCP port number.
MAX_PORT = 65535


class _RulesetAttr(ctypes.Structure):
    # Up to ``scoped`` (ABI 6). Kernels that predate a field accept the longer
    # struct as long as the fields they do not know are zero.
    _fields_ = (
        ("handled_access_fs", ctypes.c_uint64),
        ("handled_access_net", ctypes.c_uint64),
        ("scoped", ctypes.c_uint64),
    )


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


def landlock_status() -> LandlockStatus:
    """Probe the kernel's Landlock support without changing anything."""
    numbers = _syscall_numbers()
    if numbers is None:
        return LandlockStatus(None, f"no Landlock syscall numbers known for {platform.machine()}")
    if sys.platform != "linux":
        return LandlockStatus(None, f"Landlock is Linux-only (this is {sys.platform})")
    abi = syscall(
        libc(),
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


def scopes_for(abi: int) -> int:
    """The scope flags a ruleset asks for on a kernel of ``abi`` (none before 6)."""
    if abi < LANDLOCK_SCOPE_MIN_ABI:
        return 0
    return LANDLOCK_SCOPE_SIGNAL | LANDLOCK_SCOPE_ABSTRACT_UNIX_SOCKET


def missing_scopes(abi: int) -> str | None:
    """What the command can still do to processes outside its sandbox on ABI
    ``abi`` for lack of scopes, or ``None`` when the kernel scopes both."""
    if abi >= LANDLOCK_SCOPE_MIN_ABI:
        return None
    return (
        f"kernel Landlock ABI {abi} has no scopes (needs ABI >= {LANDLOCK_SCOPE_MIN_ABI}, "
        "Linux 6.12): the command can signal (kill, stop) the launcher and other processes "
        "of its user, and connect to their abstract Unix sockets"
    )


def check_port(port: int) -> int:
    """``port`` if it is a TCP port number, else ValueError (before anything is restricted)."""
    if not 1 <= port <= MAX_PORT:
        raise ValueError(f"TCP port must be in 1..{MAX_PORT}, got {port}")
    return port


def restrict_connect(allowed_connect_ports: Iterable[int]) -> None:
    """Restrict the calling thread, and everything it later executes, so that
    ``connect()`` on TCP sockets only reaches ``allowed_connect_ports``, and
    (ABI >= 6) so that it cannot signal processes outside the domain or
    connect to abstract Unix sockets made outside it.

    Irreversible: only the exec helper calls it, in a child about to exec.
    """
    ports = sorted({check_port(p) for p in allowed_connect_ports})
    numbers = _syscall_numbers()
    status = landlock_status()
    if status.reason is not None or numbers is None:
        raise ConfinementUnavailable(status.reason or "unsupported machine", status.abi)
    create, add_rule, restrict_self = numbers
    lib = libc()
    assert status.abi is not None
    attr = _RulesetAttr(
        handled_access_fs=0,
        handled_access_net=LANDLOCK_ACCESS_NET_CONNECT_TCP,
        scoped=scopes_for(status.abi),
    )
    ruleset_fd = syscall(
        lib, create, ctypes.byref(attr), ctypes.c_size_t(ctypes.sizeof(attr)), ctypes.c_uint32(0)
    )
    if ruleset_fd < 0:
        raise os_failure("landlock_create_ruleset")
    try:
        for port in ports:
            rule = _NetPortAttr(allowed_access=LANDLOCK_ACCESS_NET_CONNECT_TCP, port=port)
            rc = syscall(
                lib,
                add_rule,
                ctypes.c_int(ruleset_fd),
                ctypes.c_int(LANDLOCK_RULE_NET_PORT),
                ctypes.byref(rule),
                ctypes.c_uint32(0),
            )
            if rc < 0:
                raise os_failure(f"landlock_add_rule (port {port})")
        set_no_new_privs(lib)
        if syscall(lib, restrict_self, ctypes.c_int(ruleset_fd), ctypes.c_uint32(0)) < 0:
            raise os_failure("landlock_restrict_self")
    finally:
        os.close(ruleset_fd)


__all__ = [
    "LANDLOCK_NET_MIN_ABI",
    "LANDLOCK_SCOPE_MIN_ABI",
    "MAX_PORT",
    "LandlockStatus",
    "check_port",
    "landlock_abi_version",
    "landlock_status",
    "missing_scopes",
    "require_network_confinement",
    "restrict_connect",
    "scopes_for",
]

"""A private network namespace for the command: nothing but its own loopback.

Optional, stronger isolation than Landlock's port-only rules: the command runs
in a new (unprivileged) user and network namespace. The exec helper listens
there on the proxy's port and hands that listening socket to the parent, whose
relay (:mod:`.relay`) joins each connection to the real proxy. Nothing else is
reachable: no other host on the proxy's port number, no UDP (so no DNS and no
QUIC), no TCP service of the host. Needs unprivileged user namespaces.

Standard library only, like every module the exec helper loads.
"""

from __future__ import annotations

import ctypes
import fcntl
import os
import socket
import struct

from .errors import ConfinementUnavailable
from .landlock import check_port
from .syscall import libc

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


def _write_proc(path: str, text: str) -> None:
    with open(path, "w", encoding="ascii") as fh:
        fh.write(text)


def enter_network_namespace() -> None:
    """Move the calling process into a new user + network namespace whose
    only interface, loopback, is up. Same uid/gid inside, so files keep their
    owners and the command gets no capabilities once it execs."""
    uid, gid = os.getuid(), os.getgid()
    lib = libc()
    ctypes.set_errno(0)
    if lib.unshare(CLONE_NEWUSER | CLONE_NEWNET) != 0:
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
        sock.bind((LOOPBACK_ADDRESS, check_port(port)))
        sock.listen(ISOLATED_LISTEN_BACKLOG)
    except BaseException:
        sock.close()
        raise
    return sock


__all__ = ["LOOPBACK_ADDRESS", "enter_network_namespace", "open_isolated_listener"]

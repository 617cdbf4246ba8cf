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

import fcntl
import socket
import struct

from .errors import ConfinementUnavailable
from .landlock import check_port
from .mounts import CLONE_NEWNET, enter_user_namespace

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


def bring_loopback_up() -> None:
    """Set ``lo`` up in the current (new) network namespace."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            current = fcntl.ioctl(sock, SIOCGIFFLAGS, _IFREQ.pack(LOOPBACK_INTERFACE, 0))
            flags = _IFREQ.unpack(current)[1]
            fcntl.ioctl(sock, SIOCSIFFLAGS, _IFREQ.pack(LOOPBACK_INTERFACE, flags | IFF_UP))
    except OSError as exc:
        raise ConfinementUnavailable(f"cannot set up the network namespace: {exc}") from exc


def enter_network_namespace(extra_flags: int = 0) -> None:
    """Move the calling process into a new user + network namespace (plus
    ``extra_flags``, e.g. a mount namespace) whose only interface, loopback,
    is up. Same ids inside, so files keep their owners and a non-root
    command gets no capabilities once it execs."""
    enter_user_namespace(CLONE_NEWNET | extra_flags)
    bring_loopback_up()


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


__all__ = [
    "LOOPBACK_ADDRESS",
    "bring_loopback_up",
    "enter_network_namespace",
    "open_isolated_listener",
]

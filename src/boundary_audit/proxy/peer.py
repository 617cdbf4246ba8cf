"""Who is on the other end of a loopback TCP connection: its owner's uid.

SO_PEERCRED works only on Unix sockets; for TCP the kernel's socket tables
(``/proc/net/tcp``, ``/proc/net/tcp6``) list every socket with its owner.
The client's socket is the row whose local address is the connection's
remote one and whose remote address is ours. Pure parsing is split from
the file read so it is tested without sockets.
"""

from __future__ import annotations

import ipaddress
import socket
from pathlib import Path

#: The kernel's TCP socket tables, by address family.
TCP_TABLES = {socket.AF_INET: Path("/proc/net/tcp"), socket.AF_INET6: Path("/proc/net/tcp6")}
#: Column of a table row holding the owner's uid (after sl, local, rem, st,
#: tx:rx queues, tr:when, retrnsmt).
UID_COLUMN = 7


def proc_address(host: str, port: int) -> str:
    """``host``:``port`` as ``/proc/net/tcp{,6}`` writes it: the address in
    32-bit words of host byte order (little-endian here), the port in hex."""
    packed = ipaddress.ip_address(host).packed
    words = [packed[i : i + 4] for i in range(0, len(packed), 4)]
    text = "".join(int.from_bytes(word, "little").to_bytes(4, "big").hex() for word in words)
    return f"{text.upper()}:{port:04X}"


def find_uid(table: str, local: str, remote: str) -> int | None:
    """The uid of the row whose local and remote addresses are these, or None."""
    for line in table.splitlines()[1:]:
        fields = line.split()
        if len(fields) > UID_COLUMN and fields[1] == local and fields[2] == remote:
            return int(fields[UID_COLUMN])
    return None


def _mapped(host: str) -> str:
    """``host`` as an IPv6 socket sees an IPv4 peer (``::ffff:a.b.c.d``)."""
    return f"::ffff:{host}" if ":" not in host else host


def peer_uid(sock: socket.socket) -> int | None:
    """The uid owning the other end of ``sock`` when that end is on this host
    (a loopback client), else None (not found, or not TCP/IP).

    A client may reach an IPv4 listener from a dual-stack IPv6 socket (gRPC
    does): its row is then in ``tcp6`` with IPv4-mapped addresses.
    """
    if sock.family not in TCP_TABLES:
        return None
    ours = sock.getsockname()[:2]
    theirs = sock.getpeername()[:2]
    searches = [(TCP_TABLES[sock.family], ours, theirs)]
    if sock.family == socket.AF_INET:
        mapped_ours, mapped_theirs = (_mapped(ours[0]), ours[1]), (_mapped(theirs[0]), theirs[1])
        searches.append((TCP_TABLES[socket.AF_INET6], mapped_ours, mapped_theirs))
    for path, local, remote in searches:
        try:
            table = path.read_text()
        except OSError:
            continue
        # The client's row: its local address is our peer, its remote is us.
        uid = find_uid(table, proc_address(*remote), proc_address(*local))
        if uid is not None:
            return uid
    return None


def tables_readable() -> bool:
    """Whether this host has the tables at all (Linux with /proc)."""
    return TCP_TABLES[socket.AF_INET].exists()


__all__ = ["find_uid", "peer_uid", "proc_address", "tables_readable"]

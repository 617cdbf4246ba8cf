"""Who is listening: the sender writes only to an agent run by us, by root, or by a uid we name.

The default socket lives in the OS temp dir, which every local user can
write: another user who binds ``boundary-audit.sock`` there first would
receive every event (URLs with their query strings). So before a byte is
sent, two checks:

1. ``lstat`` of the path: a socket (not a symlink, not a file) owned by an
   allowed uid;
2. after ``connect``, ``SO_PEERCRED`` of the connection: the uid of the
   process that listens must be allowed. This is the check that matters
   (the path may change between ``lstat`` and ``connect``; the listener's
   credentials cannot); the first refuses cheaply and names the file.

Allowed: our effective uid, root (0), and any uid configured with
``SocketAuditor(allowed_listener_uids=...)`` or ``$BOUNDARY_AUDIT_LISTENER_UIDS``
(comma- or space-separated uids or user names), e.g. for an agent running as
a dedicated service user.

Also allowed: the uid that owns the socket's directory, when root gave it
that directory: the directory (not a symlink) is owned by that uid and
writable by nobody else, and its parent is root's and writable by nobody
else. Nobody but that uid could have bound a socket there, and only root
could have made the arrangement: systemd's ``RuntimeDirectory=`` for a
service with ``DynamicUser=yes`` (``/run/boundary-audit/``, a uid not known
in advance) is exactly this. A shared world-writable directory (``/tmp``)
never qualifies.
"""

from __future__ import annotations

import os
import pwd
import socket
import stat
import struct
from collections.abc import Iterable, Mapping
from pathlib import Path

#: Env variable adding uids (or user names) whose listener the sender trusts.
LISTENER_UIDS_ENV = "BOUNDARY_AUDIT_LISTENER_UIDS"
#: root may always listen: it could read our memory anyway.
ROOT_UID = 0
#: struct ucred {pid_t pid; uid_t uid; gid_t gid;}, as SO_PEERCRED returns it.
_UCRED = struct.Struct("3i")


class UntrustedListenerError(Exception):
    """The socket at a path, or the process listening on it, is not one we may send to."""

    def __init__(self, path: Path, reason: str, uid: int | None = None, pid: int | None = None):
        self.path = path
        self.reason = reason
        self.uid = uid
        self.pid = pid
        super().__init__(f"{path}: {reason}")

    @property
    def kind(self) -> str:
        """A short label for 'is this the same refusal as last time?' (logged once per change)."""
        return f"untrusted:{self.reason}"


def parse_uids(text: str) -> frozenset[int]:
    """``"1001, agent"`` -> {1001, uid of user agent}; ValueError names what is wrong."""
    uids = set()
    for item in text.replace(",", " ").split():
        if item.isdigit():
            uids.add(int(item))
            continue
        try:
            uids.add(pwd.getpwnam(item).pw_uid)
        except KeyError:
            raise ValueError(f"{LISTENER_UIDS_ENV}: no such user or uid: {item!r}") from None
    return frozenset(uids)


def allowed_listener_uids(
    configured: Iterable[int] = (), env: Mapping[str, str] | None = None
) -> frozenset[int]:
    """Our uid, root, the configured uids and those of ``$BOUNDARY_AUDIT_LISTENER_UIDS``."""
    env = os.environ if env is None else env
    return (
        frozenset({os.geteuid(), ROOT_UID})
        | frozenset(configured)
        | parse_uids(env.get(LISTENER_UIDS_ENV, ""))
    )


#: Mode bits that let users other than the owner create entries in a directory.
_OTHERS_WRITE = stat.S_IWGRP | stat.S_IWOTH


def _given_by_root(directory: Path) -> int | None:
    """The owner of ``directory`` if root gave it to them alone (see module doc), else None."""
    try:
        st = os.lstat(directory)
        parent = os.lstat(directory.parent)
    except OSError:
        return None
    if not stat.S_ISDIR(st.st_mode) or st.st_mode & _OTHERS_WRITE:
        return None
    if parent.st_uid != ROOT_UID or parent.st_mode & _OTHERS_WRITE:
        return None
    return st.st_uid


def check_socket_file(path: Path, allowed: frozenset[int]) -> frozenset[int]:
    """``lstat`` check before connecting: the uids that may listen on ``path``.

    Raises ``OSError`` (nothing there) or UntrustedListenerError.
    """
    st = os.lstat(path)
    if stat.S_ISLNK(st.st_mode):
        raise UntrustedListenerError(path, "symlink", uid=st.st_uid)
    if not stat.S_ISSOCK(st.st_mode):
        raise UntrustedListenerError(path, "not-a-socket", uid=st.st_uid)
    if st.st_uid in allowed:
        return allowed
    if _given_by_root(path.parent) == st.st_uid:
        return allowed | {st.st_uid}
    raise UntrustedListenerError(path, f"socket-owner-uid-{st.st_uid}", uid=st.st_uid)


def peer_credentials(sock: socket.socket) -> tuple[int, int, int]:
    """(pid, uid, gid) of the process on the other end (the listener, for a connect)."""
    raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size)
    pid, uid, gid = _UCRED.unpack(raw)
    return pid, uid, gid


def check_listener(sock: socket.socket, path: Path, allowed: frozenset[int]) -> None:
    """``SO_PEERCRED`` check after connecting; raises UntrustedListenerError."""
    pid, uid, _ = peer_credentials(sock)
    if uid not in allowed:
        raise UntrustedListenerError(path, f"listener-uid-{uid}", uid=uid, pid=pid)


__all__ = [
    "LISTENER_UIDS_ENV",
    "ROOT_UID",
    "UntrustedListenerError",
    "allowed_listener_uids",
    "check_listener",
    "check_socket_file",
    "parse_uids",
    "peer_credentials",
]

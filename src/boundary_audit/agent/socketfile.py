"""The agent's socket file: one owner at a time, the right permissions from the start.

This is the one part of the agent that decides over a path other processes
may use, so it stands alone: an exclusive lock next to the socket (two agents
starting together cannot both take it), a probe that tells a live owner from
a stale file, and a bind inside a private directory so the socket carries its
final mode and group before anyone can connect.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import grp
import os
import socket
import stat
import tempfile
from collections.abc import Callable
from pathlib import Path

#: How long the start-up probe waits for an existing socket to answer. A live
#: agent accepts at once; a stale file refuses at once; this only bounds a
#: wedged listener.
PROBE_TIMEOUT = 1.0
#: listen() backlog: senders connect once and stay, so a small queue suffices.
LISTEN_BACKLOG = 128
#: Mode of the lock file: only the agent's own user needs it.
LOCK_FILE_MODE = 0o600


class SocketInUseError(RuntimeError):
    """Another live process owns the socket path, or it is not a socket at all."""


def resolve_gid(group: str | int) -> int:
    """A group name or number as a gid, with an error that names the group."""
    if isinstance(group, int) or group.isdigit():
        return int(group)
    try:
        return grp.getgrnam(group).gr_gid
    except KeyError:
        raise ValueError(f"unknown group {group!r} for the socket") from None


class SocketLock:
    """An exclusive ``flock`` on ``<socket>.lock``, held while the agent runs.

    Two agents starting at once cannot both decide the socket is stale and
    take it; the lock is released by the kernel if the agent dies.
    """

    def __init__(self, socket_path: Path) -> None:
        self.path = socket_path.with_name(socket_path.name + ".lock")
        self._fd: int | None = None

    def acquire(self) -> None:
        """Open (never through a symlink) and lock; the file must be ours and regular."""
        flags = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
        try:
            fd = os.open(self.path, flags, LOCK_FILE_MODE)
        except OSError as exc:
            # ELOOP for a symlink; EACCES when the kernel's protected_symlinks /
            # protected_regular refuse another user's file in a sticky dir.
            # Say which, loudly; anything else is raised as it is.
            try:
                st = self.path.lstat()
            except OSError:
                raise SocketInUseError(f"cannot open {self.path}: {exc}") from exc
            if stat.S_ISLNK(st.st_mode):
                raise SocketInUseError(
                    f"{self.path} is a symlink (planted by another user?); refusing to follow it"
                ) from None
            _check_ours(self.path, st, stat.S_ISREG, "a regular file")
            raise
        try:
            _check_ours(self.path, os.fstat(fd), stat.S_ISREG, "a regular file")
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise SocketInUseError(
                    f"another agent holds {self.path}; refusing to take its socket"
                ) from None
            raise
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def _check_ours(path: Path, st: os.stat_result, is_kind: Callable[[int], bool], kind: str) -> None:
    """Refuse, loudly, a file of the wrong kind or another user's (e.g. in a shared /tmp)."""
    if not is_kind(st.st_mode):
        raise SocketInUseError(f"{path} is not {kind}; refusing to use it")
    if st.st_uid != os.geteuid():
        raise SocketInUseError(
            f"{path} belongs to uid {st.st_uid}, not to us (uid {os.geteuid()}); "
            "another user may have planted it: refusing to use it"
        )


def _refuse_live_owner(path: Path) -> None:
    """Remove ``path`` if it is a stale socket of ours; raise if anything else holds it."""
    with contextlib.suppress(FileNotFoundError):
        st = path.lstat()
        if stat.S_ISLNK(st.st_mode):
            raise SocketInUseError(
                f"{path} is a symlink (planted by another user?); refusing to follow or replace it"
            )
        if not stat.S_ISSOCK(st.st_mode):
            raise SocketInUseError(f"{path} exists and is not a socket; refusing to replace it")
        if st.st_uid != os.geteuid():
            raise SocketInUseError(
                f"{path} is a socket of uid {st.st_uid}, not ours; refusing to take it over "
                "(another user may be squatting it: choose another --socket)"
            )
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        probe.settimeout(PROBE_TIMEOUT)
        try:
            probe.connect(str(path))
        except (ConnectionRefusedError, FileNotFoundError):
            path.unlink(missing_ok=True)  # stale: nobody listens any more
        except OSError as exc:
            raise SocketInUseError(f"{path}: cannot tell whether it is in use: {exc}") from exc
        else:
            raise SocketInUseError(
                f"another process is listening on {path}; refusing to take its socket "
                "(stop that agent or choose another --socket)"
            )
        finally:
            probe.close()


def claim_socket(path: Path, mode: int, group: str | int | None) -> tuple[socket.socket, int]:
    """Bind and listen on ``path``: refuse a live owner, replace a stale file.

    The socket is bound inside a fresh 0700 directory, given its final mode
    and group there, and only then renamed onto ``path``, so no other user
    can connect during a window where permissions are wider (and the
    process umask is never touched). Returns the socket and its inode, so the
    agent later removes only its own file.
    """
    gid = resolve_gid(group) if group is not None else None
    path.parent.mkdir(parents=True, exist_ok=True)
    _refuse_live_owner(path)
    workdir = Path(tempfile.mkdtemp(prefix=".ba-", dir=path.parent))
    tmp = workdir / "s"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(str(tmp))
        os.chmod(tmp, mode)
        if gid is not None:
            os.chown(tmp, -1, gid)
        sock.listen(LISTEN_BACKLOG)
        os.rename(tmp, path)
        inode = path.lstat().st_ino
    except BaseException:
        sock.close()
        tmp.unlink(missing_ok=True)
        raise
    finally:
        workdir.rmdir()
    sock.setblocking(False)
    return sock, inode


def release_socket(path: Path, inode: int) -> None:
    """Remove the socket file if it is still the one this agent created."""
    with contextlib.suppress(FileNotFoundError):
        st = path.lstat()
        # The inode number alone is not enough: a file created on the path
        # after ours was removed may get the freed number back (tmpfs does).
        if st.st_ino == inode and stat.S_ISSOCK(st.st_mode):
            path.unlink()


class SocketFile:
    """One socket path through its life: lock, claim, unlink, unlock.

    :meth:`unlink` and :meth:`close` are idempotent, so every exit path of the
    agent may call them.
    """

    def __init__(self, path: Path, mode: int, group: str | int | None) -> None:
        self.path = path
        self.mode = mode
        self.group = group
        self._lock = SocketLock(path)
        self._inode: int | None = None

    def claim(self) -> socket.socket:
        """Take the lock and listen on the path; the caller owns the socket returned.

        Raises :class:`SocketInUseError` when another agent or process holds it.
        """
        self._lock.acquire()
        try:
            sock, self._inode = claim_socket(self.path, self.mode, self.group)
        except BaseException:
            self._lock.release()
            raise
        return sock

    def unlink(self) -> None:
        """Remove the file (if still ours), so no new sender can connect."""
        if self._inode is not None:
            release_socket(self.path, self._inode)
            self._inode = None

    def close(self) -> None:
        """Remove the file and give up the lock."""
        self.unlink()
        self._lock.release()


__all__ = [
    "LISTEN_BACKLOG",
    "PROBE_TIMEOUT",
    "SocketFile",
    "SocketInUseError",
    "SocketLock",
    "claim_socket",
    "release_socket",
    "resolve_gid",
]

"""The sender's Unix-socket I/O: connect to a trusted listener, write whole frames, read acks.

No decisions here (those are in :mod:`.sender` and :mod:`.delivery`): every
failure is raised as the ``OSError`` it is (or
:class:`~.trust.UntrustedListenerError`), for the sender thread to count,
log and back off from.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import select
import socket
import struct
import termios
from pathlib import Path

from ..wire import Frame, FrameDecoder
from .trust import check_listener, check_socket_file

#: A write that makes no progress for this long means the agent has stalled;
#: the connection is dropped and its frames re-sent on a new one. Writes are
#: only started while the socket polls writable (see may_write), so this is a
#: safety net, not the normal way a stalled agent is handled.
WRITE_STALL_TIMEOUT = 10.0
#: A listener that cannot take a connection within this long (its backlog
#: full) is not one we can deliver to now: the connect is retried with
#: backoff, and close() is never held up by it.
CONNECT_TIMEOUT = 1.0
#: Connect errors meaning nothing listens on the path (no socket file, or a
#: stale one): at close, for a sender that never reached an agent, these end
#: the wait at once instead of at the timeout.
NO_LISTENER_ERRNOS = frozenset({errno.ENOENT, errno.ECONNREFUSED})
#: Bytes asked for per read of the agent's acks (each is a ~10-byte frame).
READ_CHUNK = 4096
#: ioctl returning the bytes (kernel memory) written and not yet read by the
#: peer. Linux's SIOCOUTQ equals TIOCOUTQ (0x5411).
SIOCOUTQ = getattr(termios, "TIOCOUTQ", 0x5411)
_INT = struct.Struct("i")


def no_listener(exc: OSError) -> bool:
    """True when ``exc`` from a connect means no agent listens at the path."""
    return exc.errno in NO_LISTENER_ERRNOS


class Connection:
    """One stream to a trusted agent. Blocking writes, bounded by WRITE_STALL_TIMEOUT."""

    __slots__ = ("_decoder", "_sock", "path", "sndbuf")

    def __init__(self, sock: socket.socket, path: Path) -> None:
        self._sock = sock
        self.path = path
        self._decoder = FrameDecoder()
        #: The kernel's send buffer bound (SIOCOUTQ units).
        self.sndbuf = sock.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF)

    @classmethod
    def open(
        cls,
        path: str | os.PathLike[str],
        allowed_uids: frozenset[int],
        stall_timeout: float = WRITE_STALL_TIMEOUT,
    ) -> Connection:
        """Connect to the agent at ``path`` if a trusted process listens there.

        Raises ``OSError`` (nothing there) or UntrustedListenerError, having
        sent nothing.
        """
        path = Path(path)
        listeners = check_socket_file(path, allowed_uids)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(min(CONNECT_TIMEOUT, stall_timeout))
            sock.connect(os.fspath(path))
            check_listener(sock, path, listeners)
            sock.settimeout(stall_timeout)
        except BaseException:
            sock.close()
            raise
        return cls(sock, path)

    def send(self, data: bytes) -> None:
        """Write ``data`` whole; ``TimeoutError`` (an ``OSError``) when the agent stalls."""
        self._sock.sendall(data)

    def outq(self) -> int | None:
        """SIOCOUTQ: kernel bytes written and not yet read by the peer; None if unsupported."""
        try:
            raw = fcntl.ioctl(self._sock.fileno(), SIOCOUTQ, b"\0\0\0\0")
        except OSError as exc:
            if exc.errno in (errno.EINVAL, errno.ENOTTY, errno.EOPNOTSUPP):
                return None
            raise
        return int(_INT.unpack(raw)[0])

    def may_write(self, outq: int | None) -> bool:
        """Will a frame write start at once? Only while the socket polls writable.

        A socket with a timeout (ours) waits for POLLOUT before each send,
        and Linux reports a Unix socket writable while what it holds is at
        most a quarter of SO_SNDBUF (``unix_writable``: wmem << 2 <= sndbuf;
        wmem is SIOCOUTQ + 1). Past that the write would wait for the agent
        to read; so the sender waits instead (``wait(writable=True)`` wakes
        on the same condition), still able to close on time.
        """
        return outq is None or (outq + 1) * 4 <= self.sndbuf

    def receive(self) -> tuple[list[Frame], bool]:
        """Frames the agent wrote (acks), without blocking, and whether it hung up.

        A reset (the agent closed with our frames unread) is raised. Data the
        agent wrote before it closed is returned first, so its last acks count.
        """
        frames: list[Frame] = []
        # select() first: a socket with a timeout waits in recv() even with
        # MSG_DONTWAIT (Python polls before it reads).
        while select.select([self._sock], [], [], 0)[0]:
            data = self._sock.recv(READ_CHUNK)
            if not data:
                return frames, True
            frames.extend(self._decoder.feed(data))
        return frames, False

    def wait(self, timeout: float, *, writable: bool = False) -> None:
        """Sleep until the agent writes (an ack) or hangs up, or ``timeout`` passes.

        ``writable``: also wake when the kernel has room again (Linux reports
        a Unix socket writable once a quarter of SO_SNDBUF is free), for a
        sender that stopped because the kernel buffer was full.
        """
        sock = [self._sock]
        select.select(sock, sock if writable else [], [], max(0.0, timeout))

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._sock.close()

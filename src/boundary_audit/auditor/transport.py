"""The sender's Unix-socket I/O: connect, write whole frames, notice a hang-up.

No decisions here (those are in :mod:`.sender`): every failure is raised as
the ``OSError`` it is, for the sender thread to count, log and back off from.
"""

from __future__ import annotations

import contextlib
import errno
import os
import select
import socket

#: A write that makes no progress for this long means the agent has stalled;
#: the connection is dropped and the batch retried on a new one.
WRITE_STALL_TIMEOUT = 10.0
#: Connect errors meaning nothing listens on the path (no socket file, or a
#: stale one): at close, for a sender that never reached an agent, these end
#: the wait at once instead of at the timeout.
NO_LISTENER_ERRNOS = frozenset({errno.ENOENT, errno.ECONNREFUSED})


def no_listener(exc: OSError) -> bool:
    """True when ``exc`` from a connect means no agent listens at the path."""
    return exc.errno in NO_LISTENER_ERRNOS


class Connection:
    """One stream to the agent. Blocking writes, bounded by WRITE_STALL_TIMEOUT."""

    __slots__ = ("_sock",)

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock

    @classmethod
    def open(
        cls, path: str | os.PathLike[str], stall_timeout: float = WRITE_STALL_TIMEOUT
    ) -> Connection:
        """Connect to the agent's socket at ``path``; raises ``OSError``."""
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(stall_timeout)
            sock.connect(os.fspath(path))
        except OSError:
            sock.close()
            raise
        return cls(sock)

    def send(self, data: bytes) -> None:
        """Write ``data`` whole; ``TimeoutError`` (an ``OSError``) when the agent stalls."""
        self._sock.sendall(data)

    def peer_closed(self) -> bool:
        """True when the agent hung up; never blocks.

        Readable with nothing to peek at is EOF (the agent never writes on
        this socket); a reset is raised.
        """
        readable, _, _ = select.select([self._sock], [], [], 0)
        return bool(readable) and not self._sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._sock.close()

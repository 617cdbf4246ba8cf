"""When a connection's frames may be acknowledged: pure bookkeeping, no sockets.

A connection whose first frame is an ``open`` with ``want_acks`` is told,
with ``status{ack{frames=N}}``, that frames 1..N are the agent's
responsibility: committed to the spool, or refused and counted. Each frame
gets the writer's ticket when it has been handled (see
:meth:`~boundary_audit.agent.writer.SpoolWriter.ticket`); once the writer's
``committed`` reaches a frame's ticket, that frame and all before it may be
acknowledged. Acks are cumulative and never decrease.
"""

from __future__ import annotations

from collections import deque


class AckBook:
    """The frames of one acknowledging connection and what has been acknowledged."""

    __slots__ = ("_waiting", "acked", "closing")

    def __init__(self) -> None:
        #: (frame number, ticket) of frames not yet acknowledged, in order.
        self._waiting: deque[tuple[int, int]] = deque()
        self.acked = 0
        #: The agent is closing (or refused) the connection: never acknowledge again.
        self.closing = False

    def handled(self, frame: int, ticket: int) -> None:
        """Frame number ``frame`` was handled; it is ours once ``committed >= ticket``."""
        self._waiting.append((frame, ticket))

    def due(self, committed: int) -> int | None:
        """The new cumulative ack once ``committed`` is reached, or None (nothing new)."""
        if self.closing:
            return None
        upto = None
        waiting = self._waiting
        while waiting and waiting[0][1] <= committed:
            upto = waiting.popleft()[0]
        if upto is None or upto <= self.acked:
            return None
        self.acked = upto
        return upto


__all__ = ["AckBook"]

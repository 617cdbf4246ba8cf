"""What SocketAuditor's callers and its sender thread share, and the thread's settings.

One small type on the boundary between the two threads (:class:`Handoff`)
rather than objects both sides reach into, and the frozen configuration
(:class:`SenderConfig`) the thread is started with.
"""

from __future__ import annotations

import collections
import threading
from dataclasses import dataclass, field
from pathlib import Path

from .encoding import Record
from .handover import Handover
from .stats import Counters

#: Counters.open_result values (socket.OpenResult spells them for callers).
OPEN_PENDING = ""
OPEN_UNREACHABLE = "unreachable"


@dataclass(eq=False)
class Handoff:
    """What the callers' side and the sender thread share, and nothing else."""

    #: Events accepted by audit(), oldest first: appended by callers under
    #: the auditor's lock, popped by the sender (deque ends are thread-safe).
    queue: collections.deque[Record] = field(default_factory=collections.deque)
    counters: Counters = field(default_factory=Counters)
    #: Set by audit(), flush(), connect_now() and close(): something new to look at.
    wake: threading.Event = field(default_factory=threading.Event)
    #: Set by close(), after close_timeout.
    closing: threading.Event = field(default_factory=threading.Event)
    close_timeout: float = 0.0
    #: Set by flush(): send what is queued now; cleared once drained.
    flush_now: threading.Event = field(default_factory=threading.Event)
    #: Set by connect_now(): connect and open the session even with nothing to send.
    connect_now: threading.Event = field(default_factory=threading.Event)
    #: Notified by the sender when it drained after flush() asked, and when
    #: what became of the open frame is known (connect_now()).
    drained: threading.Condition = field(default_factory=threading.Condition)
    #: Set by the sender while it holds a connection (read by stats).
    connected: threading.Event = field(default_factory=threading.Event)
    #: The handed-over watermark and its waiters (:mod:`.handover`).
    handover: Handover = field(default_factory=Handover)

    def pending(self) -> int:
        """Events queued or batched, not yet written."""
        return len(self.queue) + self.counters.pending


@dataclass(frozen=True, slots=True)
class SenderConfig:
    socket_paths: tuple[Path, ...]
    process_name: str
    batch_size: int
    batch_interval: float
    queue_size: int
    replay_window_bytes: int
    allowed_uids: frozenset[int]
    #: Where undeliverable events go at close, and other sessions' spills are found.
    spill_dir: Path | None
    spill_max_bytes: int
    #: "boundary-audit/<version>", put in every open frame.
    sender_name: str


def sender_name() -> str:
    """``boundary-audit/<version>`` for the open frame."""
    from .. import __version__

    return f"boundary-audit/{__version__}"

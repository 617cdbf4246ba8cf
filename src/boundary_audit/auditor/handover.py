"""Waiting until an event has been handed over to the agent.

A caller that must not answer its client before the audit event of that
request is safe (the proxy, before a response head) takes a *mark* right
after audit() and later awaits it. An event is *handed over* once it is in
the agent's Unix socket (the kernel keeps it for the agent even if the
sender is killed the next instant), spilled to disk, or dropped and
counted. :class:`Handover` is the shared, thread-safe part: a monotonic
watermark ("every event queued before mark N is handed over") advanced by
the sender thread, and the marks callers wait for. It reads no clock and
does no I/O; the asyncio bridge (a future per waiter, resolved with one
``call_soon_threadsafe`` per loop and release) is :func:`resolve_all`.

Marks count events accepted into the queue (``Counters.queued``), not
sequence numbers, which callers may bring out of order.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import threading
from collections import defaultdict
from collections.abc import Iterable

#: Longest a caller waits for its event to be handed over before it goes on
#: anyway (counted as a handover timeout, logged once per stall). A healthy
#: sender writes within one GIL switch interval (5 ms) of being woken, so
#: 0.25 s is ~50 times that (no false timeouts on a loaded machine) and still
#: short enough that an agent found frozen costs one request a quarter second,
#: not a stall: after a timeout, waits return at once until the sender hands
#: something over again (:attr:`Handover.stalled`).
HANDOVER_TIMEOUT = 0.25

_Entry = tuple[int, int, asyncio.AbstractEventLoop, "asyncio.Future[None]"]


class Handover:
    """The handed-over watermark, and the callers waiting for it to pass their mark.

    ``through``: every event whose mark is <= it has been handed over.
    ``wanted``: the highest mark a caller announced it will wait for; the
    sender writes promptly while ``wanted > through``. Both only grow.
    """

    __slots__ = (
        "_lock",
        "_order",
        "_waiting",
        "finished",
        "skipped",
        "stall_started",
        "stalled",
        "through",
        "timeouts",
        "wanted",
    )

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._waiting: list[_Entry] = []
        self._order = itertools.count()
        self.through = 0
        self.wanted = 0
        #: The sender is gone (session ended, or it crashed): nothing will be
        #: handed over any more; waits return at once.
        self.finished = False
        #: A wait ran out and nothing was handed over since: waits return at
        #: once (counted in ``skipped``) until the sender hands over again.
        self.stalled = False
        #: Waits that ran out (``HANDOVER_TIMEOUT``), and waits released at
        #: once while stalled. Written by callers only.
        self.timeouts = 0
        self.skipped = 0
        #: ``timeouts + skipped`` when the current stall began (for its end's log line).
        self.stall_started = 0

    def want(self, mark: int) -> None:
        """A caller will wait for ``mark``: the sender should write promptly."""
        if mark > self.wanted:
            with self._lock:
                self.wanted = max(self.wanted, mark)

    def due(self) -> bool:
        """Someone waits (or will) for an event not handed over yet."""
        return self.wanted > self.through and not self.finished

    def add(self, mark: int, loop: asyncio.AbstractEventLoop, fut: asyncio.Future[None]) -> bool:
        """Register a waiter; False when ``mark`` is already through (nothing to wait for)."""
        with self._lock:
            if mark <= self.through or self.finished:
                return False
            heapq.heappush(self._waiting, (mark, next(self._order), loop, fut))
            return True

    def advance(self, through: int) -> list[_Entry]:
        """The sender handed over everything up to ``through``: the waiters to wake.

        Ends a stall. Returns the released entries (for :func:`resolve_all`),
        empty when the watermark did not move.
        """
        with self._lock:
            if through <= self.through:
                return []
            self.through = through
            self.stalled = False
            released = []
            waiting = self._waiting
            while waiting and waiting[0][0] <= through:
                released.append(heapq.heappop(waiting))
            return released

    def finish(self) -> list[_Entry]:
        """The sender stopped: wake every waiter, and let no one wait again."""
        with self._lock:
            self.finished = True
            self.stalled = False
            released, self._waiting = self._waiting, []
            return released

    def waiting(self) -> int:
        with self._lock:
            return len(self._waiting)


def _resolve(futures: list[asyncio.Future[None]]) -> None:
    for fut in futures:
        if not fut.done():
            fut.set_result(None)


def resolve_all(entries: Iterable[_Entry]) -> None:
    """Wake released waiters: one call_soon_threadsafe per event loop (from any thread)."""
    by_loop: defaultdict[asyncio.AbstractEventLoop, list[asyncio.Future[None]]] = defaultdict(list)
    for _mark, _n, loop, fut in entries:
        by_loop[loop].append(fut)
    for loop, futures in by_loop.items():
        # A closed loop (RuntimeError) has nobody left waiting on it.
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(_resolve, futures)


__all__ = ["HANDOVER_TIMEOUT", "Handover", "resolve_all"]

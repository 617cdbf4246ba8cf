"""What the sender thread should do next, decided without I/O.

Each small class owns one concern: the batch (when it is due), the retry
timer (backoff), the drop-episode log (when to say drops started and stopped) and the status
reports (which drops the agent has not heard of). They are told the time
(``now``, read by the thread from its injected clock) and never read a
clock, sleep or touch a socket, so each decision is tested by stepping
numbers. :class:`SenderState` puts them together, with the delivery
bookkeeping of :mod:`.delivery`, for the thread's loop in :mod:`.worker`; the
socket itself lives in :mod:`.transport`.
"""

from __future__ import annotations

import collections
import errno
import operator
from dataclasses import dataclass

from .._retry import FULL_JITTER, Backoff
from .delivery import Delivery
from .encoding import Record

#: Flush a batch once it holds this many events. Coder's boundary uses 10:
#: small enough that a burst of requests shows up at the agent promptly, big
#: enough to amortise one frame write over several events.
DEFAULT_BATCH_SIZE = 10
#: ...or this many seconds after the first event of the batch arrived,
#: whichever comes first (also Coder's value): a lone request is reported
#: within seconds without waking the sender for every event.
DEFAULT_BATCH_INTERVAL = 5.0
#: Most events the sender takes off the queue for one flush. Bounds the
#: batch held while the agent is unreachable (the queue then fills and new
#: events are dropped and counted) and keeps one flush's frames in cache.
MAX_PENDING_EVENTS = 2048
#: Retry backoff after a failed connect or write: starts here, doubles per
#: failure, capped below, with full jitter so many senders restarted
#: together do not reconnect in lockstep.
INITIAL_BACKOFF = 0.05
MAX_BACKOFF = 5.0
#: Bytes of written frames held until the agent has them (acknowledged, or
#: read per SIOCOUTQ), to re-send after a reconnect. When the window is full
#: the sender stops writing and the queue absorbs (overflow is counted
#: drops). 2 MiB is many of the agent's group commits at full rate, and far
#: more than the Unix socket buffers (~200 KiB) an agent that never
#: acknowledges can leave unread.
DEFAULT_REPLAY_WINDOW_BYTES = 2 * 1024 * 1024
#: While connected and idle, how often the sender reads acks, samples
#: SIOCOUTQ and checks whether the agent hung up, so lost frames are re-sent
#: without waiting for a new event.
PEER_CHECK_INTERVAL = 0.5
#: While it cannot write (window full, kernel buffer full) or waits for the
#: agent to take its last frames at close, how often the sender looks again:
#: an agent that never acknowledges sends nothing to wake it, so it polls.
BLOCKED_POLL_INTERVAL = 0.02
#: A drop episode (logged once when it starts) is over, and logged as such,
#: after this long without a new drop: long enough that a queue hovering at
#: its bound does not produce a pair of lines every few milliseconds.
DROP_EPISODE_QUIET = 5.0
#: A caller that keeps sending unencodable events gets its first one and then
#: every this-many logged (all are counted): loud, without flooding the log.
INVALID_LOG_EVERY = 1000

_SEQUENCE_NUMBER = operator.itemgetter(1)  # Record.sequence_number


class Batch:
    """Events taken off the queue and not yet written, and when they are due."""

    __slots__ = ("capacity", "interval", "owed", "records", "size", "started")

    def __init__(self, size: int, interval: float, capacity: int = MAX_PENDING_EVENTS) -> None:
        self.size = size
        self.interval = interval
        self.capacity = capacity
        self.records: list[Record] = []
        #: When the oldest event of the batch was taken; None while empty.
        self.started: float | None = None
        #: A flush began and stopped part-way (no room, a failed write): the
        #: rest is due at once, whatever its size and age.
        self.owed = False

    def __len__(self) -> int:
        return len(self.records)

    def take(self, queue: collections.deque[Record], now: float) -> None:
        """Move events from ``queue`` until the batch holds ``capacity``.

        The batch is kept in sequence order (when it holds one session):
        callers that bring their own numbers from several threads may queue
        them slightly out of order, and the hash chain needs increasing
        numbers (:mod:`.chaining`). Sorting a sorted list is one pass.
        """
        records = self.records
        before = len(records)
        room = self.capacity - before
        while room > 0 and queue:
            records.append(queue.popleft())
            room -= 1
        if records and self.started is None:
            self.started = now
        if len(records) > before and len(records) > 1 and records[0][0] == records[-1][0]:
            records.sort(key=_SEQUENCE_NUMBER)

    def due(self, now: float, *, urgent: bool) -> bool:
        """Full, old enough, or asked for (flush, close)."""
        return bool(self.records) and (
            urgent
            or self.owed
            or len(self.records) >= self.size
            or (self.started is not None and now - self.started >= self.interval)
        )

    def written(self, count: int, now: float) -> None:
        """The first ``count`` events were written (or skipped); the rest wait."""
        del self.records[:count]
        self.owed = bool(self.records)
        if not self.records:
            self.started = None
        elif self.started is None:
            self.started = now


def failure_kind(what: str, exc: OSError) -> str:
    """``connect:ECONNREFUSED`` and the like: what a retry log line is about."""
    return f"{what}:{errno.errorcode.get(exc.errno or 0, type(exc).__name__)}"


class Retry:
    """When the next connect or write may be tried, and whether a failure is news."""

    __slots__ = ("backoff", "last_error", "retry_at")

    def __init__(self, backoff: Backoff | None = None) -> None:
        if backoff is None:
            backoff = Backoff(INITIAL_BACKOFF, MAX_BACKOFF, floor=FULL_JITTER)
        self.backoff = backoff
        self.retry_at = 0.0
        #: failure_kind() of the last failure; None once connected again.
        self.last_error: str | None = None

    @property
    def failures(self) -> int:
        """Failures since the last successful connect."""
        return self.backoff.failures

    def ready(self, now: float) -> bool:
        return now >= self.retry_at

    def failed(self, kind: str, now: float) -> bool:
        """Back off from ``now``; True when ``kind`` differs from the last failure.

        Only a change is worth a log line: an agent that stays down would
        otherwise log once per retry.
        """
        self.retry_at = now + self.backoff.next_delay()
        if kind == self.last_error:
            return False
        self.last_error = kind
        return True

    def connected(self) -> None:
        self.last_error = None
        self.backoff.reset()


@dataclass(frozen=True, slots=True)
class EpisodeStarted:
    """Drops began: log once."""

    dropped_total: int


@dataclass(frozen=True, slots=True)
class EpisodeOver:
    """No drop for DROP_EPISODE_QUIET: log once how many the episode lost."""

    dropped_in_episode: int
    dropped_total: int


class DropEpisodes:
    """Turns a growing drop counter into one line when drops start, one when they stop."""

    __slots__ = ("_last_drop_at", "_last_seen", "_logged", "_start", "quiet")

    def __init__(self, quiet: float = DROP_EPISODE_QUIET) -> None:
        self.quiet = quiet
        self._start: int | None = None  # drop count when the episode began
        self._last_seen = 0
        self._last_drop_at = 0.0
        self._logged = 0  # drops already covered by a logged episode

    def observe(self, dropped: int, now: float) -> EpisodeStarted | EpisodeOver | None:
        """Look at the counter; say when an episode starts or ends."""
        previous, self._last_seen = self._last_seen, dropped
        if self._start is not None and dropped != previous:
            self._last_drop_at = now
            return None
        if self._start is None:
            if dropped > self._logged:
                self._start = self._logged
                self._last_drop_at = now
                return EpisodeStarted(dropped)
        elif now - self._last_drop_at >= self.quiet:
            over = EpisodeOver(dropped - self._start, dropped)
            self._logged = dropped
            self._start = None
            return over
        return None


class StatusReports:
    """Queue-full drops the agent has been told of; BoundaryStatus carries deltas."""

    __slots__ = ("reported",)

    def __init__(self) -> None:
        self.reported = 0

    def unreported(self, total: int) -> int:
        return total - self.reported

    def due(self, total: int, *, can_send: bool) -> bool:
        return total > self.reported and can_send

    def delivered(self, total: int) -> None:
        """A status carrying the drops up to ``total`` was written."""
        self.reported = total


def should_log_invalid(count: int) -> bool:
    """The first unencodable event, then every INVALID_LOG_EVERY-th."""
    return count == 1 or count % INVALID_LOG_EVERY == 0


class PeriodicCheck:
    """Something to do at most every ``interval`` seconds (the peer check)."""

    __slots__ = ("interval", "last")

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self.last = 0.0

    def due(self, now: float) -> bool:
        return now - self.last >= self.interval

    def done(self, now: float) -> None:
        self.last = now


class SenderState:
    """Everything the sender thread remembers between wake-ups, and its decisions."""

    __slots__ = (
        "batch",
        "blocked",
        "close_deadline",
        "delivery",
        "drops",
        "no_agent",
        "peer_checks",
        "retry",
        "sealed",
        "status",
    )

    def __init__(
        self,
        *,
        batch_size: int = DEFAULT_BATCH_SIZE,
        batch_interval: float = DEFAULT_BATCH_INTERVAL,
        replay_window_bytes: int = DEFAULT_REPLAY_WINDOW_BYTES,
        backoff: Backoff | None = None,
    ) -> None:
        self.batch = Batch(batch_size, batch_interval)
        self.retry = Retry(backoff)
        self.delivery = Delivery(replay_window_bytes)
        self.drops = DropEpisodes()
        self.status = StatusReports()
        self.peer_checks = PeriodicCheck(PEER_CHECK_INTERVAL)
        #: Set when close() begins: the sender gives up at this time.
        self.close_deadline: float | None = None
        #: Closing, and no trusted agent has ever listened: give up now.
        self.no_agent = False
        #: The seal went out on the socket (it is written once).
        self.sealed = False
        #: Writing stopped for room (window or kernel buffer); the queue absorbs.
        self.blocked = False

    def begin_close(self, now: float, timeout: float) -> None:
        if self.close_deadline is None:
            self.close_deadline = now + timeout

    def flush_due(
        self, now: float, *, urgent: bool, dropped: int, can_report: bool, extra: bool = False
    ) -> bool:
        """Something to write, no backoff in the way, and room to write it.

        ``extra``: frames other than the batch are waiting (spill files to
        deliver, the seal, a connection asked for by connect_now()).
        """
        wanted = (
            self.batch.due(now, urgent=urgent)
            or bool(self.delivery.carried)
            or self.status.due(dropped, can_send=can_report)
            or extra
        )
        return wanted and not self.blocked and self.retry.ready(now)

    def drained(self, queue_empty: bool) -> bool:
        """Nothing queued, batched or waiting to be re-sent."""
        return queue_empty and not self.batch.records and not self.delivery.carried

    def close_done(self, now: float, *, queue_empty: bool) -> bool:
        """Stop now: sealed and all delivered, nobody to deliver to, or out of time."""
        assert self.close_deadline is not None, "close_done() before begin_close()"
        delivered = self.sealed and self.drained(queue_empty) and self.delivery.settled
        return delivered or self.no_agent or now >= self.close_deadline

    def sleep_for(self, now: float, *, awaiting_peer: bool = False) -> float:
        """How long the thread may sleep before the next reason to act."""
        waits = [PEER_CHECK_INTERVAL]
        if self.blocked or awaiting_peer:
            waits.append(BLOCKED_POLL_INTERVAL)
        if self.batch.records or self.delivery.carried:
            if now < self.retry.retry_at:
                waits.append(self.retry.retry_at - now)
            elif self.batch.started is not None:
                waits.append(self.batch.started + self.batch.interval - now)
        decide = self.delivery.ack_deadline()
        if decide is not None:
            waits.append(decide - now)
        if self.close_deadline is not None:
            waits.append(self.close_deadline - now)
        return max(0.0, min(waits))

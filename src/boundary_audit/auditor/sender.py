"""What the sender thread should do next, decided without I/O.

Each small class owns one concern: the batch (when it is due), the retry
timer (backoff), the replay window (what to re-send after a reconnect), the
drop-episode log (when to say drops started and stopped) and the status
reports (which drops the agent has not heard of). They are told the time
(``now``, read by the thread from its injected clock) and never read a
clock, sleep or touch a socket, so each decision is tested by stepping
numbers. :class:`SenderState` puts them together for the thread's loop in
:mod:`.socket`; the socket itself lives in :mod:`.transport`.
"""

from __future__ import annotations

import collections
import errno
from dataclasses import dataclass

from .._retry import FULL_JITTER, Backoff
from .encoding import EncodedFrame, Record

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
#: Bytes of recently written frames kept to re-send after a reconnect. The
#: protocol has no acknowledgements, so frames still in kernel socket buffers
#: or in the agent's not-yet-committed memory when the agent dies would be
#: lost; re-sending them is safe because the collector stores each
#: (session, sequence number) once. 2 MiB covers both Unix socket buffers
#: (~200 KiB each by default) and the agent's group-commit window many times.
DEFAULT_REPLAY_WINDOW_BYTES = 2 * 1024 * 1024
#: While connected and idle, how often the sender checks whether the agent
#: hung up, so lost frames are replayed without waiting for a new event.
PEER_CHECK_INTERVAL = 0.5
#: A drop episode (logged once when it starts) is over, and logged as such,
#: after this long without a new drop: long enough that a queue hovering at
#: its bound does not produce a pair of lines every few milliseconds.
DROP_EPISODE_QUIET = 5.0
#: A caller that keeps sending unencodable events gets its first one and then
#: every this-many logged (all are counted): loud, without flooding the log.
INVALID_LOG_EVERY = 1000


class Batch:
    """Events taken off the queue and not yet written, and when they are due."""

    __slots__ = ("capacity", "interval", "records", "size", "started")

    def __init__(self, size: int, interval: float, capacity: int = MAX_PENDING_EVENTS) -> None:
        self.size = size
        self.interval = interval
        self.capacity = capacity
        self.records: list[Record] = []
        #: When the oldest event of the batch was taken; None while empty.
        self.started: float | None = None

    def __len__(self) -> int:
        return len(self.records)

    def take(self, queue: collections.deque[Record], now: float) -> None:
        """Move events from ``queue`` until the batch holds ``capacity``."""
        records = self.records
        room = self.capacity - len(records)
        while room > 0 and queue:
            records.append(queue.popleft())
            room -= 1
        if records and self.started is None:
            self.started = now

    def due(self, now: float, *, urgent: bool) -> bool:
        """Full, old enough, or asked for (flush, close)."""
        return bool(self.records) and (
            urgent
            or len(self.records) >= self.size
            or (self.started is not None and now - self.started >= self.interval)
        )

    def written(self, count: int, now: float) -> None:
        """The first ``count`` events were written (or skipped); the rest wait."""
        del self.records[:count]
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


class ReplayWindow:
    """The most recent frames written, up to a byte bound, for re-sending."""

    __slots__ = ("frames", "max_bytes", "needed", "size")

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.frames: collections.deque[EncodedFrame] = collections.deque()
        self.size = 0
        #: Set when a connection is lost with frames in the window: they go
        #: out again before anything new on the next connection.
        self.needed = False

    def record(self, frame: EncodedFrame) -> None:
        """Remember a written frame, forgetting the oldest beyond the bound."""
        if self.max_bytes <= 0:
            return
        self.frames.append(frame)
        self.size += len(frame.frame)
        while self.size > self.max_bytes and self.frames:
            self.size -= len(self.frames.popleft().frame)

    def connection_lost(self) -> None:
        if self.frames:
            self.needed = True

    def to_replay(self) -> list[EncodedFrame]:
        """The frames to write first on a new connection (a copy: writing adds frames)."""
        return list(self.frames) if self.needed else []

    @property
    def events_to_replay(self) -> int:
        return sum(f.events for f in self.frames) if self.needed else 0

    def replayed(self) -> None:
        self.needed = False


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
        "close_deadline",
        "drops",
        "no_agent",
        "peer_checks",
        "replay",
        "retry",
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
        self.replay = ReplayWindow(replay_window_bytes)
        self.drops = DropEpisodes()
        self.status = StatusReports()
        self.peer_checks = PeriodicCheck(PEER_CHECK_INTERVAL)
        #: Set when close() begins: the sender gives up at this time.
        self.close_deadline: float | None = None
        #: Closing, and nothing has ever listened on the path: give up now.
        self.no_agent = False

    def begin_close(self, now: float, timeout: float) -> None:
        if self.close_deadline is None:
            self.close_deadline = now + timeout

    def flush_due(self, now: float, *, urgent: bool, dropped: int, can_report: bool) -> bool:
        """Something to write (events, a replay or a status), and no backoff in the way."""
        wanted = (
            self.batch.due(now, urgent=urgent)
            or self.replay.needed
            or self.status.due(dropped, can_send=can_report)
        )
        return wanted and self.retry.ready(now)

    def drained(self, queue_empty: bool) -> bool:
        """Nothing queued, batched or waiting to be replayed."""
        return queue_empty and not self.batch.records and not self.replay.needed

    def close_done(self, now: float, *, queue_empty: bool) -> bool:
        """Stop now: everything delivered, nobody to deliver to, or out of time."""
        assert self.close_deadline is not None, "close_done() before begin_close()"
        return self.drained(queue_empty) or self.no_agent or now >= self.close_deadline

    def sleep_for(self, now: float) -> float:
        """How long the thread may sleep before the next reason to act."""
        waits = [PEER_CHECK_INTERVAL]
        if self.batch.records or self.replay.needed:
            if now < self.retry.retry_at:
                waits.append(self.retry.retry_at - now)
            elif self.batch.started is not None:
                waits.append(self.batch.started + self.batch.interval - now)
        if self.close_deadline is not None:
            waits.append(self.close_deadline - now)
        return max(0.0, min(waits))

"""SocketAuditor: sends audit events to the agent over its Unix socket.

The caller's thread only timestamps the event, gives it a sequence number and
appends a tuple to a bounded deque. A background thread turns queued events
into tag-2 frames and writes them; it owns the socket, the batch, the retry
timer and the replay window. The caller never waits for any of that.
"""

from __future__ import annotations

import atexit
import collections
import contextlib
import enum
import errno
import os
import random
import select
import socket
import threading
import time
import uuid
import weakref
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from ..logs import get_logger
from ..wire import BoundaryMessage, encode_message, resolve_socket_path
from .encoding import EncodedFrame, Record, encode_records
from .event import AuditEvent, CloseOnExit

#: Flush a batch once it holds this many events. Coder's boundary uses 10:
#: small enough that a burst of requests shows up at the agent promptly, big
#: enough to amortise one frame write over several events.
DEFAULT_BATCH_SIZE = 10
#: ...or this many seconds after the first event of the batch arrived,
#: whichever comes first (also Coder's value): a lone request is reported
#: within seconds without waking the sender for every event.
DEFAULT_BATCH_INTERVAL = 5.0
#: Events that may wait for the sender. Coder's boundary keeps 20, which
#: drops events in any burst; 8192 absorbs ~80 ms at 100k events/s while
#: bounding memory to a few MiB (each queued event is a small tuple).
DEFAULT_QUEUE_SIZE = 8192
#: Most events the sender takes off the queue for one flush. Bounds the
#: batch held while the agent is unreachable (the queue then fills and new
#: events are dropped and counted) and keeps one flush's frames in cache.
MAX_PENDING_EVENTS = 2048
#: How long close() keeps trying to deliver what is queued.
DEFAULT_CLOSE_TIMEOUT = 5.0
#: flush() checks this often whether the sender has emptied the queue: short
#: next to a frame write, long enough not to compete with the sender for the GIL.
FLUSH_POLL_INTERVAL = 0.005
#: close() waits this much longer than its timeout for the sender to finish
#: its own accounting (it may be inside a write when the deadline passes).
CLOSE_JOIN_GRACE = 1.0
#: Retry backoff after a failed connect or write: starts here, doubles per
#: failure, capped below, with full jitter so many senders restarted
#: together do not reconnect in lockstep.
INITIAL_BACKOFF = 0.05
MAX_BACKOFF = 5.0
#: A write that makes no progress for this long means the agent has stalled;
#: the connection is dropped and the batch retried on a new one.
WRITE_STALL_TIMEOUT = 10.0
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
#: Longest confined-process name put on the wire; longer ones are cut.
MAX_PROCESS_NAME_BYTES = 256
#: sequence_number is an int32 on the wire. Past this, the session rotates.
MAX_SEQUENCE_NUMBER = 2**31 - 1

#: Connect errors meaning nothing listens on the path (no socket file, or a
#: stale one): at close, for a sender that never reached an agent, these end
#: the wait at once instead of at the timeout.
NO_LISTENER_ERRNOS = frozenset({errno.ENOENT, errno.ECONNREFUSED})

#: Env variable (shared with Coder's boundary) that turns the socket sender off.
DISABLE_ENV = "DISABLE_AUDIT_LOGS"
_TRUTHY = frozenset({"1", "true", "yes", "on"})
_new_record = tuple.__new__


class DropReason(enum.StrEnum):
    #: The queue in front of the sender was full.
    CHANNEL_FULL = "channel_full"
    #: audit() was called after close().
    CLOSED = "closed"
    #: The event cannot be put on the wire (e.g. a sequence number outside
    #: 0..int32 max, or a field that is not text); a caller bug, counted and
    #: logged, not raised. A number it was given stays a gap in the session.
    INVALID = "invalid_event"


@dataclass(frozen=True, slots=True)
class AuditorStats:
    """A consistent-enough snapshot of the sender's counters."""

    queued: int
    sent: int
    dropped: Mapping[str, int]
    truncated: int
    frames_sent: int
    bytes_sent: int
    connects: int
    connect_failures: int
    write_errors: int
    status_reports_sent: int
    replayed_events: int
    pending: int
    undelivered: int
    discarded_disabled: int
    session_rotations: int
    connected: bool
    disabled: bool

    @property
    def dropped_total(self) -> int:
        return sum(self.dropped.values())


@dataclass(slots=True)
class _Counters:
    """Counters written by one thread each (documented per field)."""

    # Written by callers of audit(), under the queue lock.
    queued: int = 0
    dropped: dict[str, int] = field(default_factory=lambda: dict.fromkeys(DropReason, 0))
    discarded_disabled: int = 0
    session_rotations: int = 0
    # Written by the sender thread only.
    sent: int = 0
    truncated: int = 0
    frames_sent: int = 0
    bytes_sent: int = 0
    connects: int = 0
    connect_failures: int = 0
    write_errors: int = 0
    status_reports_sent: int = 0
    replayed_events: int = 0
    pending: int = 0
    undelivered: int = 0
    # Drops already reported to the agent in a BoundaryStatus.
    reported_channel_full: int = 0


def _is_truthy(value: str | None) -> bool:
    return value is not None and value.strip().lower() in _TRUTHY


def _session_str(session_id: uuid.UUID | str | None) -> str:
    if session_id is None:
        return str(uuid.uuid4())
    if isinstance(session_id, uuid.UUID):
        return str(session_id)
    try:
        return str(uuid.UUID(session_id))
    except ValueError:
        raise ValueError(f"session_id must be a UUID, got {session_id!r}") from None


def _process_name(name: str) -> str:
    raw = name.encode("utf-8")
    if len(raw) <= MAX_PROCESS_NAME_BYTES:
        return name
    return raw[:MAX_PROCESS_NAME_BYTES].decode("utf-8", errors="ignore")


class SocketAuditor(CloseOnExit):
    """Never-blocking audit sender for one session.

    >>> with SocketAuditor(path, session_id=uuid4(), confined_process_name="codex") as a:
    ...     a.audit(AuditEvent("GET", "https://x.org/", "x.org", True, "domain=x.org"))
    """

    def __init__(
        self,
        socket_path: str | os.PathLike[str] | None = None,
        *,
        session_id: uuid.UUID | str | None = None,
        confined_process_name: str = "",
        batch_size: int = DEFAULT_BATCH_SIZE,
        batch_interval: float = DEFAULT_BATCH_INTERVAL,
        queue_size: int = DEFAULT_QUEUE_SIZE,
        close_timeout: float = DEFAULT_CLOSE_TIMEOUT,
        replay_window_bytes: int = DEFAULT_REPLAY_WINDOW_BYTES,
        disabled: bool | None = None,
        env: Mapping[str, str] | None = None,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if batch_interval <= 0:
            raise ValueError(f"batch_interval must be > 0, got {batch_interval}")
        if queue_size < 1:
            raise ValueError(f"queue_size must be >= 1, got {queue_size}")
        environ = dict(os.environ if env is None else env)
        self.socket_path: Path = resolve_socket_path(socket_path, environ)
        self._session_id = _session_str(session_id)
        self.confined_process_name = _process_name(confined_process_name)
        self.batch_size = batch_size
        self.batch_interval = batch_interval
        self.queue_size = queue_size
        self.close_timeout = close_timeout
        self.replay_window_bytes = replay_window_bytes
        self.disabled = _is_truthy(environ.get(DISABLE_ENV)) if disabled is None else disabled
        self._log = get_logger("auditor", socket=str(self.socket_path))

        self._lock = threading.Lock()
        self._queue: collections.deque[Record] = collections.deque()
        self._next_seq = 0
        self._wake = threading.Event()
        self._closing = threading.Event()
        self._flush_now = threading.Event()
        self._closed = False
        self._c = _Counters()
        self._sock: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._closed_warned = False
        self._close_deadline_s = close_timeout

        if self.disabled:
            self._log.warning(
                "audit socket sender disabled; events are not forwarded to the agent",
                reason=f"{DISABLE_ENV} or disabled=True",
                session_id=self._session_id,
            )
            return
        if not self.socket_path.exists():
            self._log.warning(
                "agent socket does not exist yet; events are queued and sending is retried",
                session_id=self._session_id,
            )
        self._thread = threading.Thread(
            target=self._sender_main, name=f"boundary-audit-sender-{self._session_id[:8]}"
        )
        self._thread.daemon = True
        self._thread.start()
        _register_live(self)

    # -- caller side --------------------------------------------------------

    @property
    def session_id(self) -> str:
        return self._session_id

    def audit(self, event: AuditEvent) -> int:
        """Queue ``event`` for sending; return its sequence number.

        Never blocks on I/O and never raises for delivery trouble: when the
        queue is full the event is dropped and counted.
        """
        t = event.time_ns if event.time_ns is not None else time.time_ns()
        with self._lock:
            seq = event.sequence_number
            if seq is None:
                seq = self._next_seq
                if seq > MAX_SEQUENCE_NUMBER:
                    self._rotate_session()
                    seq = 0
                self._next_seq = seq + 1
            if self._closed:
                self._c.dropped[DropReason.CLOSED] += 1
                closed_drop = True
            elif self.disabled:
                self._c.discarded_disabled += 1
                return seq
            elif len(self._queue) >= self.queue_size:
                self._c.dropped[DropReason.CHANNEL_FULL] += 1
                return seq
            else:
                # tuple.__new__ skips NamedTuple's Python-level constructor:
                # a third of audit()'s cost on the caller's thread.
                self._queue.append(
                    _new_record(
                        Record,
                        (
                            self._session_id,
                            seq,
                            t,
                            event.method,
                            event.url,
                            event.allowed,
                            event.rule,
                        ),
                    )
                )
                self._c.queued += 1
                closed_drop = False
        if closed_drop:
            self._warn_closed()
        elif not self._wake.is_set():
            self._wake.set()
        return seq

    def _rotate_session(self) -> None:
        old = self._session_id
        self._session_id = str(uuid.uuid4())
        self._c.session_rotations += 1
        self._log.warning(
            "sequence numbers exhausted the wire's int32; continuing in a new session",
            old_session_id=old,
            session_id=self._session_id,
        )

    def _warn_closed(self) -> None:
        if not self._closed_warned:
            self._closed_warned = True
            self._log.warning("audit() called after close(); event dropped", reason="closed")

    @property
    def stats(self) -> AuditorStats:
        c = self._c
        return AuditorStats(
            queued=c.queued,
            sent=c.sent,
            dropped=dict(c.dropped),
            truncated=c.truncated,
            frames_sent=c.frames_sent,
            bytes_sent=c.bytes_sent,
            connects=c.connects,
            connect_failures=c.connect_failures,
            write_errors=c.write_errors,
            status_reports_sent=c.status_reports_sent,
            replayed_events=c.replayed_events,
            pending=len(self._queue) + c.pending,
            undelivered=c.undelivered,
            discarded_disabled=c.discarded_disabled,
            session_rotations=c.session_rotations,
            connected=self._sock is not None,
            disabled=self.disabled,
        )

    def flush(self, timeout: float | None = None) -> bool:
        """Ask the sender to send everything queued now; wait up to ``timeout``.

        Returns True when nothing is left pending. Meant for tests and for
        callers that want a checkpoint; audit() never needs it.
        """
        if self._thread is None:
            return True
        deadline = time.monotonic() + (self.close_timeout if timeout is None else timeout)
        self._flush_now.set()
        self._wake.set()
        while time.monotonic() < deadline:
            if not self._queue and self._c.pending == 0:
                return True
            time.sleep(FLUSH_POLL_INTERVAL)
        return not self._queue and self._c.pending == 0

    def close(self, timeout: float | None = None) -> None:
        """Stop accepting events, deliver what is queued within ``timeout``.

        Safe to call more than once, from atexit and from a signal handler:
        it takes no lock that audit() holds while blocked.
        """
        if self._closed:
            return
        self._closed = True
        if self._thread is None:
            return
        _LIVE.discard(self)
        self._close_deadline_s = self.close_timeout if timeout is None else timeout
        self._closing.set()
        self._wake.set()
        self._thread.join(self._close_deadline_s + CLOSE_JOIN_GRACE)
        leftover = len(self._queue) + self._c.pending
        if not self._thread.is_alive() and leftover > self._c.undelivered:
            # An audit() that raced close() appended after the sender's last
            # look: not sent, so reported like any other undelivered event.
            self._log.error(
                "audit events queued while closing were not delivered",
                undelivered=leftover - self._c.undelivered,
                session_id=self._session_id,
            )
            self._c.undelivered = leftover
        elif self._thread.is_alive():
            # The sender is still stuck (agent gone or stalled); what it holds
            # is reported as undelivered. It exits at its own deadline.
            self._c.undelivered = len(self._queue) + self._c.pending
            self._log.error(
                "could not deliver all audit events before the close timeout",
                undelivered=self._c.undelivered,
                session_id=self._session_id,
            )

    async def aclose(self, close_timeout: float | None = None) -> None:
        """close() for asyncio code: waits in a worker thread, not on the loop."""
        import asyncio

        await asyncio.to_thread(self.close, close_timeout)

    # -- sender thread ------------------------------------------------------

    def _sender_main(self) -> None:
        try:
            _Sender(self).run()
        except Exception:  # pragma: no cover - a bug; make it loud, never silent
            self._c.undelivered = len(self._queue) + self._c.pending
            self._log.exception("audit sender thread crashed", undelivered=self._c.undelivered)


class _Sender:
    """State of the background thread. Only that thread touches it."""

    def __init__(self, owner: SocketAuditor) -> None:
        self.o = owner
        self.log = owner._log
        self.pending: list[Record] = []
        self.batch_started: float | None = None
        self.backoff = 0.0
        self.retry_at = 0.0
        self.last_error: str | None = None
        self.failures_in_row = 0
        self.replay: collections.deque[EncodedFrame] = collections.deque()
        self.replay_bytes = 0
        self.needs_replay = False
        self.last_peer_check = 0.0
        self.drop_episode_start: int | None = None
        self.last_dropped = 0
        self.last_drop_at = 0.0
        # Drops already covered by a logged episode.
        self.logged_drops = 0
        self.close_deadline: float | None = None
        self.no_agent = False

    # The loop: take events, decide whether a flush is due, try it, sleep
    # until the next reason to act (batch deadline, retry time, new events).
    def run(self) -> None:
        o = self.o
        while True:
            o._wake.clear()
            now = time.monotonic()
            closing = o._closing.is_set()
            if closing and self.close_deadline is None:
                self.close_deadline = now + o._close_deadline_s
            self._take()
            self._watch_drops()
            urgent = closing or o._flush_now.is_set()
            due = bool(self.pending) and (
                urgent
                or len(self.pending) >= o.batch_size
                or (self.batch_started is not None and now - self.batch_started >= o.batch_interval)
            )
            if (due or self.needs_replay or self._status_due()) and now >= self.retry_at:
                self._flush()
                if not self.pending and not o._queue:
                    o._flush_now.clear()
            elif o._sock is not None and now - self.last_peer_check >= PEER_CHECK_INTERVAL:
                self._check_peer(now)
            if closing:
                done = not self.pending and not o._queue and not self.needs_replay
                assert self.close_deadline is not None
                if done or self.no_agent or time.monotonic() >= self.close_deadline:
                    self._finish()
                    return
            o._wake.wait(self._sleep_for(time.monotonic(), closing))

    def _sleep_for(self, now: float, closing: bool) -> float:
        waits = [PEER_CHECK_INTERVAL]
        if self.pending or self.needs_replay:
            if now < self.retry_at:
                waits.append(self.retry_at - now)
            elif self.batch_started is not None:
                waits.append(self.batch_started + self.o.batch_interval - now)
        if closing and self.close_deadline is not None:
            waits.append(self.close_deadline - now)
        return max(0.0, min(waits))

    def _take(self) -> None:
        o = self.o
        room = MAX_PENDING_EVENTS - len(self.pending)
        q = o._queue
        while room > 0 and q:
            self.pending.append(q.popleft())
            room -= 1
        o._c.pending = len(self.pending)
        if self.pending and self.batch_started is None:
            self.batch_started = time.monotonic()

    def _watch_drops(self) -> None:
        """Log drops once when they start and once when they stop."""
        dropped = self.o._c.dropped[DropReason.CHANNEL_FULL]
        previous, self.last_dropped = self.last_dropped, dropped
        if self.drop_episode_start is not None and dropped != previous:
            self.last_drop_at = time.monotonic()
            return
        if self.drop_episode_start is None:
            if dropped > self.logged_drops:
                self.drop_episode_start = self.logged_drops
                self.last_drop_at = time.monotonic()
                self.log.warning(
                    "audit queue full; dropping events (counted and reported to the agent)",
                    queue_size=self.o.queue_size,
                    dropped_total=dropped,
                    session_id=self.o.session_id,
                )
        elif time.monotonic() - self.last_drop_at >= DROP_EPISODE_QUIET:
            self.logged_drops = dropped
            self.log.info(
                f"no events dropped for {DROP_EPISODE_QUIET:g} s; drop episode over",
                dropped_in_episode=dropped - self.drop_episode_start,
                dropped_total=dropped,
                session_id=self.o.session_id,
            )
            self.drop_episode_start = None

    def _status_due(self) -> bool:
        c = self.o._c
        return c.dropped[DropReason.CHANNEL_FULL] > c.reported_channel_full and (
            self.o._sock is not None or self.o._closing.is_set()
        )

    # -- connection ---------------------------------------------------------

    def _connect(self) -> socket.socket | None:
        o = self.o
        if o._sock is not None:
            return o._sock
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(WRITE_STALL_TIMEOUT)
            sock.connect(str(o.socket_path))
        except OSError as exc:
            sock.close()
            o._c.connect_failures += 1
            self._failed("connect", exc)
            if o._closing.is_set() and o._c.connects == 0 and exc.errno in NO_LISTENER_ERRNOS:
                # Closing, and no agent has listened all along (none deployed,
                # or --no-audit-socket forgotten): waiting out the close timeout
                # cannot deliver anything, so report at once. An agent seen
                # before may be restarting, so that case keeps retrying.
                self.no_agent = True
            return None
        o._sock = sock
        o._c.connects += 1
        if self.last_error is not None or o._c.connects > 1:
            self.log.info(
                "connected to agent",
                after_failures=self.failures_in_row,
                replay_events=sum(f.events for f in self.replay) if self.needs_replay else 0,
                session_id=o.session_id,
            )
        self.last_error = None
        self.failures_in_row = 0
        self.backoff = 0.0
        return sock

    def _disconnect(self) -> None:
        sock = self.o._sock
        self.o._sock = None
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.close()
        if self.replay:
            self.needs_replay = True

    def _failed(self, what: str, exc: OSError) -> None:
        """Back off, and log only when the kind of failure changes."""
        self.failures_in_row += 1
        self.backoff = min(MAX_BACKOFF, max(INITIAL_BACKOFF, self.backoff * 2))
        delay = random.uniform(0, self.backoff)  # noqa: S311 - jitter, not crypto
        self.retry_at = time.monotonic() + delay
        kind = f"{what}:{errno.errorcode.get(exc.errno or 0, type(exc).__name__)}"
        if kind != self.last_error:
            self.last_error = kind
            self.log.warning(
                f"cannot {what} to agent socket; will retry with backoff",
                error=str(exc),
                errno=exc.errno,
                pending=len(self.pending) + len(self.o._queue),
                session_id=self.o.session_id,
            )

    def _check_peer(self, now: float) -> None:
        """Notice an agent that hung up while we had nothing to send."""
        self.last_peer_check = now
        sock = self.o._sock
        if sock is None:
            return
        try:
            readable, _, _ = select.select([sock], [], [], 0)
            if readable and not sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT):
                self.log.warning("agent closed the connection", session_id=self.o.session_id)
                self._disconnect()
        except OSError as exc:
            self._disconnect()
            self._failed("read", exc)

    # -- writing ------------------------------------------------------------

    def _write(self, sock: socket.socket, data: bytes) -> bool:
        try:
            sock.sendall(data)
        except OSError as exc:  # includes TimeoutError from a stalled agent
            self.o._c.write_errors += 1
            self._disconnect()
            self._failed("write", exc)
            return False
        return True

    def _flush(self) -> None:
        o = self.o
        sock = self._connect()
        if sock is None:
            return
        if self.needs_replay:
            for frame in list(self.replay):
                if not self._write(sock, frame.frame):
                    return
                o._c.replayed_events += frame.events
            self.needs_replay = False
        while self.pending:
            written = 0
            for enc in encode_records(
                self.pending, o.confined_process_name, on_invalid=self._invalid
            ):
                if enc.frame and not self._write(sock, enc.frame):
                    break
                self._sent(enc)
                written += enc.consumed
            del self.pending[:written]
            o._c.pending = len(self.pending)
            if self.pending:  # a write failed; keep the rest for the retry
                self.batch_started = self.batch_started or time.monotonic()
                return
            self.batch_started = None
            # A backlog waits on the queue: take it now and send it in full
            # frames rather than waiting for the next wake-up.
            if len(o._queue) >= o.batch_size or o._closing.is_set() or o._flush_now.is_set():
                self._take()
        self._send_status(sock)

    def _invalid(self, rec: Record, exc: Exception) -> None:
        n = self.o._c.dropped[DropReason.INVALID] + 1
        self.o._c.dropped[DropReason.INVALID] = n
        if n == 1 or n % INVALID_LOG_EVERY == 0:
            self.log.error(
                "audit event cannot be encoded; dropped",
                sequence_number=repr(rec.sequence_number),
                error=str(exc),
                invalid_total=n,
                session_id=rec.session_id,
            )

    def _sent(self, enc: EncodedFrame) -> None:
        c = self.o._c
        if not enc.frame:
            return
        c.sent += enc.events
        c.frames_sent += 1
        c.bytes_sent += len(enc.frame)
        if enc.truncated:
            c.truncated += enc.truncated
            self.log.warning(
                "event too large for one frame; URL truncated",
                truncated_events=enc.truncated,
                first_sequence=enc.first_sequence,
                last_sequence=enc.last_sequence,
                session_id=self.o.session_id,
            )
        if self.o.replay_window_bytes > 0:
            self.replay.append(enc)
            self.replay_bytes += len(enc.frame)
            while self.replay_bytes > self.o.replay_window_bytes and self.replay:
                self.replay_bytes -= len(self.replay.popleft().frame)

    def _send_status(self, sock: socket.socket) -> None:
        c = self.o._c
        total = c.dropped[DropReason.CHANNEL_FULL]
        delta = total - c.reported_channel_full
        if delta <= 0:
            return
        msg = BoundaryMessage()
        msg.status.dropped_channel_full = delta
        # Events are never dropped for a full batch here: the batch stops
        # taking from the queue instead, so those drops count as channel_full.
        msg.status.dropped_batch_full = 0
        if self._write(sock, encode_message(msg)):
            c.reported_channel_full = total
            c.status_reports_sent += 1

    def _finish(self) -> None:
        o = self.o
        o._c.pending = len(self.pending)
        undelivered = len(self.pending) + len(o._queue)
        o._c.undelivered = undelivered
        unreported = o._c.dropped[DropReason.CHANNEL_FULL] - o._c.reported_channel_full
        if undelivered or unreported:
            self.log.error(
                "closing with audit events not delivered to the agent",
                undelivered=undelivered,
                drops_not_reported=unreported,
                last_error=self.last_error,
                reason="no agent listening" if self.no_agent else "close timeout",
                session_id=o.session_id,
            )
        else:
            self.log.debug("audit sender closed; everything delivered", sent=o._c.sent)
        self._disconnect()


# -- atexit: close live auditors without keeping them alive --------------------

_LIVE: weakref.WeakSet[SocketAuditor] = weakref.WeakSet()
_LIVE_LOCK = threading.Lock()


def _close_all_at_exit() -> None:
    with _LIVE_LOCK:
        live = list(_LIVE)
    for auditor in live:
        auditor.close()


def _register_live(auditor: SocketAuditor) -> None:
    with _LIVE_LOCK:
        _LIVE.add(auditor)


atexit.register(_close_all_at_exit)

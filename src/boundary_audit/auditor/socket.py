"""SocketAuditor: sends audit events to the agent over its Unix socket.

The caller's thread only timestamps the event, gives it a sequence number and
appends a tuple to a bounded deque. A background thread turns queued events
into tag-2 frames and writes them: it asks :class:`~.sender.SenderState` what
is due and does the I/O through :class:`~.transport.Connection`. The caller
never waits for any of that.
"""

from __future__ import annotations

import atexit
import collections
import os
import threading
import time
import uuid
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path

from ..logs import get_logger
from ..wire import DropReason, resolve_socket_path
from .encoding import EncodedFrame, Record, encode_records, encode_status
from .event import AuditEvent, CloseOnExit
from .sender import (
    DEFAULT_BATCH_INTERVAL,
    DEFAULT_BATCH_SIZE,
    DEFAULT_REPLAY_WINDOW_BYTES,
    EpisodeOver,
    EpisodeStarted,
    SenderState,
    failure_kind,
    should_log_invalid,
)
from .sequence import SequenceCounter
from .transport import Connection, no_listener

#: Events that may wait for the sender. Coder's boundary keeps 20, which
#: drops events in any burst; 8192 absorbs ~80 ms at 100k events/s while
#: bounding memory to a few MiB (each queued event is a small tuple).
DEFAULT_QUEUE_SIZE = 8192
#: How long close() keeps trying to deliver what is queued.
DEFAULT_CLOSE_TIMEOUT = 5.0
#: close() waits this much longer than its timeout for the sender to finish
#: its own accounting (it may be inside a write when the deadline passes).
CLOSE_JOIN_GRACE = 1.0
#: Longest confined-process name put on the wire; longer ones are cut.
MAX_PROCESS_NAME_BYTES = 256

#: Env variable (shared with Coder's boundary) that turns the socket sender off.
DISABLE_ENV = "DISABLE_AUDIT_LOGS"
_TRUTHY = frozenset({"1", "true", "yes", "on"})
#: The reasons this sender drops for (the keys of ``AuditorStats.dropped``).
SENDER_DROP_REASONS = (DropReason.CHANNEL_FULL, DropReason.CLOSED, DropReason.INVALID_EVENT)
_CHANNEL_FULL = DropReason.CHANNEL_FULL
_new_record = tuple.__new__
_time_ns = time.time_ns


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

    # Written by callers of audit(), under the queue lock; except
    # dropped[INVALID_EVENT], written by the sender thread (which finds them).
    queued: int = 0
    dropped: dict[str, int] = field(default_factory=lambda: dict.fromkeys(SENDER_DROP_REASONS, 0))
    discarded_disabled: int = 0
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


#: Counters that AuditorStats reports as they are (the others are derived).
_PLAIN_COUNTERS = tuple(f.name for f in fields(_Counters) if f.name not in {"dropped", "pending"})


def _is_truthy(value: str | None) -> bool:
    return value is not None and value.strip().lower() in _TRUTHY


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
        self._log = get_logger("auditor", socket=str(self.socket_path))
        self._numbers = SequenceCounter(session_id, log=self._log)
        self.confined_process_name = _process_name(confined_process_name)
        self.batch_size = batch_size
        self.batch_interval = batch_interval
        self.queue_size = queue_size
        self.close_timeout = close_timeout
        self.replay_window_bytes = replay_window_bytes
        self.disabled = _is_truthy(environ.get(DISABLE_ENV)) if disabled is None else disabled

        self._lock = threading.Lock()
        self._queue: collections.deque[Record] = collections.deque()
        self._wake = threading.Event()
        self._closing = threading.Event()
        self._flush_now = threading.Event()
        #: Set by the sender thread while it holds a connection (read by stats).
        self._connected = threading.Event()
        #: Notified by the sender thread whenever nothing is left pending.
        self._drained = threading.Condition()
        self._closed = False
        self._c = _Counters()
        self._thread: threading.Thread | None = None
        self._closed_warned = False
        self._close_deadline_s = close_timeout

        if self.disabled:
            self._log.warning(
                "audit socket sender disabled; events are not forwarded to the agent",
                reason=f"{DISABLE_ENV} or disabled=True",
                session_id=self.session_id,
            )
            return
        if not self.socket_path.exists():
            self._log.warning(
                "agent socket does not exist yet; events are queued and sending is retried",
                session_id=self.session_id,
            )
        self._thread = threading.Thread(
            target=self._sender_main, name=f"boundary-audit-sender-{self.session_id[:8]}"
        )
        self._thread.daemon = True
        self._thread.start()
        _register_live(self)

    # -- caller side --------------------------------------------------------

    @property
    def session_id(self) -> str:
        return self._numbers.session_id

    @property
    def closed(self) -> bool:
        """True once close() has begun: audit() then drops (and counts) events."""
        return self._closed

    def audit(self, event: AuditEvent) -> int:
        """Queue ``event`` for sending; return its sequence number.

        Never blocks on I/O and never raises for delivery trouble: when the
        queue is full the event is dropped and counted.
        """
        t = event.time_ns
        if t is None:
            t = _time_ns()
        with self._lock:
            numbers = self._numbers
            seq = event.sequence_number
            if seq is None:
                seq = next(numbers.numbers)
            if self._closed:
                self._c.dropped[DropReason.CLOSED] += 1
                closed_drop = True
            elif self.disabled:
                self._c.discarded_disabled += 1
                return seq
            elif len(self._queue) >= self.queue_size:
                self._c.dropped[_CHANNEL_FULL] += 1
                return seq
            else:
                # tuple.__new__ skips NamedTuple's Python-level constructor:
                # a third of audit()'s cost on the caller's thread.
                self._queue.append(
                    _new_record(
                        Record,
                        (
                            numbers.session_id,
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

    def _warn_closed(self) -> None:
        if not self._closed_warned:
            self._closed_warned = True
            self._log.warning("audit() called after close(); event dropped", reason="closed")

    @property
    def stats(self) -> AuditorStats:
        c = self._c
        return AuditorStats(
            **{name: getattr(c, name) for name in _PLAIN_COUNTERS},
            dropped=dict(c.dropped),
            pending=self._pending(),
            session_rotations=self._numbers.rotations,
            connected=self._connected.is_set(),
            disabled=self.disabled,
        )

    def _pending(self) -> int:
        return len(self._queue) + self._c.pending

    def flush(self, timeout: float | None = None) -> bool:
        """Ask the sender to send everything queued now; wait up to ``timeout``.

        Returns True when nothing is left pending. Meant for tests and for
        callers that want a checkpoint; audit() never needs it.
        """
        if self._thread is None:
            return True
        deadline = time.monotonic() + (self.close_timeout if timeout is None else timeout)
        with self._drained:
            while self._pending():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                # (Again) on each wake-up: the sender may have cleared the
                # request on draining just before more events arrived.
                self._flush_now.set()
                self._wake.set()
                self._drained.wait(remaining)
            return True

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
        leftover = self._pending()
        if not self._thread.is_alive() and leftover > self._c.undelivered:
            # An audit() that raced close() appended after the sender's last
            # look: not sent, so reported like any other undelivered event.
            self._log.error(
                "audit events queued while closing were not delivered",
                undelivered=leftover - self._c.undelivered,
                session_id=self.session_id,
            )
            self._c.undelivered = leftover
        elif self._thread.is_alive():
            # The sender is still stuck (agent gone or stalled); what it holds
            # is reported as undelivered. It exits at its own deadline.
            self._c.undelivered = self._pending()
            self._log.error(
                "could not deliver all audit events before the close timeout",
                undelivered=self._c.undelivered,
                session_id=self.session_id,
            )

    async def aclose(self, close_timeout: float | None = None) -> None:
        """close() for asyncio code: waits in a worker thread, not on the loop."""
        import asyncio

        await asyncio.to_thread(self.close, close_timeout)

    # -- sender thread ------------------------------------------------------

    def _sender_main(self) -> None:
        try:
            _SenderThread(self, time.monotonic).run()
        except Exception:  # pragma: no cover - a bug; make it loud, never silent
            self._c.undelivered = self._pending()
            self._log.exception("audit sender thread crashed", undelivered=self._c.undelivered)
        finally:
            self._connected.clear()
            with self._drained:
                self._drained.notify_all()


class _SenderThread:
    """The background thread's loop: asks SenderState what is due, does the I/O.

    Only this thread touches ``state`` and ``conn``; it shares with callers
    only the queue, the counters (each written by one side) and the events.
    """

    def __init__(self, owner: SocketAuditor, clock: Callable[[], float]) -> None:
        self.o = owner
        self.log = owner._log
        self.clock = clock
        self.state = SenderState(
            batch_size=owner.batch_size,
            batch_interval=owner.batch_interval,
            replay_window_bytes=owner.replay_window_bytes,
        )
        self.conn: Connection | None = None

    # The loop: take events, decide whether a flush is due, try it, sleep
    # until the next reason to act (batch deadline, retry time, new events).
    def run(self) -> None:
        o, st = self.o, self.state
        while True:
            o._wake.clear()
            now = self.clock()
            closing = o._closing.is_set()
            if closing:
                st.begin_close(now, o._close_deadline_s)
            self._take(now)
            self._watch_drops(now)
            flushed = False
            if st.flush_due(
                now,
                urgent=closing or o._flush_now.is_set(),
                dropped=o._c.dropped[_CHANNEL_FULL],
                can_report=self.conn is not None or closing,
            ):
                self._flush()
                flushed = True
            elif self.conn is not None and st.peer_checks.due(now):
                self._check_peer(now)
            if o._flush_now.is_set() and o._pending() == 0:
                # Drained after flush() asked: wake it (it checks for itself,
                # and asks again if events came in meanwhile).
                with o._drained:
                    o._drained.notify_all()
                    if flushed:
                        o._flush_now.clear()
            if closing and st.close_done(self.clock(), queue_empty=not o._queue):
                self._finish()
                return
            o._wake.wait(st.sleep_for(self.clock()))

    def _take(self, now: float) -> None:
        self.state.batch.take(self.o._queue, now)
        self.o._c.pending = len(self.state.batch)

    def _watch_drops(self, now: float) -> None:
        """Log drops once when they start and once when they stop."""
        o = self.o
        change = self.state.drops.observe(o._c.dropped[_CHANNEL_FULL], now)
        if isinstance(change, EpisodeStarted):
            self.log.warning(
                "audit queue full; dropping events (counted and reported to the agent)",
                queue_size=o.queue_size,
                dropped_total=change.dropped_total,
                session_id=o.session_id,
            )
        elif isinstance(change, EpisodeOver):
            self.log.info(
                f"no events dropped for {self.state.drops.quiet:g} s; drop episode over",
                dropped_in_episode=change.dropped_in_episode,
                dropped_total=change.dropped_total,
                session_id=o.session_id,
            )

    # -- connection ---------------------------------------------------------

    def _connect(self) -> Connection | None:
        o, st = self.o, self.state
        if self.conn is not None:
            return self.conn
        try:
            conn = Connection.open(o.socket_path)
        except OSError as exc:
            o._c.connect_failures += 1
            self._failed("connect", exc)
            if o._closing.is_set() and o._c.connects == 0 and no_listener(exc):
                # Closing, and no agent has listened all along (none deployed,
                # or --no-audit-socket forgotten): waiting out the close timeout
                # cannot deliver anything, so report at once. An agent seen
                # before may be restarting, so that case keeps retrying.
                st.no_agent = True
            return None
        self.conn = conn
        o._connected.set()
        o._c.connects += 1
        if st.retry.last_error is not None or o._c.connects > 1:
            self.log.info(
                "connected to agent",
                after_failures=st.retry.failures,
                replay_events=st.replay.events_to_replay,
                session_id=o.session_id,
            )
        st.retry.connected()
        return conn

    def _disconnect(self) -> None:
        conn, self.conn = self.conn, None
        self.o._connected.clear()
        if conn is not None:
            conn.close()
        self.state.replay.connection_lost()

    def _failed(self, what: str, exc: OSError) -> None:
        """Back off, and log only when the kind of failure changes."""
        if self.state.retry.failed(failure_kind(what, exc), self.clock()):
            self.log.warning(
                f"cannot {what} to agent socket; will retry with backoff",
                error=str(exc),
                errno=exc.errno,
                pending=self.o._pending(),
                session_id=self.o.session_id,
            )

    def _check_peer(self, now: float) -> None:
        """Notice an agent that hung up while we had nothing to send."""
        self.state.peer_checks.done(now)
        conn = self.conn
        if conn is None:
            return
        try:
            if conn.peer_closed():
                self.log.warning("agent closed the connection", session_id=self.o.session_id)
                self._disconnect()
        except OSError as exc:
            self._disconnect()
            self._failed("read", exc)

    # -- writing ------------------------------------------------------------

    def _write(self, conn: Connection, data: bytes) -> bool:
        try:
            conn.send(data)
        except OSError as exc:  # includes TimeoutError from a stalled agent
            self.o._c.write_errors += 1
            self._disconnect()
            self._failed("write", exc)
            return False
        return True

    def _flush(self) -> None:
        o, st = self.o, self.state
        conn = self._connect()
        if conn is None:
            return
        for frame in st.replay.to_replay():
            if not self._write(conn, frame.frame):
                return
            o._c.replayed_events += frame.events
        st.replay.replayed()
        batch = st.batch
        while batch.records:
            written = 0
            for enc in encode_records(
                batch.records, o.confined_process_name, on_invalid=self._invalid
            ):
                if enc.frame and not self._write(conn, enc.frame):
                    break
                self._sent(enc)
                written += enc.consumed
            batch.written(written, self.clock())
            o._c.pending = len(batch)
            if batch.records:  # a write failed; keep the rest for the retry
                return
            # A backlog waits on the queue: take it now and send it in full
            # frames rather than waiting for the next wake-up.
            if len(o._queue) >= o.batch_size or o._closing.is_set() or o._flush_now.is_set():
                self._take(self.clock())
        self._send_status(conn)

    def _invalid(self, rec: Record, exc: Exception) -> None:
        dropped = self.o._c.dropped
        n = dropped[DropReason.INVALID_EVENT] + 1
        dropped[DropReason.INVALID_EVENT] = n
        if should_log_invalid(n):
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
        self.state.replay.record(enc)

    def _send_status(self, conn: Connection) -> None:
        c, status = self.o._c, self.state.status
        total = c.dropped[_CHANNEL_FULL]
        delta = status.unreported(total)
        if delta <= 0:
            return
        if self._write(conn, encode_status(delta)):
            status.delivered(total)
            c.status_reports_sent += 1

    def _finish(self) -> None:
        o, st = self.o, self.state
        o._c.pending = len(st.batch)
        undelivered = o._pending()
        o._c.undelivered = undelivered
        unreported = st.status.unreported(o._c.dropped[_CHANNEL_FULL])
        if undelivered or unreported:
            self.log.error(
                "closing with audit events not delivered to the agent",
                undelivered=undelivered,
                drops_not_reported=unreported,
                last_error=st.retry.last_error,
                reason="no agent listening" if st.no_agent else "close timeout",
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

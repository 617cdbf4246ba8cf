"""The sender thread: turns queued events into frames on the agent's socket.

It asks :class:`~.sender.SenderState` what is due and does the I/O through
:class:`~.transport.Connection`. Everything it shares with the callers of
SocketAuditor is in one :class:`Handoff`, so the boundary between the two
threads is one small type rather than an object both sides reach into.
"""

from __future__ import annotations

import collections
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..wire import DropReason
from .encoding import EncodedFrame, Record, encode_records, encode_status
from .sender import EpisodeOver, EpisodeStarted, SenderState, failure_kind, should_log_invalid
from .sequence import SequenceCounter
from .stats import Counters
from .transport import Connection, no_listener

_CHANNEL_FULL = DropReason.CHANNEL_FULL


@dataclass(eq=False)
class Handoff:
    """What the callers' side and the sender thread share, and nothing else."""

    #: Events accepted by audit(), oldest first: appended by callers under
    #: the auditor's lock, popped by the sender (deque ends are thread-safe).
    queue: collections.deque[Record] = field(default_factory=collections.deque)
    counters: Counters = field(default_factory=Counters)
    #: Set by audit(), flush() and close(): something new to look at.
    wake: threading.Event = field(default_factory=threading.Event)
    #: Set by close(), after close_timeout.
    closing: threading.Event = field(default_factory=threading.Event)
    close_timeout: float = 0.0
    #: Set by flush(): send what is queued now; cleared once drained.
    flush_now: threading.Event = field(default_factory=threading.Event)
    #: Notified by the sender when it drained after flush() asked.
    drained: threading.Condition = field(default_factory=threading.Condition)
    #: Set by the sender while it holds a connection (read by stats).
    connected: threading.Event = field(default_factory=threading.Event)

    def pending(self) -> int:
        """Events queued or batched, not yet written."""
        return len(self.queue) + self.counters.pending


@dataclass(frozen=True, slots=True)
class SenderConfig:
    socket_path: str | os.PathLike[str]
    process_name: str
    batch_size: int
    batch_interval: float
    queue_size: int
    replay_window_bytes: int


class SenderThread:
    """The background thread's loop: asks SenderState what is due, does the I/O.

    Only this thread touches ``state`` and ``conn``; with callers it shares
    the :class:`Handoff` and nothing else.
    """

    def __init__(
        self,
        handoff: Handoff,
        config: SenderConfig,
        numbers: SequenceCounter,
        log: Any,
        clock: Callable[[], float],
    ) -> None:
        self.h = handoff
        self.cfg = config
        self.numbers = numbers  # read for the current session id, for logs
        self.log = log
        self.clock = clock
        self.state = SenderState(
            batch_size=config.batch_size,
            batch_interval=config.batch_interval,
            replay_window_bytes=config.replay_window_bytes,
        )
        self.conn: Connection | None = None

    def main(self) -> None:
        """The thread's target: the loop, and loud accounting if it ever crashes."""
        h = self.h
        try:
            self.run()
        except Exception:  # pragma: no cover - a bug; make it loud, never silent
            h.counters.undelivered = h.pending()
            self.log.exception("audit sender thread crashed", undelivered=h.counters.undelivered)
        finally:
            h.connected.clear()
            with h.drained:
                h.drained.notify_all()

    # The loop: take events, decide whether a flush is due, try it, sleep
    # until the next reason to act (batch deadline, retry time, new events).
    def run(self) -> None:
        h, st = self.h, self.state
        while True:
            h.wake.clear()
            now = self.clock()
            closing = h.closing.is_set()
            if closing:
                st.begin_close(now, h.close_timeout)
            self._take(now)
            self._watch_drops(now)
            flushed = False
            if st.flush_due(
                now,
                urgent=closing or h.flush_now.is_set(),
                dropped=h.counters.dropped[_CHANNEL_FULL],
                can_report=self.conn is not None or closing,
            ):
                self._flush()
                flushed = True
            elif self.conn is not None and st.peer_checks.due(now):
                self._check_peer(now)
            if h.flush_now.is_set() and h.pending() == 0:
                # Drained after flush() asked: wake it (it checks for itself,
                # and asks again if events came in meanwhile).
                with h.drained:
                    h.drained.notify_all()
                    if flushed:
                        h.flush_now.clear()
            if closing and st.close_done(self.clock(), queue_empty=not h.queue):
                self._finish()
                return
            h.wake.wait(st.sleep_for(self.clock()))

    def _take(self, now: float) -> None:
        self.state.batch.take(self.h.queue, now)
        self.h.counters.pending = len(self.state.batch)

    def _watch_drops(self, now: float) -> None:
        """Log drops once when they start and once when they stop."""
        h = self.h
        change = self.state.drops.observe(h.counters.dropped[_CHANNEL_FULL], now)
        if isinstance(change, EpisodeStarted):
            self.log.warning(
                "audit queue full; dropping events (counted and reported to the agent)",
                queue_size=self.cfg.queue_size,
                dropped_total=change.dropped_total,
                session_id=self.numbers.session_id,
            )
        elif isinstance(change, EpisodeOver):
            self.log.info(
                f"no events dropped for {self.state.drops.quiet:g} s; drop episode over",
                dropped_in_episode=change.dropped_in_episode,
                dropped_total=change.dropped_total,
                session_id=self.numbers.session_id,
            )

    # -- connection ---------------------------------------------------------

    def _connect(self) -> Connection | None:
        h, st = self.h, self.state
        if self.conn is not None:
            return self.conn
        try:
            conn = Connection.open(self.cfg.socket_path)
        except OSError as exc:
            h.counters.connect_failures += 1
            self._failed("connect", exc)
            if h.closing.is_set() and h.counters.connects == 0 and no_listener(exc):
                # Closing, and no agent has listened all along (none deployed,
                # or --no-audit-socket forgotten): waiting out the close timeout
                # cannot deliver anything, so report at once. An agent seen
                # before may be restarting, so that case keeps retrying.
                st.no_agent = True
            return None
        self.conn = conn
        h.connected.set()
        h.counters.connects += 1
        if st.retry.last_error is not None or h.counters.connects > 1:
            self.log.info(
                "connected to agent",
                after_failures=st.retry.failures,
                replay_events=st.replay.events_to_replay,
                session_id=self.numbers.session_id,
            )
        st.retry.connected()
        return conn

    def _disconnect(self) -> None:
        conn, self.conn = self.conn, None
        self.h.connected.clear()
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
                pending=self.h.pending(),
                session_id=self.numbers.session_id,
            )

    def _check_peer(self, now: float) -> None:
        """Notice an agent that hung up while we had nothing to send."""
        self.state.peer_checks.done(now)
        conn = self.conn
        if conn is None:
            return
        try:
            if conn.peer_closed():
                self.log.warning("agent closed the connection", session_id=self.numbers.session_id)
                self._disconnect()
        except OSError as exc:
            self._disconnect()
            self._failed("read", exc)

    # -- writing ------------------------------------------------------------

    def _write(self, conn: Connection, data: bytes) -> bool:
        try:
            conn.send(data)
        except OSError as exc:  # includes TimeoutError from a stalled agent
            self.h.counters.write_errors += 1
            self._disconnect()
            self._failed("write", exc)
            return False
        return True

    def _flush(self) -> None:
        h, st = self.h, self.state
        conn = self._connect()
        if conn is None:
            return
        for frame in st.replay.to_replay():
            if not self._write(conn, frame.frame):
                return
            h.counters.replayed_events += frame.events
        st.replay.replayed()
        batch = st.batch
        while batch.records:
            written = 0
            for enc in encode_records(
                batch.records, self.cfg.process_name, on_invalid=self._invalid
            ):
                if enc.frame and not self._write(conn, enc.frame):
                    break
                self._sent(enc)
                written += enc.consumed
            batch.written(written, self.clock())
            h.counters.pending = len(batch)
            if batch.records:  # a write failed; keep the rest for the retry
                return
            # A backlog waits on the queue: take it now and send it in full
            # frames rather than waiting for the next wake-up.
            if len(h.queue) >= self.cfg.batch_size or h.closing.is_set() or h.flush_now.is_set():
                self._take(self.clock())
        self._send_status(conn)

    def _invalid(self, rec: Record, exc: Exception) -> None:
        dropped = self.h.counters.dropped
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
        c = self.h.counters
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
                session_id=self.numbers.session_id,
            )
        self.state.replay.record(enc)

    def _send_status(self, conn: Connection) -> None:
        c, status = self.h.counters, self.state.status
        total = c.dropped[_CHANNEL_FULL]
        delta = status.unreported(total)
        if delta <= 0:
            return
        if self._write(conn, encode_status(delta)):
            status.delivered(total)
            c.status_reports_sent += 1

    def _finish(self) -> None:
        h, st = self.h, self.state
        h.counters.pending = len(st.batch)
        undelivered = h.pending()
        h.counters.undelivered = undelivered
        unreported = st.status.unreported(h.counters.dropped[_CHANNEL_FULL])
        if undelivered or unreported:
            self.log.error(
                "closing with audit events not delivered to the agent",
                undelivered=undelivered,
                drops_not_reported=unreported,
                last_error=st.retry.last_error,
                reason="no agent listening" if st.no_agent else "close timeout",
                session_id=self.numbers.session_id,
            )
        else:
            self.log.debug("audit sender closed; everything delivered", sent=h.counters.sent)
        self._disconnect()

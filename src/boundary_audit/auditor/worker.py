"""The sender thread: turns queued events into frames on the agent's socket.

It asks :class:`~.sender.SenderState` what is due, keeps the books of what
the agent has in :class:`~.delivery.Delivery`, and does the I/O through
:class:`~.transport.Connection`. Everything it shares with the callers of
SocketAuditor is in one :class:`Handoff`, so the boundary between the two
threads is one small type rather than an object both sides reach into.
The end of a session (seal, spill) is in :mod:`.finish`.
"""

from __future__ import annotations

import collections
import enum
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..wire import DropReason, WireError
from .delivery import AckError, Kind, PeerMode, Sent
from .encoding import EncodedFrame, Record, decode_ack, encode_open, encode_records, encode_status
from .finish import finish_session, socket_seal
from .sender import EpisodeOver, EpisodeStarted, SenderState, failure_kind, should_log_invalid
from .sequence import MAX_SEQUENCE_NUMBER, SequenceCounter
from .spill import SpillDeliveries
from .stats import Counters
from .transport import Connection, no_listener
from .trust import UntrustedListenerError

_CHANNEL_FULL = DropReason.CHANNEL_FULL
#: Counters.open_result values (socket.OpenResult spells them for callers).
OPEN_PENDING = ""
OPEN_UNREACHABLE = "unreachable"
#: Bytes of other sessions' spill frames written per flush, behind the
#: session's own: a backlog drains steadily without delaying a batch.
SPILL_BYTES_PER_FLUSH = 256 * 1024
_ACKS = {PeerMode.UNKNOWN: None, PeerMode.ACKNOWLEDGES: True, PeerMode.NEVER_ACKNOWLEDGES: False}


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


class Put(enum.Enum):
    """What became of one frame write."""

    WROTE = "wrote"
    NO_ROOM = "no_room"  # window or kernel buffer full: try again later
    FAILED = "failed"  # the connection is gone (already handled)


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
        *,
        clock: Callable[[], float],
        wall_clock_ns: Callable[[], int] = time.time_ns,
    ) -> None:
        self.h = handoff
        self.cfg = config
        self.numbers = numbers  # the current session id, and the next number (seal)
        self.log = log
        self.clock = clock
        self.wall_clock_ns = wall_clock_ns
        self.state = SenderState(
            batch_size=config.batch_size,
            batch_interval=config.batch_interval,
            replay_window_bytes=config.replay_window_bytes,
        )
        self.delivery = self.state.delivery
        self.spills = SpillDeliveries(config.spill_dir, handoff.counters, log)
        self.conn: Connection | None = None
        #: Writing stopped because the kernel's send buffer was full.
        self._kernel_full = False
        #: Highest sequence number the sender has encoded (-1: none).
        self.highest_encoded = -1
        self._outq_warned = False

    def main(self) -> None:
        """The thread's target: the loop, and loud accounting if it ever crashes."""
        h = self.h
        try:
            self.run()
        except Exception:  # pragma: no cover - a bug; make it loud, never silent
            h.counters.undelivered = h.pending() + h.counters.in_flight
            self.log.exception("audit sender thread crashed", undelivered=h.counters.undelivered)
        finally:
            h.connected.clear()
            with h.drained:
                h.drained.notify_all()

    # The loop: take events, look at the peer when due, decide whether a
    # flush is due, try it, sleep until the next reason to act.
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
            awaiting = self._awaiting_peer()
            if self.conn is not None and (st.blocked or awaiting or st.peer_checks.due(now)):
                self._check_peer(now)
            flushed = False
            if self._flush_due(now, closing):
                self._flush()
                flushed = True
                if self.conn is not None:
                    self._check_peer(self.clock())
            self._notify(flushed)
            if closing and st.close_done(self.clock(), queue_empty=not h.queue):
                finish_session(self)
                self._disconnect()
                return
            if not (flushed and self._flush_due(self.clock(), closing)):
                # (A flush that stopped for room, which is back already, goes
                # on at once: no event may come to wake the thread.)
                self._sleep()

    def _flush_due(self, now: float, closing: bool) -> bool:
        h = self.h
        return self.state.flush_due(
            now,
            urgent=closing or h.flush_now.is_set(),
            dropped=h.counters.dropped[_CHANNEL_FULL],
            can_report=self.conn is not None or closing,
            extra=self._extra_due(closing),
        )

    def _extra_due(self, closing: bool) -> bool:
        """Frames other than the batch's: a connection asked for, spills, the seal."""
        h, st = self.h, self.state
        if self.conn is None and h.connect_now.is_set():
            return True
        if self.conn is not None and self.spills.pending and not closing:
            return True
        return closing and not st.sealed and st.drained(not h.queue)

    def _awaiting_peer(self) -> bool:
        """Waiting for the agent to take frames: at close, or for connect_now()."""
        if self.conn is None:
            return False
        if self.h.connect_now.is_set() and self.h.counters.open_result == OPEN_PENDING:
            return True
        return self.state.sealed and not self.delivery.settled

    def _sleep(self) -> None:
        st = self.state
        awaiting = self._awaiting_peer()
        timeout = st.sleep_for(self.clock(), awaiting_peer=awaiting)
        if self.conn is not None and (st.blocked or awaiting):
            # Acks arrive on the socket, and room in a full kernel buffer is
            # signalled there: wake for those rather than on the callers'
            # event (nothing new could be written anyway).
            self.conn.wait(timeout, writable=self._kernel_full)
        else:
            self.h.wake.wait(timeout)

    def _notify(self, flushed: bool) -> None:
        h = self.h
        if h.flush_now.is_set() and h.pending() == 0:
            # Drained after flush() asked: wake it (it checks for itself,
            # and asks again if events came in meanwhile).
            with h.drained:
                h.drained.notify_all()
                if flushed:
                    h.flush_now.clear()

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
        """A connection to the first trusted agent listening, opened with our open frame."""
        if self.conn is not None:
            return self.conn
        h, st, c = self.h, self.state, self.h.counters
        untrusted: UntrustedListenerError | None = None
        error: OSError | None = None
        for path in self.cfg.socket_paths:
            try:
                conn = Connection.open(path, self.cfg.allowed_uids)
                break
            except UntrustedListenerError as exc:
                c.refused_listeners += 1
                untrusted = untrusted or exc
            except OSError as exc:
                error = error or exc
        else:
            c.connect_failures += 1
            self._connect_failed(untrusted, error)
            if h.connect_now.is_set():
                # connect_now() need not wait out its timeout: nothing to claim
                # with now. The flag stays: the session is opened as soon as a
                # trusted agent appears.
                c.open_result = OPEN_UNREACHABLE
                with h.drained:
                    h.drained.notify_all()
            return None
        self.conn = conn
        c.open_result = OPEN_PENDING
        c.agent_socket = str(conn.path)
        c.connects += 1
        h.connected.set()
        self.delivery.begin()
        if st.retry.last_error is not None or c.connects > 1:
            self.log.info(
                "connected to agent",
                agent_socket=str(conn.path),
                after_failures=st.retry.failures,
                resend_events=sum(s.events for s in self.delivery.carried),
                session_id=self.numbers.session_id,
            )
        st.retry.connected()
        first = self._first_seq()
        opening = Sent(encode_open(self.numbers.session_id, self.cfg.sender_name, first), Kind.OPEN)
        if self._put(conn, opening) is not Put.WROTE:
            return None
        if not h.closing.is_set():
            self.spills.start()
        return conn

    def _connect_failed(
        self, untrusted: UntrustedListenerError | None, error: OSError | None
    ) -> None:
        h, st = self.h, self.state
        now = self.clock()
        if untrusted is not None:
            if st.retry.failed(untrusted.kind, now):
                self.log.error(
                    "refusing to send audit events: the socket's listener is not trusted "
                    "(another user may have bound it); will keep retrying",
                    agent_socket=str(untrusted.path),
                    reason=untrusted.reason,
                    listener_uid=untrusted.uid,
                    listener_pid=untrusted.pid,
                    allowed_uids=sorted(self.cfg.allowed_uids),
                    pending=h.pending(),
                    session_id=self.numbers.session_id,
                )
        elif error is not None:
            self._failed("connect", error)
        if (
            h.closing.is_set()
            and h.counters.connects == 0
            and (error is None or no_listener(error))
        ):
            # Closing, and no trusted agent has listened all along (none
            # deployed, a squatter, --no-audit-socket forgotten): waiting out
            # the close timeout cannot deliver anything, so spill at once. An
            # agent seen before may be restarting, so that case keeps retrying.
            st.no_agent = True

    def _first_seq(self) -> int:
        """The first sequence number this connection carries (open's first_sequence_number)."""
        firsts = [s.first_sequence for s in self.delivery.carried if s.first_sequence >= 0]
        if self.state.batch.records:
            firsts.append(self.state.batch.records[0].sequence_number)
        elif self.h.queue:
            firsts.append(self.h.queue[0].sequence_number)
        if not firsts:
            firsts.append(max(self.numbers.next_number(), self.highest_encoded + 1))
        return max(0, min(*firsts, MAX_SEQUENCE_NUMBER))

    def _disconnect(self) -> None:
        conn, self.conn = self.conn, None
        if conn is None:
            return
        self.h.connected.clear()
        conn.close()
        # Frames of spill files not known delivered are abandoned: their
        # files stay, for the next connection to deliver from the start.
        delivered, _ = self.delivery.lost()
        self._released(delivered)
        self.spills.abandon()
        self.state.blocked = False
        self.h.counters.open_result = OPEN_PENDING
        self._mode_changed()

    def _failed(self, what: str, exc: OSError | WireError) -> None:
        """Back off, and log only when the kind of failure changes."""
        kind = (
            failure_kind(what, exc) if isinstance(exc, OSError) else f"{what}:{type(exc).__name__}"
        )
        if self.state.retry.failed(kind, self.clock()):
            self.log.warning(
                f"cannot {what} to agent socket; will retry with backoff",
                error=str(exc),
                errno=getattr(exc, "errno", None),
                pending=self.h.pending(),
                session_id=self.numbers.session_id,
            )

    def _check_peer(self, now: float) -> None:
        """Read acks, sample SIOCOUTQ, and notice an agent that hung up."""
        self.state.peer_checks.done(now)
        conn = self.conn
        if conn is None:
            return
        d = self.delivery
        try:
            outq = self._outq(conn)
            frames, eof = conn.receive()
        except (OSError, WireError) as exc:
            self._disconnect()
            self._failed("read", exc)
            return
        for frame in frames:
            try:
                released = d.acknowledged(decode_ack(frame.payload))
            except (ValueError, AckError) as exc:
                self.log.error(
                    "agent broke the protocol on the socket; reconnecting",
                    error=str(exc),
                    session_id=self.numbers.session_id,
                )
                self._disconnect()
                self._failed("read", WireError(str(exc)))
                return
            self.h.counters.acks_received += 1
            self._released(released)
        if eof:
            self.log.warning("agent closed the connection", session_id=self.numbers.session_id)
            self._disconnect()
            return
        # Alive after the sample: trust it (and the one after the last write).
        if outq is not None:
            d.sampled(outq)
        self._released(d.alive(now))
        self._released(d.tick(now))
        self._mode_changed()
        if self.state.blocked:
            self._room(conn, 1)  # acks or reads may have made room

    def _room(self, conn: Connection, size: int) -> bool:
        """Room to write a frame of ``size`` bytes now, in the window and the kernel.

        Sets ``blocked`` (and whether the kernel is what is full) for the
        loop's sleep; a connection that fails meanwhile is handled.
        """
        d, st = self.delivery, self.state
        if not d.room(size):
            self._released(d.make_room())
        if not d.room(size):
            st.blocked, self._kernel_full = True, False
            return False
        if not conn.may_write(d.last_outq):
            # The sample may be stale: the agent may have read since.
            outq = self._fresh_outq(conn)
            if outq is None or not conn.may_write(outq):
                st.blocked = self._kernel_full = self.conn is not None
                return False
        st.blocked = self._kernel_full = False
        return True

    def _fresh_outq(self, conn: Connection) -> int | None:
        """SIOCOUTQ now (None when the connection failed: already handled)."""
        try:
            outq = self._outq(conn)
        except OSError as exc:
            self._disconnect()
            self._failed("read", exc)
            return None
        self.delivery.sampled(outq)
        return outq

    def _outq(self, conn: Connection) -> int:
        outq = conn.outq()
        if outq is None and not self._outq_warned:
            self._outq_warned = True
            self.log.warning(
                "SIOCOUTQ is not available: against an agent that never acknowledges, "
                "frames count as delivered once written",
                session_id=self.numbers.session_id,
            )
            return 0
        return outq if outq is not None else 0

    def _mode_changed(self) -> None:
        c, d = self.h.counters, self.delivery
        c.agent_acknowledges = _ACKS[d.mode]
        if self.conn is None or c.open_result != OPEN_PENDING:
            return
        if d.open_acknowledged():
            c.open_result = "acknowledged"
        elif d.mode is PeerMode.NEVER_ACKNOWLEDGES and d.read >= 1:
            c.open_result = "read"
        else:
            return
        self.h.connect_now.clear()
        with self.h.drained:
            self.h.drained.notify_all()

    def _released(self, sent: list[Sent]) -> None:
        """Frames the agent now has: count them, and remove spill files done."""
        c = self.h.counters
        for s in sent:
            if s.origin is not None:
                self.spills.delivered(s)
                continue
            c.delivered += s.events
            c.in_flight -= s.events
            if s.kind is Kind.SEAL:
                c.sealed = True

    # -- writing ------------------------------------------------------------

    def _put(self, conn: Connection, sent: Sent, *, replay: bool = False) -> Put:
        """Write one frame if there is room; count it and hold it until delivered."""
        d, c = self.delivery, self.h.counters
        if not self._room(conn, len(sent.frame)):
            return Put.NO_ROOM if self.conn is not None else Put.FAILED
        try:
            conn.send(sent.frame)
            outq = conn.outq()
        except OSError as exc:  # includes TimeoutError from a stalled agent
            c.write_errors += 1
            self._disconnect()
            self._failed("write", exc)
            return Put.FAILED
        d.wrote(sent, outq)
        c.frames_sent += 1
        c.bytes_sent += len(sent.frame)
        if sent.origin is None:
            if replay:
                c.replayed_events += sent.events
            else:
                c.sent += sent.events
            c.in_flight += sent.events
        return Put.WROTE

    def _flush(self) -> None:
        conn = self._connect()
        if conn is None or not self._resend(conn) or not self._write_batch(conn):
            return
        if self.conn is None or not self._send_status(conn):
            return
        self._write_spills(conn)
        h, st = self.h, self.state
        seal_due = h.closing.is_set() and not st.sealed and st.drained(not h.queue)
        if seal_due and self.conn is not None:
            st.sealed = self._put(conn, Sent(socket_seal(self), Kind.SEAL)) is Put.WROTE

    def _resend(self, conn: Connection) -> bool:
        """Re-send what the last connection may not have delivered; True when all went."""
        d = self.delivery
        carried = d.take_carried()
        for i, sent in enumerate(carried):
            result = self._put(conn, sent, replay=True)
            if result is not Put.WROTE:
                d.carried = d.carried + carried[i:] if result is Put.FAILED else carried[i:]
                return False
        return True

    def _write_batch(self, conn: Connection) -> bool:
        """Write the batch (and any backlog) in full frames; True when all went."""
        h, batch = self.h, self.state.batch
        if batch.records and not self._room(conn, 1):
            return False  # not worth encoding a frame that cannot go
        while batch.records:
            written = 0
            result = Put.WROTE
            for enc in encode_records(
                batch.records, self.cfg.process_name, on_invalid=self._invalid
            ):
                if enc.frame:
                    result = self._put(conn, self._logs(enc))
                    if result is not Put.WROTE:
                        break
                    self._encoded(enc)
                written += enc.consumed
            batch.written(written, self.clock())
            h.counters.pending = len(batch)
            if result is not Put.WROTE:
                return False
            # A backlog waits on the queue: take it now and send it in full
            # frames rather than waiting for the next wake-up.
            if len(h.queue) >= self.cfg.batch_size or h.closing.is_set() or h.flush_now.is_set():
                self._take(self.clock())
        return True

    @staticmethod
    def _logs(enc: EncodedFrame) -> Sent:
        return Sent(enc.frame, Kind.LOGS, enc.events, enc.first_sequence)

    def _write_spills(self, conn: Connection) -> None:
        """Other sessions' spill frames, up to SPILL_BYTES_PER_FLUSH, behind our own."""
        budget = SPILL_BYTES_PER_FLUSH
        while budget > 0 and self.conn is not None:
            sent = self.spills.peek()
            if sent is None or self._put(conn, sent) is not Put.WROTE:
                return
            self.spills.advance()
            budget -= len(sent.frame)

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

    def _encoded(self, enc: EncodedFrame) -> None:
        """Bookkeeping of a frame of events that was written."""
        self.highest_encoded = max(self.highest_encoded, enc.max_sequence)
        if enc.truncated:
            self.h.counters.truncated += enc.truncated
            self.log.warning(
                "event too large for one frame; URL truncated",
                truncated_events=enc.truncated,
                first_sequence=enc.first_sequence,
                last_sequence=enc.last_sequence,
                session_id=self.numbers.session_id,
            )

    def _send_status(self, conn: Connection) -> bool:
        """Report drops the agent has not heard of; True unless the connection failed."""
        c, status = self.h.counters, self.state.status
        total = c.dropped[_CHANNEL_FULL]
        delta = status.unreported(total)
        if delta <= 0:
            return True
        sent = Sent(encode_status(delta, self.numbers.session_id), Kind.STATUS)
        result = self._put(conn, sent)
        if result is Put.WROTE:
            status.delivered(total)
            c.status_reports_sent += 1
        return result is not Put.FAILED


def sender_name() -> str:
    """``boundary-audit/<version>`` for the open frame."""
    from .. import __version__

    return f"boundary-audit/{__version__}"


__all__ = ["Handoff", "Put", "SenderConfig", "SenderThread", "sender_name"]

"""The sender thread: turns queued events into frames on the agent's socket.

It asks :class:`~.sender.SenderState` what is due and decides what to write
(the batch, re-sends, drop reports, other sessions' spills, the seal);
:class:`~.link.AgentLink` holds the connection and the books of what the
agent has. With the callers of SocketAuditor it shares one
:class:`~.handoff.Handoff`. The end of a session (seal, spill) is in
:mod:`.finish`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from ..wire import DropReason
from .chaining import ChainMark, mark_for
from .chaining import start as start_chain
from .delivery import Kind, Sent
from .encoding import EncodedFrame, Record, encode_records, encode_status
from .finish import finish_session, socket_seal
from .handoff import OPEN_PENDING, Handoff, SenderConfig
from .handover import resolve_all
from .link import AgentLink, Put
from .sender import EpisodeOver, EpisodeStarted, SenderState, should_log_invalid
from .sequence import MAX_SEQUENCE_NUMBER, SequenceCounter
from .transport import Connection

_CHANNEL_FULL = DropReason.CHANNEL_FULL
#: Bytes of other sessions' spill frames written per flush, behind the
#: session's own: a backlog drains steadily without delaying a batch.
SPILL_BYTES_PER_FLUSH = 256 * 1024


class SenderThread:
    """The background thread's loop: asks SenderState what is due, does the I/O.

    Only this thread touches ``state`` and the link; with callers it shares
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
        self.link = AgentLink(handoff, config, self.state, numbers, log, clock=clock)
        self.spills = self.link.spills
        #: Highest sequence number the sender has encoded (-1: none).
        self.highest_encoded = -1
        #: The session's hash chain up to the last event written (:mod:`.chaining`).
        self.chain: ChainMark | None = None

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
            # Spilled, undelivered-and-counted, or (a crash) counted above:
            # nobody waits for this sender any more.
            resolve_all(h.handover.finish())
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
            if self.link.conn is not None and (st.blocked or awaiting or st.peer_checks.due(now)):
                self.link.check_peer(now)
            flushed = False
            if self._flush_due(now, closing):
                self._flush()
                flushed = True
                self._hand_over()  # wake waiters before the peer check's syscalls
                if self.link.conn is not None:
                    self.link.check_peer(self.clock())
            self._notify(flushed)
            self._hand_over()
            if closing and st.close_done(self.clock(), queue_empty=not h.queue):
                finish_session(self)
                self.link.disconnect()
                return
            if not (flushed and self._flush_due(self.clock(), closing)):
                # (A flush that stopped for room, which is back already, goes
                # on at once: no event may come to wake the thread.)
                self._sleep()

    def _flush_due(self, now: float, closing: bool) -> bool:
        h = self.h
        return self.state.flush_due(
            now,
            # A caller waits for an event (the proxy, before a response):
            # write what is queued now, whatever its size and age.
            urgent=closing or h.flush_now.is_set() or h.handover.due(),
            dropped=h.counters.dropped[_CHANNEL_FULL],
            can_report=self.link.conn is not None or closing,
            extra=self._extra_due(closing),
        )

    def _extra_due(self, closing: bool) -> bool:
        """Frames other than the batch's: a connection asked for, spills, the seal."""
        h, st = self.h, self.state
        if self.link.conn is None and h.connect_now.is_set():
            return True
        if self.link.conn is not None and self.spills.pending and not closing:
            return True
        return closing and not st.sealed and st.drained(not h.queue)

    def _awaiting_peer(self) -> bool:
        """Waiting for the agent to take frames: at close, or for connect_now()."""
        if self.link.conn is None:
            return False
        if self.h.connect_now.is_set() and self.h.counters.open_result == OPEN_PENDING:
            return True
        return self.state.sealed and not self.delivery.settled

    def _sleep(self) -> None:
        st = self.state
        awaiting = self._awaiting_peer()
        timeout = st.sleep_for(self.clock(), awaiting_peer=awaiting)
        if self.link.conn is not None and (st.blocked or awaiting):
            # Acks arrive on the socket, and room in a full kernel buffer is
            # signalled there: wake for those rather than on the callers'
            # event (nothing new could be written anyway).
            self.link.conn.wait(timeout, writable=self.link.kernel_full)
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

    def _hand_over(self) -> None:
        """Move the handed-over watermark, and wake the callers it passed.

        Everything taken off the queue is handed over once the batch is
        empty: written to the socket, or dropped as unencodable and counted
        (the batch may be sorted, so a part-written one says nothing). Read
        ``queued`` before the queue's length: an audit() between the two
        makes the watermark low, never high (the next wake-up corrects it).
        """
        if self.state.batch.records:
            return
        h = self.h
        ho = h.handover
        through = h.counters.queued - len(h.queue)
        if through <= ho.through:
            return
        was_stalled = ho.stalled
        resolve_all(ho.advance(through))
        if was_stalled:
            self.log.info(
                "audit events are handed over to the agent again; responses wait for them",
                released_unwaited=ho.timeouts + ho.skipped - ho.stall_started,
                session_id=self.numbers.session_id,
            )

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

    # -- writing ------------------------------------------------------------

    def _flush(self) -> None:
        conn = self.link.connect(self._first_seq)
        if conn is None or not self._resend(conn) or not self._write_batch(conn):
            return
        if self.link.conn is None or not self._send_status(conn):
            return
        self._write_spills(conn)
        h, st = self.h, self.state
        seal_due = h.closing.is_set() and not st.sealed and st.drained(not h.queue)
        if seal_due and self.link.conn is not None:
            st.sealed = self.link.put(conn, Sent(socket_seal(self), Kind.SEAL)) is Put.WROTE

    def _resend(self, conn: Connection) -> bool:
        """Re-send what the last connection may not have delivered; True when all went."""
        d = self.delivery
        carried = d.take_carried()
        for i, sent in enumerate(carried):
            result = self.link.put(conn, sent, replay=True)
            if result is not Put.WROTE:
                d.carried = d.carried + carried[i:] if result is Put.FAILED else carried[i:]
                return False
        return True

    def _write_batch(self, conn: Connection) -> bool:
        """Write the batch (and any backlog) in full frames; True when all went."""
        h, batch = self.h, self.state.batch
        if batch.records and not self.link.room(conn, 1):
            return False  # not worth encoding a frame that cannot go
        while batch.records:
            written = 0
            result = Put.WROTE
            # Invalid records are counted with the frame that consumes them:
            # a frame not written is encoded again later, and its invalid
            # records would otherwise count once per attempt.
            invalid: list[tuple[Record, Exception]] = []
            for enc in encode_records(
                batch.records,
                self.cfg.process_name,
                on_invalid=_collect(invalid),
                chain=self.chain_mark(),
            ):
                if enc.frame:
                    result = self.link.put(conn, self._logs(enc))
                    if result is not Put.WROTE:
                        break
                    self.encoded(enc)
                    self.chained(enc)
                for rec, exc in invalid:
                    self.invalid(rec, exc)
                invalid.clear()
                written += enc.consumed
            batch.written(written, self.clock())
            h.counters.pending = len(batch)
            if result is not Put.WROTE:
                return False
            # A backlog waits on the queue: take it now and send it in full
            # frames rather than waiting for the next wake-up.
            if (
                len(h.queue) >= self.cfg.batch_size
                or h.closing.is_set()
                or h.flush_now.is_set()
                or h.handover.due()
            ):
                self._take(self.clock())
        return True

    @staticmethod
    def _logs(enc: EncodedFrame) -> Sent:
        return Sent(enc.frame, Kind.LOGS, enc.events, enc.first_sequence, chain=enc.chain)

    def chain_mark(self) -> ChainMark:
        """The chain as far as frames went out, to encode the next ones from.

        The genesis of the current session before any; after a rotation, the
        old session's mark until its last records are out
        (:func:`encode_records` starts the new session's chain itself).
        """
        if self.chain is not None:
            return self.chain
        return start_chain(self.numbers.session_id)

    def seal_chain(self) -> ChainMark:
        """The current session's chain for a seal: what went out of it so far."""
        return mark_for(self.chain, self.numbers.session_id)

    def chained(self, enc: EncodedFrame) -> None:
        """``enc`` went out (written, or kept in the spill): its chain is committed."""
        if enc.chain is not None:
            self.chain = enc.chain.after

    def _write_spills(self, conn: Connection) -> None:
        """Other sessions' spill frames, up to SPILL_BYTES_PER_FLUSH, behind our own."""
        budget = SPILL_BYTES_PER_FLUSH
        while budget > 0 and self.link.conn is not None:
            sent = self.spills.peek()
            if sent is None or self.link.put(conn, sent) is not Put.WROTE:
                return
            self.spills.advance()
            budget -= len(sent.frame)

    def invalid(self, rec: Record, exc: Exception) -> None:
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

    def encoded(self, enc: EncodedFrame) -> None:
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
        result = self.link.put(conn, sent)
        if result is Put.WROTE:
            status.delivered(total)
            c.status_reports_sent += 1
        return result is not Put.FAILED


def _collect(into: list[tuple[Record, Exception]]) -> Callable[[Record, Exception], None]:
    """An on_invalid handler that keeps the records for later."""

    def keep(rec: Record, exc: Exception) -> None:
        into.append((rec, exc))

    return keep


__all__ = ["Handoff", "SenderConfig", "SenderThread"]

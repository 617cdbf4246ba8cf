"""The link to the agent: one connection at a time, and what the agent has.

Connects to the first trusted agent among the candidate paths (with the
checks of :mod:`.trust`), opens the session on every connection, writes
frames while there is room (the unacknowledged window, the kernel's buffer),
reads acks and samples SIOCOUTQ to learn what was delivered
(:mod:`.delivery`), and on a lost connection keeps what must be re-sent.
Used by the sender thread (:mod:`.worker`) only; decisions about *what* to
write stay there.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from typing import Any

from ..wire import WireError
from .delivery import AckError, Delivery, Kind, PeerMode, Sent
from .encoding import decode_ack, encode_open
from .handoff import OPEN_PENDING, OPEN_UNREACHABLE, Handoff, SenderConfig
from .sender import SenderState, failure_kind
from .sequence import SequenceCounter
from .spill import SpillDeliveries
from .transport import Connection, no_listener
from .trust import UntrustedListenerError

_ACKS = {PeerMode.UNKNOWN: None, PeerMode.ACKNOWLEDGES: True, PeerMode.NEVER_ACKNOWLEDGES: False}


class Put(enum.Enum):
    """What became of one frame write."""

    WROTE = "wrote"
    NO_ROOM = "no_room"  # window or kernel buffer full: try again later
    FAILED = "failed"  # the connection is gone (already handled)


class AgentLink:
    """The sender thread's connection to the agent, and the books of what it has."""

    def __init__(
        self,
        handoff: Handoff,
        config: SenderConfig,
        state: SenderState,
        numbers: SequenceCounter,
        log: Any,
        *,
        clock: Callable[[], float],
    ) -> None:
        self.h = handoff
        self.cfg = config
        self.state = state
        self.delivery: Delivery = state.delivery
        self.numbers = numbers
        self.log = log
        self.clock = clock
        self.spills = SpillDeliveries(config.spill_dir, handoff.counters, log)
        self.conn: Connection | None = None
        #: Writing stopped because the kernel's send buffer was full.
        self.kernel_full = False
        self._outq_warned = False

    def connect(self, first_seq: Callable[[], int]) -> Connection | None:
        """A connection to the first trusted agent listening, opened with our open frame.

        ``first_seq`` gives the open frame's first_sequence_number, asked
        only once connected.
        """
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
        first = first_seq()
        opening = Sent(encode_open(self.numbers.session_id, self.cfg.sender_name, first), Kind.OPEN)
        if self.put(conn, opening) is not Put.WROTE:
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
            self.failed("connect", error)
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

    def disconnect(self) -> None:
        conn, self.conn = self.conn, None
        if conn is None:
            return
        self.h.connected.clear()
        conn.close()
        # Frames of spill files not known delivered are abandoned: their
        # files stay, for the next connection to deliver from the start.
        delivered, _ = self.delivery.lost()
        self.released(delivered)
        self.spills.abandon()
        self.state.blocked = False
        self.h.counters.open_result = OPEN_PENDING
        self._mode_changed()

    def failed(self, what: str, exc: OSError | WireError) -> None:
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

    def check_peer(self, now: float) -> None:
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
            self.disconnect()
            self.failed("read", exc)
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
                self.disconnect()
                self.failed("read", WireError(str(exc)))
                return
            self.h.counters.acks_received += 1
            self.released(released)
        if eof:
            self.log.warning("agent closed the connection", session_id=self.numbers.session_id)
            self.disconnect()
            return
        # Alive after the sample: trust it (and the one after the last write).
        if outq is not None:
            d.sampled(outq)
        self.released(d.alive(now))
        self.released(d.tick(now))
        self._mode_changed()
        if self.state.blocked:
            self.room(conn, 1)  # acks or reads may have made room

    def room(self, conn: Connection, size: int) -> bool:
        """Room to write a frame of ``size`` bytes now, in the window and the kernel.

        Sets ``blocked`` (and whether the kernel is what is full) for the
        loop's sleep; a connection that fails meanwhile is handled.
        """
        d, st = self.delivery, self.state
        if not d.room(size):
            self.released(d.make_room())
        if not d.room(size):
            st.blocked, self.kernel_full = True, False
            return False
        if not conn.may_write(d.last_outq):
            # The sample may be stale: the agent may have read since.
            outq = self._fresh_outq(conn)
            if outq is None or not conn.may_write(outq):
                st.blocked = self.kernel_full = self.conn is not None
                return False
        st.blocked = self.kernel_full = False
        return True

    def _fresh_outq(self, conn: Connection) -> int | None:
        """SIOCOUTQ now (None when the connection failed: already handled)."""
        try:
            outq = self._outq(conn)
        except OSError as exc:
            self.disconnect()
            self.failed("read", exc)
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

    def released(self, sent: list[Sent]) -> None:
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

    def put(self, conn: Connection, sent: Sent, *, replay: bool = False) -> Put:
        """Write one frame if there is room; count it and hold it until delivered."""
        d, c = self.delivery, self.h.counters
        if not self.room(conn, len(sent.frame)):
            return Put.NO_ROOM if self.conn is not None else Put.FAILED
        try:
            conn.send(sent.frame)
            outq = conn.outq()
        except OSError as exc:  # includes TimeoutError from a stalled agent
            c.write_errors += 1
            self.disconnect()
            self.failed("write", exc)
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

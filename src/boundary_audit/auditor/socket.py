"""SocketAuditor: sends audit events to the agent over its Unix socket.

The caller's thread only timestamps the event, gives it a sequence number and
appends a tuple to a bounded deque. A background thread (:mod:`.worker`) turns
queued events into tag-2 frames and writes them. The caller never waits for
any of that; the two sides share one :class:`~.worker.Handoff`.
"""

from __future__ import annotations

import asyncio
import atexit
import enum
import os
import threading
import time
import uuid
import weakref
from collections.abc import Iterable, Mapping
from pathlib import Path

from ..logs import get_logger
from ..wire import DropReason, socket_path_candidates
from ..wire.spill import DEFAULT_SPILL_MAX_BYTES, resolve_spill_dir
from .encoding import Record
from .event import AuditEvent, CloseOnExit
from .handoff import Handoff, SenderConfig, sender_name
from .handover import HANDOVER_TIMEOUT
from .sender import DEFAULT_BATCH_INTERVAL, DEFAULT_BATCH_SIZE, DEFAULT_REPLAY_WINDOW_BYTES
from .sequence import SequenceCounter
from .stats import AuditorStats, snapshot
from .trust import allowed_listener_uids as trusted_uids
from .worker import SenderThread

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
#: close() waits at most this long for an audit() already past its closed
#: check to finish appending (it holds the lock for a deque append, so
#: microseconds; the bound matters only when close() runs in a signal
#: handler that interrupted that very audit() on the same thread).
CLOSE_BARRIER_TIMEOUT = 0.05

#: Env variable (shared with Coder's boundary) that turns the socket sender off.
DISABLE_ENV = "DISABLE_AUDIT_LOGS"
_TRUTHY = frozenset({"1", "true", "yes", "on"})
_CHANNEL_FULL = DropReason.CHANNEL_FULL
_new_record = tuple.__new__
_time_ns = time.time_ns


def _is_truthy(value: str | None) -> bool:
    return value is not None and value.strip().lower() in _TRUTHY


class OpenResult(enum.StrEnum):
    """What :meth:`SocketAuditor.connect_now` found."""

    #: Our agent acknowledged the open frame: the session is claimed.
    ACKNOWLEDGED = "acknowledged"
    #: An agent read the open frame and does not acknowledge (Coder's).
    READ = "read"
    #: No trusted agent could be reached within the timeout (none listening,
    #: or only an untrusted listener); events are queued and retried.
    UNREACHABLE = "unreachable"
    #: The socket sender is off (DISABLE_AUDIT_LOGS or disabled=True).
    DISABLED = "disabled"


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
        handover_timeout: float = HANDOVER_TIMEOUT,
        replay_window_bytes: int = DEFAULT_REPLAY_WINDOW_BYTES,
        spill_dir: str | os.PathLike[str] | None = None,
        spill_max_bytes: int = DEFAULT_SPILL_MAX_BYTES,
        allowed_listener_uids: Iterable[int] = (),
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
        #: Where the sender looks for an agent, in order (wire.socket_path_candidates).
        self.socket_paths: tuple[Path, ...] = tuple(socket_path_candidates(socket_path, environ))
        self.socket_path: Path = self.socket_paths[0]
        self.spill_dir: Path = resolve_spill_dir(spill_dir, environ)
        self.spill_max_bytes = spill_max_bytes
        #: Uids whose listener may receive events: ours, root, and those configured.
        self.allowed_listener_uids = trusted_uids(allowed_listener_uids, environ)
        self._log = get_logger("auditor", socket=str(self.socket_path))
        self._numbers = SequenceCounter(session_id, log=self._log)
        self.confined_process_name = _process_name(confined_process_name)
        self.batch_size = batch_size
        self.batch_interval = batch_interval
        self.queue_size = queue_size
        self.close_timeout = close_timeout
        #: Longest handed_over() waits (:data:`.handover.HANDOVER_TIMEOUT`).
        self.handover_timeout = handover_timeout
        self.replay_window_bytes = replay_window_bytes
        self.disabled = _is_truthy(environ.get(DISABLE_ENV)) if disabled is None else disabled

        self._lock = threading.Lock()
        self._handoff = h = Handoff(close_timeout=close_timeout)
        # The handoff's parts audit() touches, one attribute away (hot path).
        self._queue = h.queue
        self._c = h.counters
        self._wake = h.wake
        self._closed = False
        self._thread: threading.Thread | None = None
        self._closed_warned = False

        if self.disabled:
            self._log.warning(
                "audit socket sender disabled; events are not forwarded to the agent",
                reason=f"{DISABLE_ENV} or disabled=True",
                session_id=self.session_id,
            )
            return
        if not any(os.path.lexists(p) for p in self.socket_paths):
            self._log.warning(
                "agent socket does not exist yet; events are queued and sending is retried",
                candidates=[str(p) for p in self.socket_paths],
                session_id=self.session_id,
            )
        config = SenderConfig(
            socket_paths=self.socket_paths,
            process_name=self.confined_process_name,
            batch_size=batch_size,
            batch_interval=batch_interval,
            queue_size=queue_size,
            replay_window_bytes=replay_window_bytes,
            allowed_uids=self.allowed_listener_uids,
            spill_dir=self.spill_dir,
            spill_max_bytes=spill_max_bytes,
            sender_name=sender_name(),
        )
        sender = SenderThread(h, config, self._numbers, self._log, clock=time.monotonic)
        self._thread = threading.Thread(
            target=sender.main, name=f"boundary-audit-sender-{self.session_id[:8]}"
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
                c = self._c
                c.dropped[_CHANNEL_FULL] += 1
                c.highest_dropped = max(c.highest_dropped, seq)
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

    # -- waiting for the handover (the proxy, before a response) -------------

    def handover_mark(self) -> int:
        """A mark covering every event audited so far; announces a wait for it.

        Take it right after audit(), await :meth:`handed_over` with it before
        the answer goes out. The sender starts writing at once (no batch
        linger), so the wait overlaps whatever the caller does meanwhile.
        """
        mark = self._c.queued
        ho = self._handoff.handover
        if mark > ho.wanted and self._thread is not None:
            ho.want(mark)
            if not self._wake.is_set():
                self._wake.set()
        return mark

    async def handed_over(self, mark: int) -> bool:
        """Wait until every event up to ``mark`` is handed over to the agent.

        Handed over: written into the agent's socket (where the kernel keeps
        it for the agent even if this process dies next), spilled, or
        dropped and counted. True once it is; False when it was not within
        ``handover_timeout`` (counted in ``handover_timeouts``, logged once per
        stall), or while a stall lasts (a wait ran out and nothing was
        handed over since: returns at once, counted in ``handover_skipped``),
        so an agent that is down, frozen or full never stalls the caller.
        """
        ho = self._handoff.handover
        if mark <= ho.through or ho.finished or self._thread is None:
            return True
        ho.want(mark)
        if ho.stalled:
            ho.skipped += 1
            self._wake.set()
            return False
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        if not ho.add(mark, loop, fut):
            return True
        self._wake.set()
        try:
            async with asyncio.timeout(self.handover_timeout):
                await fut
        except TimeoutError:
            self._handover_timed_out(mark)
            return False
        return True

    def _handover_timed_out(self, mark: int) -> None:
        ho = self._handoff.handover
        ho.timeouts += 1
        if ho.stalled or mark <= ho.through:
            return  # another waiter began this stall; or it ended meanwhile
        ho.stalled = True
        ho.stall_started = ho.timeouts + ho.skipped - 1
        self._log.warning(
            "audit events not handed over to the agent in time; answering anyway "
            "(a launcher killed now loses them) until the sender catches up",
            timeout_s=self.handover_timeout,
            handed_through=ho.through,
            mark=mark,
            pending=self._handoff.pending(),
            connected=self._handoff.connected.is_set(),
            session_id=self.session_id,
        )

    def _warn_closed(self) -> None:
        if not self._closed_warned:
            self._closed_warned = True
            self._log.warning("audit() called after close(); event dropped", reason="closed")

    @property
    def stats(self) -> AuditorStats:
        return snapshot(
            self._c,
            queued_now=len(self._queue),
            session_rotations=self._numbers.rotations,
            connected=self._handoff.connected.is_set(),
            disabled=self.disabled,
            handover_timeouts=self._handoff.handover.timeouts,
            handover_skipped=self._handoff.handover.skipped,
        )

    def connect_now(self, timeout: float = DEFAULT_CLOSE_TIMEOUT) -> OpenResult:
        """Connect and open the session now, before any event; wait up to ``timeout``.

        For a launcher that must claim its session before it starts the
        command it confines (our agent binds a session to the first peer
        that opens it). Returns once our agent acknowledged the open frame,
        or an agent that never acknowledges (Coder's) read it and let
        delivery.ACK_WAIT pass; at once when no trusted agent listens
        (UNREACHABLE: the session is still opened as soon as one appears);
        at the latest at ``timeout``. Never raises for delivery trouble;
        events audited meanwhile are queued as usual.
        """
        if self._thread is None:
            return OpenResult.DISABLED
        h = self._handoff
        deadline = time.monotonic() + timeout
        with h.drained:
            if self._c.open_result == OpenResult.UNREACHABLE:
                self._c.open_result = ""  # a new attempt
            h.connect_now.set()
            h.wake.set()
            while not self._c.open_result:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not self._thread.is_alive():
                    return OpenResult.UNREACHABLE
                h.drained.wait(remaining)
            return OpenResult(self._c.open_result)

    def flush(self, timeout: float | None = None) -> bool:
        """Ask the sender to send everything queued now; wait up to ``timeout``.

        Returns True when nothing is left pending. Meant for tests and for
        callers that want a checkpoint; audit() never needs it.
        """
        if self._thread is None:
            return True
        h = self._handoff
        deadline = time.monotonic() + (self.close_timeout if timeout is None else timeout)
        with h.drained:
            while h.pending():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                # (Again) on each wake-up: the sender may have cleared the
                # request on draining just before more events arrived.
                h.flush_now.set()
                h.wake.set()
                h.drained.wait(remaining)
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
        # An audit() that passed its closed check before we set it is still
        # appending: let it finish, so the seal counts its event.
        if self._lock.acquire(timeout=CLOSE_BARRIER_TIMEOUT):
            self._lock.release()
        _LIVE.discard(self)
        h = self._handoff
        h.close_timeout = self.close_timeout if timeout is None else timeout
        h.closing.set()
        h.wake.set()
        self._thread.join(h.close_timeout + CLOSE_JOIN_GRACE)
        leftover = h.pending()
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
            # The sender is still stuck (in a write the agent does not take);
            # every event not known delivered is reported as undelivered. It
            # exits at its own deadline.
            c = self._c
            c.undelivered = max(0, c.queued - c.delivered - c.dropped[DropReason.INVALID_EVENT])
            self._log.error(
                "could not deliver all audit events before the close timeout",
                undelivered=self._c.undelivered,
                session_id=self.session_id,
            )

    async def aclose(self, close_timeout: float | None = None) -> None:
        """close() for asyncio code: waits in a worker thread, not on the loop."""
        import asyncio

        await asyncio.to_thread(self.close, close_timeout)


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

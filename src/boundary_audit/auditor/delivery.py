"""What the agent has and has not got: acknowledgements, SIOCOUTQ, and what to re-send.

Pure bookkeeping (no socket, no clock: the time is passed in). A frame
written on a connection is *held* until it is known delivered:

- against an agent that acknowledges (ours, once asked in the connection's
  ``open``), when an ``Ack{frames=N}`` covers it: the agent committed it to
  its spool or refused and counted it;
- against one that never does (Coder's), when the peer has *read* it, as
  measured by ``ioctl(SIOCOUTQ)`` on our end of the Unix socket.

On a lost connection the held frames that may not have arrived are kept
(``carried``) and re-sent first on the next one: every unacknowledged frame
against an acknowledging agent, only the frames not wholly read against one
that never acknowledges, so a receiver without deduplication (coderd stores
every row it gets) gets nothing twice.

**SIOCOUTQ on a Unix stream socket** counts the kernel memory (skb
``truesize``) of what we wrote and the peer has not consumed yet, not payload
bytes: a 10-byte write shows as ~768. Each frame is one write; its charge is
estimated as the rise of the sample across its write, never below its length.
Both are *lower* bounds of the true charge (the peer may consume meanwhile,
which only lowers the rise), so the smallest suffix of frames whose estimated
charges reach the sample contains every frame not wholly read
(:func:`frames_read`): the arithmetic errs towards re-sending, never towards
losing. A sample is trusted only once the peer is seen alive *after* it: a
peer that dies frees its receive queue, and the count drops to 0 as if it had
read everything. Frames read between the last trusted sample and the death
are re-sent: that race is inherent, and it errs the same way (a duplicate,
never a loss).

Which kind of agent it is is learnt per connection: the first ``Ack`` makes
it ``ACKNOWLEDGES``; an open frame read but unacknowledged after
:data:`ACK_WAIT` makes it ``NEVER_ACKNOWLEDGES``; the belief carries over to
the next connection until an ack says otherwise.
"""

from __future__ import annotations

import collections
import enum
import itertools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from .chaining import ChainSpan

#: How long after the peer read our open frame an acknowledging agent may
#: take to acknowledge it, before it is taken for one that never does. Ours
#: acknowledges after one spool group commit: milliseconds on any disk, so
#: half a second is a wide margin, and it is what a Coder agent costs a
#: sender that must know (connect_now() at the start of a run).
ACK_WAIT = 0.5


class Kind(enum.Enum):
    OPEN = "open"
    LOGS = "logs"
    STATUS = "status"
    SEAL = "seal"


class PeerMode(enum.StrEnum):
    UNKNOWN = "unknown"
    ACKNOWLEDGES = "acknowledges"
    NEVER_ACKNOWLEDGES = "never_acknowledges"


@dataclass(slots=True, eq=False)
class Sent:
    """One frame as written (or to be written) on the socket."""

    frame: bytes
    kind: Kind
    #: Log events in the frame (0 for a status frame).
    events: int = 0
    #: Sequence number of the first event of a LOGS frame; -1 otherwise.
    first_sequence: int = -1
    #: The spill file the frame comes from; None for the session's own frames.
    origin: object | None = None
    #: Lower bound of the kernel memory (SIOCOUTQ units) the frame holds until
    #: wholly read; set when written.
    charge: int = 0
    #: The session's hash chain before and after the frame's events (LOGS
    #: frames of the session's own; None otherwise).
    chain: ChainSpan | None = None


class AckError(ValueError):
    """An Ack for more frames than were written on the connection: a broken agent."""


def unread_frames(charges_newest_first: Iterable[int], outq: int) -> int:
    """How many of the newest frames may not be wholly read while ``outq`` is charged.

    The peer reads in order, so the frames not wholly read are the newest
    ones, and their true charges add up to ``outq`` (a partly read frame
    stays charged whole). Each of ``charges`` is a lower bound of a true
    charge, so the fewest newest frames whose bounds reach ``outq`` include
    every unread frame: the count errs high (a re-sent duplicate), never low.
    """
    if outq <= 0:
        return 0
    total = count = 0
    for charge in charges_newest_first:
        count += 1
        total += charge
        if total >= outq:
            break
    return count


def frames_read(charges: Sequence[int], outq: int) -> int:
    """How many of the oldest frames (``charges`` oldest first) are wholly read."""
    return len(charges) - unread_frames(reversed(charges), outq)


class Delivery:
    """Frames held on the current connection, frames to re-send, and the peer's kind."""

    __slots__ = (
        "ack_wait",
        "acked",
        "carried",
        "held",
        "held_bytes",
        "last_outq",
        "mode",
        "open_read_at",
        "pending_sample",
        "read",
        "released",
        "window_bytes",
        "written",
    )

    def __init__(self, window_bytes: int, ack_wait: float = ACK_WAIT) -> None:
        #: Most bytes held (written, not known delivered) before writing stops.
        self.window_bytes = window_bytes
        self.ack_wait = ack_wait
        #: The belief about the agent, carried from one connection to the next.
        self.mode = PeerMode.UNKNOWN
        #: Frames from lost connections to write first on the next one, in order.
        self.carried: list[Sent] = []
        self.held: collections.deque[Sent] = collections.deque()
        self.held_bytes = 0
        self.begin()

    def begin(self) -> None:
        """A new connection: frames count from 1 again; the mode belief stays."""
        assert not self.held, "begin() with frames held: call lost() first"
        self.held_bytes = 0
        #: Frames written on this connection (an Ack counts them from 1).
        self.written = 0
        #: Frames of this connection known delivered (always a prefix).
        self.released = 0
        self.acked = 0
        #: Frames wholly read per the latest trusted SIOCOUTQ sample.
        self.read = 0
        self.last_outq = 0
        #: (outq, frames written at the time), not yet trusted.
        self.pending_sample: tuple[int, int] | None = None
        self.open_read_at: float | None = None

    # -- writing -------------------------------------------------------------

    def room(self, size: int) -> bool:
        """May a frame of ``size`` bytes be written now? Always, when nothing is held."""
        return not self.held or self.held_bytes + size <= self.window_bytes

    def make_room(self) -> list[Sent]:
        """The window is full while the agent's kind is unknown: let read frames go.

        Held for an ack that may never come, frames the agent has read count
        as delivered here, as they would if the connection were lost: so an
        agent that never acknowledges is never throttled while it is being
        recognised (the first ACK_WAIT of a sender's first connection).
        """
        if self.mode is PeerMode.UNKNOWN:
            return self._release(self.read)
        return []

    def wrote(self, sent: Sent, outq_after: int | None) -> None:
        """``sent`` was written whole; ``outq_after``: SIOCOUTQ right after (None: unavailable)."""
        size = len(sent.frame)
        self.written += 1
        if outq_after is None:
            sent.charge = size
        else:
            sent.charge = max(size, outq_after - self.last_outq)
            self.last_outq = outq_after
            self.pending_sample = (outq_after, self.written)
        self.held.append(sent)
        self.held_bytes += size

    def take_carried(self) -> list[Sent]:
        """The frames to re-send now, oldest first (they are held again once written)."""
        carried, self.carried = self.carried, []
        return carried

    # -- learning what arrived -------------------------------------------------

    def sampled(self, outq: int) -> None:
        """A SIOCOUTQ sample taken with no write since the last one."""
        self.last_outq = outq
        self.pending_sample = (outq, self.written)

    def alive(self, now: float) -> list[Sent]:
        """The peer was seen alive after the pending sample: trust it.

        Returns the frames this delivers (against an agent that never
        acknowledges), oldest first.
        """
        if self.pending_sample is None:
            return []
        outq, upto = self.pending_sample
        self.pending_sample = None
        if self.mode is PeerMode.ACKNOWLEDGES:
            return []  # acks say what arrived; reads say less
        # Frames the sample covers: the held ones written up to it.
        covered = max(0, upto - self.released)
        newest_first = itertools.islice(reversed(self.held), len(self.held) - covered, None)
        unread = unread_frames((s.charge for s in newest_first), outq)
        self.read = max(self.read, self.released + covered - unread)
        if self.read >= 1 and self.open_read_at is None:
            self.open_read_at = now
        if self.mode is PeerMode.NEVER_ACKNOWLEDGES:
            return self._release(self.read)
        return []

    def acknowledged(self, frames: int) -> list[Sent]:
        """``Ack{frames}`` arrived: the agent has frames 1..``frames`` of this connection."""
        if frames > self.written:
            raise AckError(f"ack for {frames} frames, only {self.written} written")
        self.mode = PeerMode.ACKNOWLEDGES
        self.acked = max(self.acked, frames)
        return self._release(self.acked)

    def tick(self, now: float) -> list[Sent]:
        """Decide that an agent which read our open and never acknowledged it never will."""
        if (
            self.mode is PeerMode.UNKNOWN
            and self.open_read_at is not None
            and now - self.open_read_at >= self.ack_wait
        ):
            self.mode = PeerMode.NEVER_ACKNOWLEDGES
            return self._release(self.read)
        return []

    def ack_deadline(self) -> float | None:
        """When tick() will decide, if it is waiting to."""
        if self.mode is PeerMode.UNKNOWN and self.open_read_at is not None:
            return self.open_read_at + self.ack_wait
        return None

    def _release(self, upto: int) -> list[Sent]:
        done = []
        held = self.held
        while held and self.released < upto:
            sent = held.popleft()
            self.held_bytes -= len(sent.frame)
            self.released += 1
            done.append(sent)
        return done

    # -- losing the connection ---------------------------------------------------

    def lost(self) -> tuple[list[Sent], list[Sent]]:
        """The connection is gone: keep what may not have arrived, for the next one.

        Returns ``(delivered, abandoned)``: held frames the peer read in full
        (against an agent not known to acknowledge, that is delivery), and
        held frames of spill files not known delivered (not carried: their
        file stays, to be delivered again from its start). The connection's
        own open frame is never re-sent, and the pending sample is never
        trusted (the peer may have died before it was taken).
        """
        held = list(self.held)
        if self.mode is PeerMode.ACKNOWLEDGES:
            delivered, unsure = [], held
        else:
            read = max(0, self.read - self.released)
            delivered, unsure = held[:read], held[read:]
        keep = [s for s in unsure if s.kind is not Kind.OPEN and s.origin is None]
        abandoned = [s for s in unsure if s.origin is not None]
        self.carried = keep + self.carried
        self.held.clear()
        self.begin()
        return delivered, abandoned

    # -- views ---------------------------------------------------------------------

    @property
    def settled(self) -> bool:
        """Nothing held and nothing to re-send: everything written was delivered."""
        return not self.held and not self.carried

    def open_acknowledged(self) -> bool:
        return self.acked >= 1

    def frames_in_doubt(self) -> list[Sent]:
        """The session's own frames not known delivered (held, then carried), oldest first."""
        return [s for s in self.held if s.origin is None and s.kind is not Kind.OPEN] + list(
            self.carried
        )

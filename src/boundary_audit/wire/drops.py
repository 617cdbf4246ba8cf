"""Why events were lost: one vocabulary for every stage.

Each stage counts what it drops under one of these reasons, and the
collector shows them per session. Defined once here (the bottom of the
import graph) so that sender, agent and collector never match reasons by
string literals of their own.
"""

from __future__ import annotations

import enum


class DropReason(enum.StrEnum):
    # -- at the sender (SocketAuditor) ------------------------------------
    #: The queue in front of the sender was full.
    CHANNEL_FULL = "channel_full"
    #: audit() was called after close().
    CLOSED = "closed"
    #: The event cannot be put on the wire (a sequence number outside
    #: 0..int32 max, a field that is not text): a caller bug, counted.
    INVALID_EVENT = "invalid_event"
    #: Could not be delivered before the close timeout and the spill file
    #: was at its byte bound: lost, counted in the seal.
    SPILL_FULL = "spill_full"
    #: Neither delivered nor spilled at close (e.g. the spill dir is not
    #: writable): lost, counted in the seal.
    UNDELIVERED = "undelivered"

    # -- reported by a sender in BoundaryStatus, counted by the agent -------
    #: BoundaryStatus.dropped_channel_full (Coder's name, prefixed with the
    #: source so it cannot be confused with the agent's own drops).
    BOUNDARY_CHANNEL_FULL = "boundary_channel_full"
    #: BoundaryStatus.dropped_batch_full.
    BOUNDARY_BATCH_FULL = "boundary_batch_full"

    # -- at the agent ----------------------------------------------------
    #: The spool was at its byte bound; the batch was refused.
    SPOOL_FULL = "spool_full"
    #: The collector refused the batch for good (400/413); dead-lettered.
    REJECTED = "rejected"
    #: A frame that could not be decoded (its events cannot be counted).
    BAD_FRAME = "bad_frame"
    #: A frame for a session another live peer claimed: refused, counted,
    #: never stored (a confined process forging its own trail).
    FORGED = "forged"
    #: A status frame whose counts were out of range and were clamped.
    INVALID_STATUS = "invalid_status"

    # -- at the collector -------------------------------------------------
    #: An event the collector could not store even after cutting and
    #: escaping its fields; the rest of its batch was stored.
    REJECTED_BY_COLLECTOR = "rejected_by_collector"


class DropSource(enum.StrEnum):
    """Where a :class:`~boundary_audit.wire.DropReport`'s drops happened."""

    #: Reported by the sender (BoundaryStatus) and forwarded by the agent.
    BOUNDARY = "boundary"
    #: Counted by the agent itself.
    AGENT = "agent"
    #: Counted by the collector (events it refused one by one).
    COLLECTOR = "collector"


__all__ = ["DropReason", "DropSource"]

"""The end of a session on the sender thread: the seal, and the spill of what the agent lacks.

The decisions are pure (:mod:`.closing`); this module gathers their inputs
from the thread's state and does the one piece of I/O, the spill file
(:func:`boundary_audit.wire.spill.write_spill`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..wire import DropReason, SessionSeal
from ..wire.spill import encode_spill, spill_name, spill_usage, write_spill
from .chaining import ChainMark, ChainSpan, seal_mark
from .closing import compose_seal, events_made, plan_spill
from .delivery import Kind, Sent
from .encoding import encode_records, encode_seal, encode_status

if TYPE_CHECKING:
    from .worker import SenderThread

#: How far seals may take a spill directory past its bound. The bound is for
#: event frames; a seal (~200 bytes) is still written when events no longer
#: fit, so that what was lost is accounted, up to this much more (thousands
#: of sessions' seals) so that the directory stays bounded even then.
SEAL_ALLOWANCE_BYTES = 1024 * 1024


def _seal(
    t: SenderThread,
    *,
    undelivered: int,
    spilled: int,
    extra_drops: int = 0,
    chain: ChainMark | None = None,
) -> SessionSeal:
    """The seal; ``chain`` defaults to everything written so far."""
    c = t.h.counters
    mark = t.seal_chain() if chain is None else chain
    dropped = dict(c.dropped)
    dropped[DropReason.SPILL_FULL] = dropped.get(DropReason.SPILL_FULL, 0) + extra_drops
    return compose_seal(
        events_made=events_made(t.numbers.next_number(), t.highest_encoded, c.highest_dropped),
        events_sent=c.sent,
        dropped=dropped,
        undelivered=undelivered,
        spilled=spilled,
        sealed_at_ns=t.wall_clock_ns(),
        chain_head=mark.head,
        chain_count=mark.count,
    )


def socket_seal(t: SenderThread) -> bytes:
    """The seal written on the socket once everything is drained: nothing lost so far."""
    return encode_seal(t.numbers.session_id, _seal(t, undelivered=0, spilled=0))


def finish_session(t: SenderThread) -> None:
    """Close time is up (or everything is delivered): spill what the agent does not have."""
    h, st, d, c = t.h, t.state, t.delivery, t.h.counters
    session = t.numbers.session_id
    records = list(st.batch.records)
    while h.queue:
        records.append(h.queue.popleft())
    st.batch.written(len(st.batch.records), t.clock())
    c.pending = 0
    doubt = [s for s in d.frames_in_doubt() if s.kind is not Kind.SEAL]
    candidates = [(s.frame, s.events) for s in doubt]
    # The chain of each candidate, in chain order: what the spill seal commits to.
    spans: list[ChainSpan | None] = [s.chain for s in doubt]
    encoded = encode_records(
        records, t.cfg.process_name, on_invalid=t.invalid, chain=t.chain_mark()
    )
    for enc in encoded:
        if enc.frame:
            t.encoded(enc)
            candidates.append((enc.frame, enc.events))
            spans.append(enc.chain)
    total = c.dropped[DropReason.CHANNEL_FULL]
    delta = st.status.unreported(total)
    if delta > 0:
        candidates.append((encode_status(delta, session), 0))
        spans.append(None)
        st.status.delivered(total)
    lacking = sum(events for _, events in candidates)
    c.in_flight = 0
    if not candidates and (c.sealed or _nothing_to_account(t)):
        t.log.debug("audit sender closed; everything delivered", sent=c.sent, session_id=session)
        return
    reason = "no trusted agent listening" if st.no_agent else "close timeout"
    directory, bound = t.cfg.spill_dir, t.cfg.spill_max_bytes
    if directory is None or bound <= 0:
        _undelivered(t, lacking, reason, "spilling is off")
        return
    try:
        usage = spill_usage(directory)
        plan = plan_spill(candidates, max(0, bound - usage))
        # Events left out for the bound are given up on: the seal's chain
        # ends with the last kept frame (chaining.seal_mark).
        mark = seal_mark(spans, len(plan.frames), t.chain, session)
        seal = _seal(
            t,
            undelivered=0,
            spilled=plan.spilled_events,
            extra_drops=plan.spill_full_events,
            chain=mark,
        )
        seal_frame = encode_seal(session, seal)
        if usage + plan.size + len(seal_frame) > bound + SEAL_ALLOWANCE_BYTES:
            raise OSError(f"spill directory full ({usage} bytes, bound {bound})")
        name = spill_name(session, t.wall_clock_ns())
        path = write_spill(directory, name, encode_spill([*plan.frames, seal_frame]))
    except OSError as exc:
        c.spill_errors += 1
        _undelivered(t, lacking, reason, f"cannot write the spill file: {exc}")
        return
    t.chain = mark
    c.spilled = plan.spilled_events
    c.dropped[DropReason.SPILL_FULL] += plan.spill_full_events
    c.undelivered = 0
    # Spilled is not lost (a warning); spill_full is (an error).
    log = t.log.error if plan.spill_full_events else t.log.warning
    log(
        "closing before the agent had everything; spilled to disk for later delivery"
        if lacking
        else "closing before the agent confirmed the seal; seal spilled to disk",
        spilled=plan.spilled_events,
        dropped_spill_full=plan.spill_full_events,
        spill=str(path),
        reason=reason,
        last_error=st.retry.last_error,
        session_id=session,
    )


def _nothing_to_account(t: SenderThread) -> bool:
    """An empty session: no number used, nothing dropped; no seal is worth a file."""
    c = t.h.counters
    made = events_made(t.numbers.next_number(), t.highest_encoded, c.highest_dropped)
    return made == 0 and not any(c.dropped.values())


def _undelivered(t: SenderThread, lacking: int, reason: str, why: str) -> None:
    """No spill: the events are lost and counted, and a seal on the socket says so if it fits."""
    c = t.h.counters
    c.undelivered = lacking
    conn = t.link.conn
    if conn is not None:
        frame = encode_seal(t.numbers.session_id, _seal(t, undelivered=lacking, spilled=0))
        t.link.put(conn, Sent(frame, Kind.SEAL))
    t.log.error(
        "closing with audit events not delivered to the agent",
        undelivered=lacking,
        reason=reason,
        spill=why,
        last_error=t.state.retry.last_error,
        session_id=t.numbers.session_id,
    )

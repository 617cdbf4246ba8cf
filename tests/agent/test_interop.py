"""Interop with the real boundary-side sender (SocketAuditor)."""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import Callable

import pytest

from boundary_audit.agent import Agent
from boundary_audit.auditor import AuditEvent, SocketAuditor
from tests.support import EVENTUALLY_TIMEOUT_S, aeventually, eventually
from tests.support.doubles import CollectorDouble
from tests.support.services import AgentProcess

from .helpers import ConfigFactory, metric

pytestmark = pytest.mark.timeout(120)

#: Events of the SIGKILL test's stream.
STREAM_EVENTS = 20_000
#: The producer holds here until the agent is stopped (SIGSTOP), so the kill
#: lands mid-stream...
HOLD_AT_EVENTS = STREAM_EVENTS // 2
#: ...and it is killed once this many events went into its socket buffer
#: while it was stopped: in flight, read by nobody.
IN_FLIGHT_EVENTS = 200
#: Events the collector must have before the agent is stopped and killed.
FLOWING_EVENTS = 2000
#: The producer never runs further than this ahead of what the sender wrote
#: (half the sender's default queue), as a proxy whose requests wait on
#: their audit would: the queue never overflows.
MAX_LAG_EVENTS = 4096
#: How often (in events) the producer checks the lag.
LAG_CHECK_EVERY = 200


def event(i: int) -> AuditEvent:
    allowed = i % 3 != 0
    return AuditEvent(
        "GET",
        f"https://pkg.example.test/{i}",
        "pkg.example.test",
        allowed,
        "domain=pkg.example.test" if allowed else None,
    )


async def test_socket_auditor_events_arrive_exactly_once_in_order(
    agent: Agent, collector_double: CollectorDouble
) -> None:
    session = str(uuid.uuid4())
    auditor = SocketAuditor(agent.socket_path, session_id=session, confined_process_name="codex")
    for i in range(3000):
        auditor.audit(event(i))
    await asyncio.to_thread(auditor.close, 20)
    await aeventually(lambda: collector_double.event_count() == 3000)
    assert collector_double.order(session) == list(range(3000))
    stored = collector_double.state.events[(session, 1)]
    assert stored.allowed
    assert stored.matched_rule == "domain=pkg.example.test"
    assert collector_double.state.events[(session, 0)].matched_rule == ""
    assert metric(agent, "boundary_audit_agent_frames_received_total", tag="2") >= 1
    assert metric(agent, "boundary_audit_agent_frames_received_total", tag="1") == 0
    assert metric(agent, "boundary_audit_agent_dropped_frames_total", reason="bad_frame") == 0


async def test_socket_auditor_drops_reach_the_collector_attributed(
    make_config: ConfigFactory, collector_double: CollectorDouble
) -> None:
    config = make_config()
    session = str(uuid.uuid4())
    # No agent yet: the sender's small queue fills and it drops (and counts).
    auditor = SocketAuditor(
        config.socket_path, session_id=session, queue_size=50, batch_interval=0.05
    )
    for i in range(500):
        auditor.audit(event(i))
    dropped = auditor.stats.dropped.get("channel_full", 0)
    assert dropped > 0
    async with Agent(config) as agent:
        await asyncio.to_thread(auditor.close, 20)
        await aeventually(
            lambda: (
                collector_double.drop_totals().get(("boundary", session, "boundary_channel_full"))
                == dropped
            )
        )
        await aeventually(lambda: collector_double.event_count() == 500 - dropped)
        assert (
            metric(
                agent, "boundary_audit_agent_dropped_events_total", reason="boundary_channel_full"
            )
            == dropped
        )


def test_socket_auditor_and_agent_sigkill_lose_nothing(
    agent_process: AgentProcess, collector_double: CollectorDouble
) -> None:
    """The zero-loss claim end to end: the agent dies with frames in socket
    buffers and uncommitted memory; the sender's replay window re-sends them
    and the collector's dedupe absorbs the overlap."""
    proc = agent_process
    proc.start()
    session = str(uuid.uuid4())
    auditor = SocketAuditor(proc.socket_path, session_id=session, batch_interval=0.05)
    total = STREAM_EVENTS
    done = threading.Event()
    release = threading.Event()

    def sent_at_least(n: int) -> Callable[[], bool]:
        return lambda: auditor.stats.sent >= n

    def produce() -> None:
        for i in range(total):
            if i == HOLD_AT_EVENTS:
                release.wait()
            auditor.audit(event(i))
            if i % LAG_CHECK_EVERY == 0:
                eventually(
                    sent_at_least(i - MAX_LAG_EVENTS),
                    "the sender to keep up",
                    within=2 * EVENTUALLY_TIMEOUT_S,
                )
        done.set()

    producer = threading.Thread(target=produce, daemon=True)
    try:
        producer.start()
        eventually(
            lambda: collector_double.event_count() >= FLOWING_EVENTS, "the stream to be flowing"
        )
        proc.pause()
        in_flight_from = auditor.stats.sent
        release.set()
        eventually(
            sent_at_least(in_flight_from + IN_FLIGHT_EVENTS),
            "events written to the stopped agent's socket",
        )
        proc.kill()
        eventually(lambda: not auditor.stats.connected, "the sender to notice the dead agent")
        proc.start()
        eventually(done.is_set, "the producer to finish")
        auditor.close(30)
        stats = auditor.stats
        assert stats.replayed_events > 0  # the kill really cut a live stream
        dropped = stats.dropped.get("channel_full", 0)
        assert stats.dropped_total == dropped
        # Every event is either at the collector exactly once, or counted as
        # lost (the sender's queue overflowed while the agent restarted) and
        # that count reached the collector, attributed to the session.
        eventually(lambda: collector_double.event_count() == total - dropped, "every sent event")
        assert (
            len(collector_double.keys() & {(session, s) for s in range(total)}) == total - dropped
        )
        if dropped:
            eventually(
                lambda: (
                    collector_double.drop_totals().get(
                        ("boundary", session, "boundary_channel_full")
                    )
                    == dropped
                ),
                "the drop report",
            )
        assert proc.stop() == 0
    finally:
        release.set()
        proc.ensure_stopped()

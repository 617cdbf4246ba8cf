"""Interop with the real boundary-side sender (SocketAuditor)."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from pathlib import Path

import pytest

from boundary_audit.agent import Agent
from boundary_audit.auditor import AuditEvent, SocketAuditor

from .collector_double import CollectorDouble
from .conftest import ConfigFactory, eventually, metric
from .test_process import AgentProcess, wait_for

pytestmark = pytest.mark.timeout(120)


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
    agent: Agent, collector: CollectorDouble
) -> None:
    session = str(uuid.uuid4())
    auditor = SocketAuditor(agent.socket_path, session_id=session, confined_process_name="codex")
    for i in range(3000):
        auditor.audit(event(i))
    await asyncio.to_thread(auditor.close, 20)
    await eventually(lambda: collector.event_count() == 3000)
    assert collector.order(session) == list(range(3000))
    stored = collector.state.events[(session, 1)]
    assert stored.allowed
    assert stored.http_request.matched_rule == "domain=pkg.example.test"
    assert collector.state.events[(session, 0)].http_request.matched_rule == ""
    assert metric(agent, "boundary_audit_agent_frames_received_total", tag="2") >= 1
    assert metric(agent, "boundary_audit_agent_frames_received_total", tag="1") == 0
    assert metric(agent, "boundary_audit_agent_dropped_frames_total", reason="bad_frame") == 0


async def test_socket_auditor_drops_reach_the_collector_attributed(
    make_config: ConfigFactory, collector: CollectorDouble
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
        await eventually(
            lambda: (
                collector.drop_totals().get(("boundary", session, "boundary_channel_full"))
                == dropped
            )
        )
        await eventually(lambda: collector.event_count() == 500 - dropped)
        assert (
            metric(
                agent, "boundary_audit_agent_dropped_events_total", reason="boundary_channel_full"
            )
            == dropped
        )


def test_socket_auditor_and_agent_sigkill_lose_nothing(
    short_dir: Path, collector: CollectorDouble
) -> None:
    """The zero-loss claim end to end: the agent dies with frames in socket
    buffers and uncommitted memory; the sender's replay window re-sends them
    and the collector's dedupe absorbs the overlap."""
    proc = AgentProcess(short_dir, collector)
    proc.start()
    session = str(uuid.uuid4())
    auditor = SocketAuditor(proc.socket_path, session_id=session, batch_interval=0.05)
    total = 20_000
    done = threading.Event()

    def produce() -> None:
        for i in range(total):
            auditor.audit(event(i))
            if i % 200 == 0:
                time.sleep(0.005)  # a busy proxy, ~40k requests/s at most
        done.set()

    producer = threading.Thread(target=produce, daemon=True)
    try:
        producer.start()
        wait_for(lambda: collector.event_count() >= 2000, "the stream to be flowing")
        proc.kill()
        time.sleep(0.3)
        proc.start()
        wait_for(done.is_set, "the producer to finish")
        auditor.close(30)
        stats = auditor.stats
        assert stats.replayed_events > 0  # the kill really cut a live stream
        dropped = stats.dropped.get("channel_full", 0)
        assert stats.dropped_total == dropped
        # Every event is either at the collector exactly once, or counted as
        # lost (the sender's queue overflowed while the agent restarted) and
        # that count reached the collector, attributed to the session.
        wait_for(lambda: collector.event_count() == total - dropped, "every sent event")
        assert len(collector.keys() & {(session, s) for s in range(total)}) == total - dropped
        if dropped:
            wait_for(
                lambda: (
                    collector.drop_totals().get(("boundary", session, "boundary_channel_full"))
                    == dropped
                ),
                "the drop report",
            )
        assert proc.terminate() == 0
    finally:
        proc.ensure_stopped()

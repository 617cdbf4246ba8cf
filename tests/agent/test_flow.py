"""End to end inside one process: real Unix socket, real spool file, real
HTTP to the collector double."""

from __future__ import annotations

import asyncio
import io
import json
import os
import stat
from typing import Any

import httpx
import pytest

from boundary_audit.agent import Agent
from boundary_audit.agent.config import DROP_REPORT_HEADROOM_BYTES
from boundary_audit.collector.model import DropIn
from boundary_audit.logs import configure_logging
from tests.support import aeventually
from tests.support.doubles import CollectorDouble

from .helpers import (
    ConfigFactory,
    connect,
    logs_frame,
    metric,
    new_session,
    send,
    status_frame,
    v1_frame,
)

pytestmark = pytest.mark.timeout(60)

#: Concurrency for the fan-in test: more senders than cores, each with
#: enough batches that commits group frames from several connections.
SENDERS = 8
BATCHES_PER_SENDER = 150
EVENTS_PER_BATCH = 10


async def test_many_concurrent_senders_arrive_complete_in_order_exactly_once(
    agent: Agent, collector_double: CollectorDouble
) -> None:
    sessions = [new_session() for _ in range(SENDERS)]

    async def sender(session: str) -> None:
        _, writer = await connect(agent.socket_path)
        for i in range(BATCHES_PER_SENDER):
            writer.write(logs_frame(session, i * EVENTS_PER_BATCH, EVENTS_PER_BATCH))
            if i % 10 == 0:
                await writer.drain()
        await writer.drain()
        writer.close()
        await writer.wait_closed()

    await asyncio.gather(*(sender(s) for s in sessions))
    total = SENDERS * BATCHES_PER_SENDER * EVENTS_PER_BATCH
    await aeventually(lambda: collector_double.event_count() == total)
    for session in sessions:
        # First-time stores per session happen in sequence order.
        assert collector_double.order(session) == list(range(BATCHES_PER_SENDER * EVENTS_PER_BATCH))
    assert collector_double.state.duplicates == 0
    assert metric(agent, "boundary_audit_agent_events_received_total") == total
    # The collector stores before the agent has read its answer: wait for that.
    await aeventually(lambda: metric(agent, "boundary_audit_agent_events_forwarded_total") == total)
    assert metric(agent, "boundary_audit_agent_connections_total") == SENDERS
    # Group commit: far fewer transactions than frames.
    commits = metric(agent, "boundary_audit_agent_spool_commits_total")
    assert 0 < commits < SENDERS * BATCHES_PER_SENDER
    await aeventually(lambda: agent.spool_stats().batches == 0)


async def test_tag1_frames_are_accepted_like_tag2(
    agent: Agent, collector_double: CollectorDouble
) -> None:
    session = new_session()
    await send(agent.socket_path, v1_frame(session, 0, 5), logs_frame(session, 5, 5))
    await aeventually(lambda: collector_double.event_count() == 10)
    assert collector_double.order(session) == list(range(10))
    assert metric(agent, "boundary_audit_agent_frames_received_total", tag="1") == 1
    assert metric(agent, "boundary_audit_agent_frames_received_total", tag="2") == 1


async def test_collector_down_then_up_delivers_everything_exactly_once(
    make_config: ConfigFactory, collector_double: CollectorDouble
) -> None:
    collector_double.stop()
    session = new_session()
    async with Agent(make_config()) as agent:
        await send(agent.socket_path, *(logs_frame(session, i * 10, 10) for i in range(50)))
        await aeventually(lambda: agent.spool_stats().events == 500)
        # Several attempts fail while it is down; nothing leaves the spool.
        await aeventually(
            lambda: (
                metric(agent, "boundary_audit_agent_forward_requests_total", outcome="ConnectError")
                >= 2
            )
        )
        assert agent.spool_stats().events == 500
        collector_double.start()
        await aeventually(lambda: collector_double.event_count() == 500)
        await aeventually(lambda: agent.spool_stats().batches == 0)
    assert collector_double.order(session) == list(range(500))
    assert collector_double.state.duplicates == 0


async def test_retry_after_is_honoured(agent: Agent, collector_double: CollectorDouble) -> None:
    collector_double.fail_next(503, retry_after="1")
    await send(agent.socket_path, logs_frame(new_session(), 0, 3))
    await aeventually(lambda: collector_double.event_count() == 3)
    first, second = collector_double.requests()[:2]
    assert first.status == 503
    assert second.status == 200
    # A lower bound only: the agent waited at least what it was told.
    assert second.time - first.time >= 1.0


async def test_429_and_5xx_are_retried_until_acknowledged(
    agent: Agent, collector_double: CollectorDouble
) -> None:
    collector_double.fail_next(429, retry_after="0")
    collector_double.fail_next(500, times=2)
    collector_double.fail_next(502)
    session = new_session()
    await send(agent.socket_path, logs_frame(session, 0, 4))
    await aeventually(lambda: collector_double.event_count() == 4)
    assert collector_double.statuses() == [429, 500, 500, 502, 200]
    assert metric(agent, "boundary_audit_agent_forward_requests_total", outcome="500") == 2


async def test_unauthorized_keeps_the_batch_and_logs_once_per_state_change(
    make_config: ConfigFactory, collector_double: CollectorDouble
) -> None:
    stream = io.StringIO()
    configure_logging("info", "json", stream=stream)
    try:
        config = make_config()
        real_token = collector_double.state.token
        collector_double.state.token = "ba_other"  # the agent's token is now refused
        async with Agent(config) as agent:
            await send(agent.socket_path, logs_frame(new_session(), 0, 2))
            await aeventually(lambda: collector_double.statuses().count(401) >= 4)
            assert agent.spool_stats().events == 2
            collector_double.state.token = real_token
            await aeventually(lambda: collector_double.event_count() == 2)
    finally:
        configure_logging()
    # Only structlog's lines are JSON; stdlib loggers (httpx) share the stream.
    lines = [json.loads(x) for x in stream.getvalue().splitlines() if x.startswith("{")]
    failures = [
        line for line in lines if line["event"].startswith("forwarding to the collector failed")
    ]
    assert len(failures) == 1
    assert failures[0]["state"] == "unauthorized"
    assert any(line["event"] == "forwarding resumed" for line in lines)


async def test_a_frame_the_collector_would_refuse_is_refused_alone_by_the_agent(
    agent: Agent, collector_double: CollectorDouble
) -> None:
    good = new_session()
    frames = [logs_frame(good, i * 10, 10) for i in range(6)]
    frames.insert(3, logs_frame("not-a-uuid", 0, 7))
    await send(agent.socket_path, *frames)
    await aeventually(lambda: collector_double.event_count() == 60)
    assert collector_double.order(good) == list(range(60))
    assert 400 not in collector_double.statuses()  # never reached the collector
    assert metric(agent, "boundary_audit_agent_dropped_frames_total", reason="bad_frame") == 1
    dead = agent.config.dead_letter_path
    await aeventually(lambda: dead.exists() and dead.read_text().endswith("\n"))
    lines = [json.loads(line) for line in dead.read_text().splitlines()]
    assert [(x["kind"], x["session_id"]) for x in lines] == [("refused_frame", "not-a-uuid")]
    assert "not a UUID" in lines[0]["detail"]
    await aeventually(lambda: agent.spool_stats().batches == 0)


async def test_a_collector_400_is_dead_lettered_and_the_batches_behind_it_go_on(
    agent: Agent, collector_double: CollectorDouble
) -> None:
    session = new_session()
    collector_double.fail_next(400)
    await send(agent.socket_path, logs_frame(session, 0, 5))
    await aeventually(
        lambda: metric(agent, "boundary_audit_agent_dropped_events_total", reason="rejected") == 5
    )
    await send(agent.socket_path, logs_frame(session, 5, 5))
    await aeventually(lambda: collector_double.order(session) == list(range(5, 10)))
    lines = [json.loads(x) for x in agent.config.dead_letter_path.read_text().splitlines()]
    assert [(x["kind"], x["events"], x["status"]) for x in lines] == [("batch", 5, 400)]


async def test_too_large_requests_are_split(
    make_config: ConfigFactory, collector_double: CollectorDouble
) -> None:
    session = new_session()
    async with Agent(make_config()) as agent:
        collector_double.stop()  # let a large backlog build up
        await send(agent.socket_path, *(logs_frame(session, i * 10, 10) for i in range(40)))
        await aeventually(lambda: agent.spool_stats().events == 400)
        collector_double.state.body_limit = agent.spool_stats().bytes // 3
        collector_double.start()
        await aeventually(lambda: collector_double.event_count() == 400)
    assert 413 in collector_double.statuses()
    assert collector_double.order(session) == list(range(400))


async def test_status_becomes_metrics_and_attributed_drop_reports(
    agent: Agent, collector_double: CollectorDouble
) -> None:
    session = new_session()
    # Status before any logs on its connection cannot be attributed.
    await send(agent.socket_path, status_frame(channel_full=2))
    await send(
        agent.socket_path,
        logs_frame(session, 0, 10),
        status_frame(channel_full=5, batch_full=3),
        status_frame(channel_full=1),
    )
    await aeventually(
        lambda: (
            collector_double.drop_totals()
            == {
                ("boundary", "", "boundary_channel_full"): 2,
                ("boundary", session, "boundary_channel_full"): 6,
                ("boundary", session, "boundary_batch_full"): 3,
            }
        )
    )
    assert (
        metric(agent, "boundary_audit_agent_dropped_events_total", reason="boundary_channel_full")
        == 8
    )
    assert (
        metric(agent, "boundary_audit_agent_dropped_events_total", reason="boundary_batch_full")
        == 3
    )
    assert all(isinstance(d, DropIn) and d.report_id for d in collector_double.drops())


async def test_spool_bound_refuses_counts_and_reports_spool_full(
    make_config: ConfigFactory, collector_double: CollectorDouble
) -> None:
    collector_double.stop()
    one = len(logs_frame(new_session(), 0, 10)) - 4
    session = new_session()
    # Room for 10 batches (their payloads), then refusals.
    async with Agent(make_config(spool_max_bytes=one * 10 + one // 2)) as agent:
        await send(agent.socket_path, *(logs_frame(session, i * 10, 10) for i in range(25)))
        await aeventually(
            lambda: (
                metric(agent, "boundary_audit_agent_dropped_events_total", reason="spool_full")
                == 150
            )
        )
        assert agent.spool_stats().events == 100
        assert (
            agent.spool_stats().bytes <= agent.config.spool_max_bytes + DROP_REPORT_HEADROOM_BYTES
        )
        alive, details = agent.health()
        assert alive  # a restart would not help: still alive, but degraded
        assert details["status"] == "degraded"
        assert details["spool_full"] is True
        collector_double.start()
        await aeventually(lambda: collector_double.event_count() == 100)
        await aeventually(
            lambda: collector_double.drop_totals().get(("agent", session, "spool_full")) == 150
        )
        # Room again: new batches are accepted.
        await send(agent.socket_path, logs_frame(session, 1000, 10))
        await aeventually(lambda: collector_double.event_count() == 110)
        await aeventually(lambda: agent.health()[1]["status"] == "ok")
    assert collector_double.keys() == {(session, s) for s in [*range(100), *range(1000, 1010)]}


async def test_metrics_and_health_endpoints(
    make_config: ConfigFactory, collector_double: CollectorDouble
) -> None:
    async with Agent(make_config(metrics_listen=("127.0.0.1", 0))) as agent:
        await send(agent.socket_path, logs_frame(new_session(), 0, 3))
        await aeventually(lambda: collector_double.event_count() == 3)
        address = agent.metrics_address
        assert address is not None
        base = f"http://{address[0]}:{address[1]}"
        async with httpx.AsyncClient(base_url=base) as client:
            metrics = await client.get("/metrics")
            assert metrics.status_code == 200
            text = metrics.text
            for name in (
                "boundary_audit_agent_connections_current",
                "boundary_audit_agent_connections_total 1.0",
                "boundary_audit_agent_events_received_total 3.0",
                'boundary_audit_agent_dropped_events_total{reason="spool_full"} 0.0',
                "boundary_audit_agent_forward_latency_seconds_bucket",
                "boundary_audit_agent_spool_bytes",
                "boundary_audit_agent_last_forward_success_timestamp_seconds",
            ):
                assert name in text, name
            health = await client.get("/healthz")
            assert health.status_code == 200
            assert health.json()["status"] == "ok"
            assert (await client.get("/nope")).status_code == 404
            assert (await client.post("/metrics")).status_code == 405


async def test_socket_is_created_0660_and_removed_on_stop(
    make_config: ConfigFactory,
) -> None:
    config = make_config()
    async with Agent(config):
        mode = os.stat(config.socket_path).st_mode
        assert stat.S_ISSOCK(mode)
        assert stat.S_IMODE(mode) == 0o660
    assert not config.socket_path.exists()


async def test_socket_mode_is_configurable(make_config: ConfigFactory) -> None:
    config = make_config(socket_mode=0o600)
    async with Agent(config):
        assert stat.S_IMODE(os.stat(config.socket_path).st_mode) == 0o600


async def test_stop_drains_what_was_sent_and_flushes(
    make_config: ConfigFactory, collector_double: CollectorDouble
) -> None:
    session = new_session()
    agent = Agent(make_config())
    await agent.start()
    _, writer = await connect(agent.socket_path)
    writer.write(b"".join(logs_frame(session, i * 10, 10) for i in range(30)))
    await writer.drain()
    report = await agent.stop()  # the connection is still open
    assert report.flushed
    assert report.remaining.batches == 0
    assert collector_double.order(session) == list(range(300))
    writer.close()


async def test_stop_with_collector_down_leaves_the_rest_for_next_start(
    make_config: ConfigFactory, collector_double: CollectorDouble
) -> None:
    collector_double.stop()
    session = new_session()
    config = make_config(flush_timeout=0.3)
    async with Agent(config) as agent:
        await send(agent.socket_path, *(logs_frame(session, i * 10, 10) for i in range(5)))
        await aeventually(lambda: agent.spool_stats().events == 50)
    report = await agent.stop()  # idempotent: returns the same report
    assert not report.flushed
    assert report.remaining.events == 50
    collector_double.start()
    async with Agent(config) as again:
        await aeventually(lambda: collector_double.event_count() == 50)
        await aeventually(lambda: again.spool_stats().batches == 0)
    assert collector_double.order(session) == list(range(50))


async def test_unwritable_dead_letter_file_keeps_the_batch_spooled(
    make_config: ConfigFactory, collector_double: CollectorDouble
) -> None:
    config = make_config()
    config.dead_letter_path.parent.mkdir(parents=True)
    config.dead_letter_path.mkdir()  # a directory where the file should go
    session = new_session()
    async with Agent(config) as agent:
        collector_double.fail_next(400, times=1000)  # until it is dead-lettered
        await send(agent.socket_path, logs_frame(session, 0, 4))
        await aeventually(
            lambda: metric(agent, "boundary_audit_agent_errors_total", where="forward_spool") >= 2
        )
        assert agent.spool_stats().events == 4  # not lost, not dead-lettered
        config.dead_letter_path.rmdir()
        await aeventually(lambda: agent.spool_stats().batches == 0)
    assert session in config.dead_letter_path.read_text()


async def test_failed_commit_keeps_batches_and_retries(
    agent: Agent, collector_double: CollectorDouble, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Fault injection on the spool (a full disk cannot be staged portably)."""
    import sqlite3

    from boundary_audit.agent import Spool

    real_append = Spool.append
    failures = [sqlite3.OperationalError("database or disk is full")]

    def flaky_append(self: Spool, batches: Any) -> Any:
        if failures:
            raise failures.pop()
        return real_append(self, batches)

    monkeypatch.setattr(Spool, "append", flaky_append)
    session = new_session()
    await send(agent.socket_path, *(logs_frame(session, i * 10, 10) for i in range(5)))
    await aeventually(lambda: collector_double.event_count() == 50)
    assert collector_double.order(session) == list(range(50))
    assert metric(agent, "boundary_audit_agent_errors_total", where="spool_append") == 1

"""Each kind of bad input is contained to its own connection."""

from __future__ import annotations

import json
import logging
import os
import socket
import struct
from pathlib import Path

import pytest

from boundary_audit.agent import Agent, SocketInUseError
from boundary_audit.agent.deadletter import REFUSED_FRAMES_PER_PEER
from boundary_audit.agent.frames import MAX_STATUS_DROP_COUNT
from boundary_audit.wire import MAX_PAYLOAD_SIZE, Tag, encode_frame
from tests.support import aeventually
from tests.support.doubles import CollectorDouble

from .helpers import (
    ConfigFactory,
    closed_by_peer,
    connect,
    logs_frame,
    metric,
    new_session,
    send,
    status_frame,
)

pytestmark = pytest.mark.timeout(60)

#: The largest value of a protobuf int64 field.
INT64_MAX = (1 << 63) - 1


def raw_header(tag: int, length: int) -> bytes:
    """A header the wire module would refuse to build (that is the point)."""
    return struct.pack(">I", (tag << 24) | length)


async def assert_others_unaffected(
    agent: Agent, collector_double: CollectorDouble, start: int
) -> None:
    session = new_session()
    await send(agent.socket_path, logs_frame(session, 0, 5))
    await aeventually(lambda: collector_double.event_count() == start + 5, "a good sender's events")


async def test_oversize_length_closes_only_that_connection(
    agent: Agent, collector_double: CollectorDouble
) -> None:
    good_session = new_session()
    _, good = await connect(agent.socket_path)
    good.write(logs_frame(good_session, 0, 5))
    await good.drain()
    bad_reader, bad = await connect(agent.socket_path)
    bad.write(raw_header(Tag.V2_ENVELOPE, MAX_PAYLOAD_SIZE + 1))
    await bad.drain()
    assert await closed_by_peer(bad_reader)
    # The well-behaved connection keeps working after the other was closed.
    good.write(logs_frame(good_session, 5, 5))
    await good.drain()
    await aeventually(lambda: collector_double.event_count() == 10)
    await aeventually(
        lambda: (
            metric(agent, "boundary_audit_agent_connections_closed_total", reason="protocol_error")
            == 1
        )
    )
    good.close()


async def test_unknown_tag_closes_the_connection(
    agent: Agent, collector_double: CollectorDouble
) -> None:
    reader, writer = await connect(agent.socket_path)
    writer.write(raw_header(7, 3) + b"abc")
    await writer.drain()
    assert await closed_by_peer(reader)
    assert metric(agent, "boundary_audit_agent_dropped_frames_total", reason="bad_frame") == 1
    await assert_others_unaffected(agent, collector_double, 0)


async def test_a_connection_cut_off_for_a_bad_header_says_so_when_it_closes(
    agent: Agent, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="boundary_audit")
    reader, writer = await connect(agent.socket_path)
    writer.write(raw_header(Tag.V2_ENVELOPE, MAX_PAYLOAD_SIZE + 1))
    await writer.drain()
    assert await closed_by_peer(reader)

    def closing_line() -> dict[str, object] | None:
        for record in caplog.records:
            fields = record.msg
            if isinstance(fields, dict) and fields.get("event") == "sender disconnected":
                return fields
        return None

    await aeventually(lambda: closing_line() is not None)
    line = closing_line()
    assert line is not None
    # The metric counted the bad frame; the connection's own line agrees.
    assert (line["reason"], line["bad_frames"]) == ("protocol_error", 1)
    writer.close()


async def test_undecodable_payload_is_skipped_and_reading_goes_on(
    agent: Agent, collector_double: CollectorDouble
) -> None:
    session = new_session()
    garbage = encode_frame(Tag.V2_ENVELOPE, b"\xff\xff\xff\xff")
    await send(
        agent.socket_path,
        logs_frame(session, 0, 5),
        garbage,
        garbage,
        logs_frame(session, 5, 5),
    )
    await aeventually(lambda: collector_double.event_count() == 10)
    assert collector_double.order(session) == list(range(10))
    assert metric(agent, "boundary_audit_agent_dropped_frames_total", reason="bad_frame") == 2


async def test_empty_envelope_is_counted_as_bad_frame(
    agent: Agent, collector_double: CollectorDouble
) -> None:
    await send(agent.socket_path, encode_frame(Tag.V2_ENVELOPE, b""))
    await aeventually(
        lambda: metric(agent, "boundary_audit_agent_dropped_frames_total", reason="bad_frame") == 1
    )
    await assert_others_unaffected(agent, collector_double, 0)


async def test_stalled_partial_frame_is_closed_after_idle_timeout(
    make_config: ConfigFactory, collector_double: CollectorDouble
) -> None:
    async with Agent(make_config(idle_timeout=0.3)) as agent:
        # An idle connection with no partial frame is left alone...
        idle_reader, idle = await connect(agent.socket_path)
        stalled_reader, stalled = await connect(agent.socket_path)
        frame = logs_frame(new_session(), 0, 5)
        stalled.write(frame[: len(frame) // 2])
        await stalled.drain()
        assert await closed_by_peer(stalled_reader)
        assert (
            metric(agent, "boundary_audit_agent_connections_closed_total", reason="idle_timeout")
            == 1
        )
        # ...and still works afterwards.
        session = new_session()
        idle.write(logs_frame(session, 0, 3))
        await idle.drain()
        await aeventually(lambda: collector_double.event_count() == 3)
        assert not idle_reader.at_eof()
        idle.close()


async def test_trickled_partial_frame_cannot_reset_the_idle_timeout(
    make_config: ConfigFactory, collector_double: CollectorDouble
) -> None:
    """Slow loris: a byte every third of the timeout still gets the frame closed."""
    idle_timeout = 0.3
    async with Agent(make_config(idle_timeout=idle_timeout)) as agent:
        reader, writer = await connect(agent.socket_path)
        frame = logs_frame(new_session(), 0, 5)
        sent = 0
        while sent < len(frame) - 1:
            try:
                writer.write(frame[sent : sent + 1])
                await writer.drain()
            except ConnectionError:
                break  # the agent already closed it
            sent += 1
            # The pace of the trickle: a third of the timeout between bytes,
            # so each byte alone would keep a resetting clock from firing.
            if await closed_by_peer(reader, within=idle_timeout / 3):
                break
        assert await closed_by_peer(reader)
        # Closed well before the frame could have been finished this way.
        assert sent < len(frame) // 2
        assert (
            metric(agent, "boundary_audit_agent_connections_closed_total", reason="idle_timeout")
            == 1
        )
        await assert_others_unaffected(agent, collector_double, 0)


async def test_truncated_frame_at_close_is_counted(
    agent: Agent, collector_double: CollectorDouble
) -> None:
    frame = logs_frame(new_session(), 0, 5)
    await send(agent.socket_path, frame[:-3])
    await aeventually(
        lambda: (
            metric(agent, "boundary_audit_agent_connections_closed_total", reason="truncated") == 1
        )
    )
    assert metric(agent, "boundary_audit_agent_dropped_frames_total", reason="bad_frame") == 1


async def test_connection_flood_is_capped(
    make_config: ConfigFactory, collector_double: CollectorDouble
) -> None:
    async with Agent(make_config(max_connections=3)) as agent:
        held = [await connect(agent.socket_path) for _ in range(3)]
        await aeventually(lambda: metric(agent, "boundary_audit_agent_connections_current") == 3)
        extra = [await connect(agent.socket_path) for _ in range(5)]
        for reader, _ in extra:
            assert await closed_by_peer(reader)
        assert (
            metric(agent, "boundary_audit_agent_connections_rejected_total", reason="too_many") == 5
        )
        # The held connections are unaffected and deliver.
        session = new_session()
        for i, (_, writer) in enumerate(held):
            writer.write(logs_frame(session, i * 10, 10))
            await writer.drain()
        await aeventually(lambda: collector_double.event_count() == 30)
        for _, writer in held:
            writer.close()
        # Once they are gone, new connections are accepted again.
        await aeventually(lambda: metric(agent, "boundary_audit_agent_connections_current") == 0)
        await send(agent.socket_path, logs_frame(session, 100, 1))
        await aeventually(lambda: collector_double.event_count() == 31)


async def test_uid_outside_the_allowed_set_is_refused(
    make_config: ConfigFactory, collector_double: CollectorDouble
) -> None:
    async with Agent(make_config(allowed_uids=frozenset({os.getuid() + 12345}))) as agent:
        reader, writer = await connect(agent.socket_path)
        writer.write(logs_frame(new_session(), 0, 5))
        assert await closed_by_peer(reader)
        assert (
            metric(
                agent, "boundary_audit_agent_connections_rejected_total", reason="uid_not_allowed"
            )
            == 1
        )
    async with Agent(make_config(allowed_uids=frozenset({os.getuid()}))) as agent:
        await send(agent.socket_path, logs_frame(new_session(), 0, 5))
        await aeventually(lambda: collector_double.event_count() == 5)


async def test_negative_status_counts_are_clamped_to_zero(
    agent: Agent, collector_double: CollectorDouble
) -> None:
    await send(agent.socket_path, logs_frame(new_session(), 0, 1), status_frame(channel_full=-4))
    await aeventually(
        lambda: (
            metric(agent, "boundary_audit_agent_dropped_frames_total", reason="invalid_status") == 1
        )
    )
    assert (
        metric(agent, "boundary_audit_agent_dropped_events_total", reason="boundary_channel_full")
        == 0
    )


async def test_status_counts_summing_past_int64_are_clamped_not_fatal(
    agent: Agent, collector_double: CollectorDouble
) -> None:
    """Two statuses of int64 max each: the agent keeps running, the report is capped."""
    session = new_session()
    huge = status_frame(channel_full=INT64_MAX, batch_full=INT64_MAX)
    await send(agent.socket_path, logs_frame(session, 0, 1), huge, huge, huge)
    await aeventually(
        lambda: (
            sum(n for (_, s, _), n in collector_double.drop_totals().items() if s == session) > 0
        )
    )
    totals = {r: n for (_, s, r), n in collector_double.drop_totals().items() if s == session}
    assert all(0 < n <= MAX_STATUS_DROP_COUNT for n in totals.values()), totals
    assert agent.failure is None
    # And it still takes events.
    await send(agent.socket_path, logs_frame(session, 1, 1))
    await aeventually(lambda: (session, 1) in set(collector_double.keys()))


# -- claiming the socket ---------------------------------------------------------


async def test_refuses_to_start_when_a_live_agent_owns_the_socket(
    make_config: ConfigFactory, sock_dir: Path
) -> None:
    async with Agent(make_config()) as first:
        second = Agent(make_config(spool_dir=sock_dir / "other-spool"))
        with pytest.raises(SocketInUseError, match="another"):
            await second.start()
        assert first.socket_path.exists()  # not stolen
    # A foreign listener (not an agent of ours, so no lock file) is detected too.
    foreign = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    path = sock_dir / "foreign.sock"
    foreign.bind(str(path))
    foreign.listen(1)
    try:
        with pytest.raises(SocketInUseError, match="listening"):
            await Agent(make_config(socket_path=path)).start()
    finally:
        foreign.close()


async def test_replaces_a_stale_socket_file(
    make_config: ConfigFactory, collector_double: CollectorDouble, sock_dir: Path
) -> None:
    path = sock_dir / "agent.sock"
    dead = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    dead.bind(str(path))
    dead.close()  # the file stays, nobody listens
    async with Agent(make_config(socket_path=path)) as agent:
        await send(agent.socket_path, logs_frame(new_session(), 0, 2))
        await aeventually(lambda: collector_double.event_count() == 2)


async def test_refuses_to_replace_a_regular_file(
    make_config: ConfigFactory, sock_dir: Path
) -> None:
    path = sock_dir / "not-a-socket"
    path.write_text("important")
    with pytest.raises(SocketInUseError, match="not a socket"):
        await Agent(make_config(socket_path=path)).start()
    assert path.read_text() == "important"


async def test_socket_group_is_applied(make_config: ConfigFactory) -> None:
    gid = os.getgroups()[-1] if os.getgroups() else os.getgid()
    config = make_config(socket_group=gid)
    async with Agent(config):
        assert os.stat(config.socket_path).st_gid == gid


async def test_unknown_socket_group_is_a_clear_error(make_config: ConfigFactory) -> None:
    with pytest.raises(ValueError, match="unknown group"):
        await Agent(make_config(socket_group="no-such-group-here")).start()


def test_peer_credentials_come_from_so_peercred() -> None:
    from boundary_audit.agent.sessions import peer_credentials

    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        creds = peer_credentials(a)
        assert (creds.pid, creds.uid, creds.gid) == (os.getpid(), os.getuid(), os.getgid())
    finally:
        a.close()
        b.close()


async def test_metrics_port_in_use_fails_start_cleanly(
    make_config: ConfigFactory, sock_dir: Path
) -> None:
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen(1)
    try:
        config = make_config(metrics_listen=("127.0.0.1", taken.getsockname()[1]))
        with pytest.raises(OSError, match="address already in use"):
            await Agent(config).start()
        # Nothing left behind: the socket path and its lock are free again.
        assert not config.socket_path.exists()
        async with Agent(make_config()):
            pass
    finally:
        taken.close()


#: Frames with an invalid session id in the poison test (the issue's number).
POISON_FRAMES = 2000


async def test_thousands_of_invalid_frames_cost_a_few_evidence_lines_and_no_requests(
    agent: Agent, collector_double: CollectorDouble
) -> None:
    """The first evidence stays, the flood is only counted, the collector never sees it."""
    good = new_session()
    first = logs_frame("first-bad-one", 0, 1)
    flood = [logs_frame(f"bad-{i}", 0, 1) for i in range(POISON_FRAMES)]
    await send(agent.socket_path, first, *flood, logs_frame(good, 0, 3))
    await aeventually(lambda: collector_double.order(good) == [0, 1, 2])
    await aeventually(
        lambda: (
            metric(agent, "boundary_audit_agent_dropped_frames_total", reason="bad_frame")
            == POISON_FRAMES + 1
        )
    )
    dead = agent.config.dead_letter_path
    await aeventually(
        lambda: dead.exists() and len(dead.read_text().splitlines()) == REFUSED_FRAMES_PER_PEER
    )
    lines = [json.loads(x) for x in dead.read_text().splitlines()]
    assert lines[0]["session_id"] == "first-bad-one"  # the oldest evidence is kept
    assert 400 not in collector_double.statuses()
    assert len(collector_double.requests()) <= 2  # the good batch (and nothing else)

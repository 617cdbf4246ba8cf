from __future__ import annotations

import asyncio
import json
import logging
import socket
import threading
import time
import uuid
from pathlib import Path

import pytest

from boundary_audit.auditor import TRUNCATION_MARKER, AuditEvent, SocketAuditor
from boundary_audit.wire import MAX_PAYLOAD_SIZE, SOCKET_PATH_ENV, DropReason
from boundary_audit.wire.spill import DEFAULT_SPILL_MAX_BYTES
from tests.auditor.helpers import ev, last_seal, spilled, spilled_sequence_numbers
from tests.receiver import Receiver
from tests.support import eventually

pytestmark = pytest.mark.timeout(60)

#: How long a test watches for something that must NOT happen (a flush
#: before its time, a second log line): the sender wakes within a GIL switch
#: interval (5 ms) of each audit(), so this gives it many chances to get it
#: wrong, while staying far below the timers involved.
NOTHING_HAPPENS_S = 0.1


def test_batch_size_flush_without_waiting_for_timer(receiver: Receiver) -> None:
    with SocketAuditor(receiver.path, batch_size=10, batch_interval=3600) as a:
        for i in range(10):
            a.audit(ev(i))
        assert receiver.wait_for(lambda: len(receiver.sequence_numbers()) == 10)
        assert a.stats.sent == 10
        # Nine more sit below the batch size and the timer is an hour away.
        for i in range(9):
            a.audit(ev(i))
        time.sleep(NOTHING_HAPPENS_S)  # proves nothing is sent: no fixed-time sync
        assert len(receiver.sequence_numbers()) == 10


def test_timer_flush_sends_a_partial_batch(receiver: Receiver) -> None:
    with SocketAuditor(receiver.path, batch_size=1000, batch_interval=0.2) as a:
        for i in range(3):
            a.audit(ev(i))
        assert receiver.wait_for(lambda: receiver.sequence_numbers() == [0, 1, 2])
        assert a.stats.pending == 0


def test_sequence_numbers_order_and_batch_fields(receiver: Receiver) -> None:
    session = uuid.uuid4()
    n_threads, per_thread = 4, 250
    with SocketAuditor(receiver.path, session_id=session, confined_process_name="codex") as a:

        def work(k: int) -> None:
            for i in range(per_thread):
                a.audit(ev(i, allowed=(i + k) % 3 != 0))

        threads = [threading.Thread(target=work, args=(k,)) for k in range(n_threads)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    total = n_threads * per_thread
    assert receiver.wait_for(lambda: len(receiver.sequence_numbers()) >= total)
    assert receiver.sequence_numbers() == list(range(total))  # complete and in order
    for batch in receiver.log_batches():
        assert batch.logs.session_id == str(session)
        assert batch.logs.confined_process_name == "codex"
        for log in batch.logs.logs:
            assert log.WhichOneof("resource") == "http_request"
            assert log.time.seconds > 1_600_000_000
            if log.allowed:
                assert log.http_request.matched_rule == "domain=github.com"
            else:
                assert log.http_request.matched_rule == ""


def test_event_supplied_sequence_number_and_time_are_kept(receiver: Receiver) -> None:
    with SocketAuditor(receiver.path) as a:
        assert a.audit(AuditEvent("GET", "http://a/", "a", True, "r", time_ns=5 * 10**9)) == 0
        assert a.audit(AuditEvent("GET", "http://a/", "a", True, "r", sequence_number=77)) == 77
        assert a.audit(ev(2)) == 1
    assert receiver.wait_for(lambda: len(receiver.sequence_numbers()) == 3)
    logs = [log for b in receiver.log_batches() for log in b.logs.logs]
    # One batch, sent in sequence order (the hash chain needs increasing numbers).
    assert [log.sequence_number for log in logs] == [0, 1, 77]
    assert logs[0].time.seconds == 5


def test_frames_split_to_fit_and_oversize_event_truncated(receiver: Receiver) -> None:
    huge = "https://github.com/" + "a" * 100_000
    with SocketAuditor(receiver.path, batch_size=300, batch_interval=3600) as a:
        for i in range(150):
            a.audit(ev(i, url=f"https://github.com/{i}/" + "p" * 1000))
        a.audit(ev(150, url=huge))
        for i in range(151, 300):
            a.audit(ev(i))
        assert receiver.wait_for(lambda: len(receiver.sequence_numbers()) == 300)
        stats = a.stats
    assert receiver.sequence_numbers() == list(range(300))
    assert len(receiver.frames) >= 5
    assert all(f.tag == 2 and len(f.payload) <= MAX_PAYLOAD_SIZE for f in receiver.frames)
    assert stats.truncated == 1
    cut = next(
        log.http_request.url
        for b in receiver.log_batches()
        for log in b.logs.logs
        if log.sequence_number == 150
    )
    assert cut.startswith("https://github.com/aaaa")
    assert cut.endswith(TRUNCATION_MARKER.format(len(huge) - len(cut.split("...[")[0])))


def test_drops_counted_and_reported_once_agent_appears(sock_dir: Path) -> None:
    path = sock_dir / "late.sock"
    a = SocketAuditor(path, queue_size=5, batch_size=1, batch_interval=0.05)
    try:
        for i in range(20):
            a.audit(ev(i))
        eventually(lambda: a.stats.connect_failures >= 1, "the sender to find no agent")
        stats = a.stats
        # With no agent the sender holds at most a batch; the queue fills.
        assert stats.queued + stats.dropped[DropReason.CHANNEL_FULL] == 20
        assert stats.dropped[DropReason.CHANNEL_FULL] >= 10
        r = Receiver(path, acks=True).start()
        try:
            assert r.wait_for(lambda: len(r.statuses()) == 1)
            assert len(r.sequence_numbers()) == stats.queued
            status = r.statuses()[0].status
            assert status.dropped_channel_full == stats.dropped[DropReason.CHANNEL_FULL]
            assert status.dropped_batch_full == 0
            assert a.stats.status_reports_sent == 1
            # Counts are deltas: nothing new dropped, nothing more reported.
            a.audit(ev(99))
            assert r.wait_for(lambda: len(r.sequence_numbers()) == stats.queued + 1)
            # A status from that flush would be written right after its events,
            # so it is on the stream before the next event: no need to wait.
            a.audit(ev(100))
            assert r.wait_for(lambda: len(r.sequence_numbers()) == stats.queued + 2)
            assert len(r.statuses()) == 1
            a.close(timeout=1)  # before the agent goes: nothing is left to retry
        finally:
            r.stop()
    finally:
        a.close(timeout=1)


def test_agent_down_at_start_then_up(sock_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = sock_dir / "later.sock"
    with caplog.at_level(logging.WARNING, logger="boundary_audit"):
        a = SocketAuditor(path, batch_size=5, batch_interval=0.05)
        for i in range(5):
            a.audit(ev(i))
        eventually(lambda: a.stats.connect_failures >= 2, "several failed connects")
    missing = [r for r in caplog.records if "does not exist" in str(r.msg)]
    assert len(missing) == 1
    failures = [r for r in caplog.records if "cannot connect" in str(r.msg)]
    assert len(failures) == 1  # logged once per state change, not per retry
    assert a.stats.connect_failures >= 2
    r = Receiver(path, acks=True).start()
    try:
        assert r.wait_for(lambda: r.sequence_numbers() == [0, 1, 2, 3, 4])
        assert a.stats.sent == 5
    finally:
        a.close(timeout=1)
        r.stop()


def test_agent_restart_mid_stream_loses_nothing(receiver: Receiver) -> None:
    with SocketAuditor(receiver.path, batch_size=10, batch_interval=0.05) as a:
        for i in range(100):
            a.audit(ev(i))
        assert receiver.wait_for(lambda: len(receiver.sequence_numbers()) == 100)
        receiver.stop()
        for i in range(100, 200):
            a.audit(ev(i))
        eventually(lambda: a.stats.connect_failures >= 1, "the sender to find the agent gone")
        receiver.start()
        for i in range(200, 300):
            a.audit(ev(i))
        assert receiver.wait_for(lambda: set(receiver.sequence_numbers()) == set(range(300)))
    assert a.stats.sent >= 300
    assert a.stats.dropped_total == 0


def test_frames_lost_in_a_dead_agent_are_replayed(sock_dir: Path) -> None:
    """An agent that dies with unread frames in its socket: they are re-sent."""
    path = sock_dir / "dies.sock"
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(str(path))
    listener.listen()
    with SocketAuditor(path, batch_size=10, batch_interval=0.05) as a:
        for i in range(50):
            a.audit(ev(i))
        conn, _ = listener.accept()
        eventually(lambda: a.stats.sent == 50, "all 50 events written")
        # The "agent" dies without ever reading: 50 events sit in the buffer.
        conn.close()
        listener.close()
        r = Receiver(path, acks=True).start()
        try:
            assert r.wait_for(lambda: set(r.sequence_numbers()) == set(range(50)))
            assert a.stats.replayed_events >= 50
            a.close()  # while the agent is up: nothing is left to spill
        finally:
            r.stop()


def test_stalled_agent_never_blocks_the_caller(receiver: Receiver) -> None:
    receiver.pause()
    n = 60_000
    a = SocketAuditor(receiver.path, queue_size=1000, batch_size=10, batch_interval=0.01)
    slowest = 0.0
    for i in range(n):
        t0 = time.perf_counter()
        a.audit(ev(i, url="https://github.com/" + "x" * 200))
        slowest = max(slowest, time.perf_counter() - t0)
    stats = a.stats
    assert stats.queued + stats.dropped[DropReason.CHANNEL_FULL] == n
    assert stats.dropped[DropReason.CHANNEL_FULL] > 0
    # Bounded: what the auditor holds never exceeds the queue plus one batch.
    assert stats.pending <= 1000 + 2048
    receiver.resume()
    assert receiver.wait_for(lambda: len(receiver.statuses()) >= 1)
    a.close(timeout=10)
    final = a.stats
    assert final.undelivered == 0
    assert receiver.wait_for(lambda: len(set(receiver.sequence_numbers())) == final.queued)
    reported = sum(s.status.dropped_channel_full for s in receiver.statuses())
    assert reported == final.dropped[DropReason.CHANNEL_FULL]
    assert len(set(receiver.sequence_numbers())) == final.queued
    assert final.queued + reported == n


def test_flush_returns_once_everything_is_written(receiver: Receiver, sock_dir: Path) -> None:
    with SocketAuditor(receiver.path, batch_size=1000, batch_interval=3600) as a:
        for i in range(5):
            a.audit(ev(i))
        assert a.flush(timeout=10)
        stats = a.stats
        assert (stats.sent, stats.pending, stats.connected) == (5, 0, True)
        assert a.flush(timeout=0)  # nothing pending: at once
    nobody = SocketAuditor(sock_dir / "nobody.sock", batch_size=1000, batch_interval=3600)
    try:
        nobody.audit(ev(0))
        started = time.monotonic()
        assert not nobody.flush(timeout=0.2)
        assert time.monotonic() - started >= 0.2
        assert nobody.stats.pending == 1
    finally:
        nobody.close(timeout=0)


def test_connected_follows_the_agent(receiver: Receiver) -> None:
    with SocketAuditor(receiver.path, batch_size=1) as a:
        assert not a.stats.connected  # lazy: nothing sent yet
        a.audit(ev(0))
        eventually(lambda: a.stats.connected, "the first connection")
        receiver.stop()  # noticed by the idle peer check, without a new event
        eventually(lambda: not a.stats.connected, "the hang-up to be noticed")
        receiver.start()
        a.audit(ev(1))
        eventually(lambda: a.stats.connected, "a new connection")
        assert a.stats.connects == 2


def test_close_drains_what_is_queued(receiver: Receiver) -> None:
    a = SocketAuditor(receiver.path, batch_size=100, batch_interval=3600)
    for i in range(7):
        a.audit(ev(i))
    a.close()
    assert receiver.wait_for(lambda: receiver.sequence_numbers() == list(range(7)))
    assert a.stats.undelivered == 0


def _seven_to_nobody(
    sock_dir: Path, caplog: pytest.LogCaptureFixture, spill_max_bytes: int = DEFAULT_SPILL_MAX_BYTES
) -> SocketAuditor:
    """A sender that audits 7 events with no agent anywhere, then closes."""
    a = SocketAuditor(
        sock_dir / "never.sock",
        batch_size=100,
        batch_interval=3600,
        spill_max_bytes=spill_max_bytes,
    )
    for i in range(7):
        a.audit(ev(i))
    with caplog.at_level(logging.WARNING, logger="boundary_audit"):
        a.close(timeout=0.3)
    return a


def test_close_spills_what_could_not_be_delivered_with_its_seal(
    sock_dir: Path, private_spill_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    a = _seven_to_nobody(sock_dir, caplog)
    stats = a.stats
    assert (stats.spilled, stats.undelivered, stats.sent) == (7, 0, 0)
    [said] = [r for r in caplog.records if "spilled to disk" in str(r.msg)]
    assert said.levelno == logging.WARNING  # spilled is not lost
    assert stats.connect_failures >= 1
    [messages] = spilled(private_spill_dir)
    assert spilled_sequence_numbers(messages) == list(range(7))
    seal = last_seal(messages)
    assert (seal.events_made, seal.events_sent, seal.spilled, seal.undelivered) == (7, 0, 7, 0)
    assert messages[-1].status.session_id == a.session_id
    assert a.audit(ev(8)) == 7
    assert a.stats.dropped[DropReason.CLOSED] == 1


def test_close_without_spilling_reports_what_could_not_be_delivered(
    sock_dir: Path, private_spill_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    a = _seven_to_nobody(sock_dir, caplog, spill_max_bytes=0)
    assert (a.stats.undelivered, a.stats.spilled) == (7, 0)
    assert any("not delivered" in str(r.msg) for r in caplog.records)
    assert spilled(private_spill_dir) == []


def test_disable_flag_turns_the_sender_off(
    receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="boundary_audit"):
        a = SocketAuditor(env={SOCKET_PATH_ENV: str(receiver.path), "DISABLE_AUDIT_LOGS": "true"})
    assert a.socket_path == receiver.path
    assert a.stats.disabled
    for i in range(5):
        a.audit(ev(i))
    a.close()
    assert a.stats.discarded_disabled == 5
    assert receiver.connections == 0
    assert sum("disabled" in str(r.msg) for r in caplog.records) == 1


def test_invalid_arguments_are_clear() -> None:
    with pytest.raises(ValueError, match="session_id must be a UUID"):
        SocketAuditor("/nonexistent.sock", session_id="nope", disabled=True)
    with pytest.raises(ValueError, match="batch_size"):
        SocketAuditor("/nonexistent.sock", batch_size=0, disabled=True)


async def test_usable_from_asyncio(receiver: Receiver) -> None:
    a = SocketAuditor(receiver.path, batch_size=5, batch_interval=0.05)

    async def producer(k: int) -> None:
        for i in range(20):
            a.audit(ev(k * 100 + i))
            await asyncio.sleep(0)  # a yield to the other producers, not a wait

    await asyncio.gather(*(producer(k) for k in range(5)))
    await a.aclose()
    assert await asyncio.to_thread(
        receiver.wait_for, lambda: len(receiver.sequence_numbers()) >= 100
    )
    assert sorted(receiver.sequence_numbers()) == list(range(100))


def test_log_lines_are_json(receiver: Receiver, capsys: pytest.CaptureFixture[str]) -> None:
    from boundary_audit.logs import configure_logging

    configure_logging("info", "json")
    try:
        a = SocketAuditor(receiver.path.with_name("missing.sock"))
        a.close(timeout=0.1)
        lines = [json.loads(x) for x in capsys.readouterr().err.splitlines() if x.strip()]
        assert any(x["event"].startswith("agent socket does not exist") for x in lines)
        assert all(x["component"] == "auditor" for x in lines)
    finally:
        logging.getLogger().handlers.clear()


def test_drops_are_logged_once_per_episode(
    sock_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    a = SocketAuditor(sock_dir / "absent.sock", queue_size=3, batch_size=1, batch_interval=0.01)
    with caplog.at_level(logging.INFO, logger="boundary_audit"):
        for burst in range(5):
            for i in range(50):
                a.audit(ev(burst * 100 + i))
            # Proves no second "dropping" line: the sender, woken by audit(),
            # looks at the drops of each burst on its own.
            time.sleep(NOTHING_HAPPENS_S)
        a.close(timeout=0.2)
    assert a.stats.dropped[DropReason.CHANNEL_FULL] >= 200
    starts = [r for r in caplog.records if "dropping events" in str(r.msg)]
    assert len(starts) == 1


def test_unencodable_events_are_counted_and_never_stop_the_sender(
    receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    with (
        caplog.at_level(logging.ERROR, logger="boundary_audit"),
        SocketAuditor(receiver.path, batch_size=5, batch_interval=0.05) as a,
    ):
        a.audit(ev(0))
        a.audit(AuditEvent("GET", "http://a/", "a", True, "r", sequence_number=2**40))
        a.audit(AuditEvent("GET", 12345, "a", False))  # type: ignore[arg-type]
        a.audit(ev(3))
        assert receiver.wait_for(lambda: len(receiver.sequence_numbers()) == 2)
        a.audit(AuditEvent("GET", "http://a/", "a", True, "r", sequence_number=-1))
        a.audit(ev(5))
        assert receiver.wait_for(lambda: len(receiver.sequence_numbers()) == 3)
    # The bad event with no number of its own took 1: a gap, counted as a drop.
    assert receiver.sequence_numbers() == [0, 2, 3]
    assert a.stats.dropped[DropReason.INVALID_EVENT] == 3
    assert a.stats.sent == 3
    assert sum("cannot be encoded" in str(r.msg) for r in caplog.records) == 1


def test_close_with_no_agent_listening_reports_without_waiting_out_the_timeout(
    sock_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    stale = sock_dir / "stale.sock"
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(str(stale))
    listener.close()  # the file stays, nobody listens: ECONNREFUSED
    for path in (sock_dir / "absent.sock", stale):
        a = SocketAuditor(path, batch_size=100, batch_interval=3600)
        for i in range(4):
            a.audit(ev(i))
        with caplog.at_level(logging.WARNING, logger="boundary_audit"):
            a.close(timeout=600)  # would hang the test if waited out
        assert (a.stats.undelivered, a.stats.spilled) == (0, 4)
        reasons = [getattr(r, "msg", {}) for r in caplog.records]
        assert any("no trusted agent listening" in str(m) for m in reasons)
        caplog.clear()


def test_close_keeps_retrying_for_an_agent_that_is_restarting(sock_dir: Path) -> None:
    path = sock_dir / "restarting.sock"
    r = Receiver(path, acks=True).start()
    a = SocketAuditor(path, batch_size=1, batch_interval=0.01)
    a.audit(ev(0))
    assert r.wait_for(lambda: r.sequence_numbers() == [0])
    r.stop()  # the agent goes away...
    a.audit(ev(1))
    closer = threading.Thread(target=a.close, kwargs={"timeout": 30})
    closer.start()
    eventually(lambda: a.closed, "close() to begin")
    tried = a.stats.connect_failures
    eventually(lambda: a.stats.connect_failures > tried, "close() to be retrying")
    r.start()  # ...and comes back while close() is still trying
    closer.join(40)
    assert not closer.is_alive()
    assert r.wait_for(lambda: 1 in r.sequence_numbers())
    assert a.stats.undelivered == 0
    r.stop()

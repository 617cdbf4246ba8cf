"""Waiting for the handover: the watermark, its waiters, and the sender's policy.

The pure part (:class:`Handover`, the flush decision) is stepped without
sockets or clocks; the socket tests use a real listener and read what the
kernel holds the moment the wait returns.
"""

from __future__ import annotations

import asyncio
import collections
import select
import socket
from pathlib import Path

import pytest

from boundary_audit.auditor import (
    AuditEvent,
    HandsOver,
    LogAuditor,
    MemoryAuditor,
    MultiAuditor,
    SocketAuditor,
)
from boundary_audit.auditor.encoding import Record, encode_records
from boundary_audit.auditor.handover import Handover, resolve_all
from boundary_audit.auditor.sender import DEFAULT_BATCH_INTERVAL, SenderState
from boundary_audit.wire import BoundaryMessage, FrameDecoder, decode_payload
from tests.auditor.helpers import ev
from tests.receiver import Receiver
from tests.support import aeventually

pytestmark = pytest.mark.timeout(60)

#: A batch linger no test would ever wait out: anything written promptly was
#: written because someone waited.
LINGER_S = 3600.0
#: Handover bound for tests where the agent never takes anything: short, so
#: the test is quick; the behaviour does not depend on its value.
SHORT_HANDOVER_S = 0.05


# -- the pure part ----------------------------------------------------------------


def _loop_and_future() -> tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]:
    loop = asyncio.new_event_loop()
    return loop, loop.create_future()


def test_waiters_are_released_in_mark_order_whatever_the_order_they_came_in() -> None:
    ho = Handover()
    loop = asyncio.new_event_loop()
    try:
        futs = {m: loop.create_future() for m in (5, 2, 9)}
        for mark, fut in futs.items():
            assert ho.add(mark, loop, fut)
        assert [e[0] for e in ho.advance(4)] == [2]
        assert ho.advance(4) == []  # the watermark never moves back or twice
        assert ho.advance(3) == []
        assert [e[0] for e in ho.advance(9)] == [5, 9]
        assert ho.waiting() == 0
        assert not ho.add(7, loop, loop.create_future())  # already through
    finally:
        loop.close()


def test_finish_releases_everyone_and_no_one_waits_after() -> None:
    ho = Handover()
    loop, fut = _loop_and_future()
    try:
        ho.add(3, loop, fut)
        ho.want(3)
        assert ho.due()
        released = ho.finish()
        assert [e[0] for e in released] == [3]
        assert not ho.due()
        assert not ho.add(10, loop, loop.create_future())
    finally:
        loop.close()


def test_an_advance_ends_a_stall() -> None:
    ho = Handover()
    ho.stalled = True
    ho.advance(1)
    assert not ho.stalled


def test_resolve_all_wakes_each_future_once_even_if_cancelled_meanwhile() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        ho = Handover()
        live, cancelled = loop.create_future(), loop.create_future()
        ho.add(1, loop, live)
        ho.add(1, loop, cancelled)
        cancelled.cancel()
        resolve_all(ho.advance(1))
        await asyncio.wait_for(live, 1)
        assert cancelled.cancelled()

    asyncio.run(main())


def test_a_waited_on_event_makes_the_batch_due_at_once_and_only_then() -> None:
    """The flush policy, on an injected clock: a wait cancels the linger."""
    ho = Handover()
    st = SenderState(batch_size=1000, batch_interval=DEFAULT_BATCH_INTERVAL)
    queue = _records(3)
    st.batch.take(queue, now=0.0)

    def due(now: float) -> bool:
        return st.flush_due(now, urgent=ho.due(), dropped=0, can_report=True)

    assert not due(0.0)  # three events, nobody waits: they linger
    assert not due(DEFAULT_BATCH_INTERVAL - 0.001)
    ho.want(3)
    assert due(0.0)  # someone waits: due now, not in five seconds
    ho.advance(3)
    assert not due(0.0)  # handed over: back to lingering


def test_under_load_whatever_is_queued_goes_in_one_frame() -> None:
    """Waited on or not, a flush takes the whole queue: 500 events, one frame."""
    st = SenderState(batch_size=10, batch_interval=DEFAULT_BATCH_INTERVAL)
    queue = _records(500)
    st.batch.take(queue, now=0.0)
    frames = [f for f in encode_records(st.batch.records, "test") if f.frame]
    assert len(frames) == 1
    assert frames[0].events == 500


def _records(n: int) -> collections.deque[Record]:
    return collections.deque(
        Record("s" * 36, i, 1_700_000_000_000_000_000 + i, "GET", f"https://x.org/{i}", True, "r")
        for i in range(n)
    )


# -- with a socket ----------------------------------------------------------------


class SilentAgent:
    """A listener that accepts and never reads: what the kernel holds is what was written."""

    def __init__(self, path: Path) -> None:
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(str(path))
        self.listener.listen(8)
        self.path = path
        self.conn: socket.socket | None = None

    def accepted(self) -> socket.socket:
        if self.conn is None:
            ready, _, _ = select.select([self.listener], [], [], 0)
            if ready:
                self.conn, _ = self.listener.accept()
        assert self.conn is not None, "the sender has not connected"
        return self.conn

    def held(self) -> list[BoundaryMessage]:
        """Every whole frame in the kernel's buffer right now (without waiting)."""
        data = b""
        conn = self.accepted()
        while True:
            try:
                chunk = conn.recv(1 << 20, socket.MSG_DONTWAIT)
            except BlockingIOError:
                break
            if not chunk:
                break
            data += chunk
        messages = []
        for frame in FrameDecoder().feed(data):
            msg = decode_payload(frame.tag, frame.payload)
            assert isinstance(msg, BoundaryMessage)
            messages.append(msg)
        return messages

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
        self.listener.close()


def _logged_sequences(messages: list[BoundaryMessage]) -> list[int]:
    return [
        log.sequence_number
        for m in messages
        if m.WhichOneof("msg") == "logs"
        for log in m.logs.logs
    ]


def test_a_waited_on_event_is_in_the_socket_before_the_wait_returns(sock_dir: Path) -> None:
    agent = SilentAgent(sock_dir / "silent.sock")
    a = SocketAuditor(agent.path, batch_size=1000, batch_interval=LINGER_S)
    try:

        async def main() -> None:
            seen: list[int] = []
            for i in range(3):
                a.audit(ev(i))
                mark = a.handover_mark()
                assert await a.handed_over(mark)
                # Nothing may run between the return and this read: what the
                # kernel holds now was written before handed_over() returned.
                seen += _logged_sequences(agent.held())
                assert seen == list(range(i + 1))

        asyncio.run(main())
        assert a.stats.handover_timeouts == 0
    finally:
        a.close(timeout=0.1)
        agent.close()


def test_an_unwaited_event_still_lingers(receiver: Receiver) -> None:
    """Waiting changes nothing for callers that do not wait: batching stays."""
    with SocketAuditor(receiver.path, batch_size=1000, batch_interval=LINGER_S) as a:

        async def main() -> None:
            a.audit(ev(0))
            assert await a.handed_over(a.handover_mark())
            await aeventually(lambda: receiver.sequence_numbers() == [0], "the waited event")
            a.audit(ev(1))
            await asyncio.sleep(0.1)  # proves event 1 lingers: nobody waits for it
            assert receiver.sequence_numbers() == [0]

        asyncio.run(main())


def test_an_unreachable_agent_costs_one_bounded_wait_then_none(sock_dir: Path) -> None:
    """No agent: the first wait runs out (counted, logged), the next return at once."""
    a = SocketAuditor(
        sock_dir / "nobody.sock",
        batch_size=1000,
        batch_interval=LINGER_S,
        handover_timeout=SHORT_HANDOVER_S,
        spill_dir=sock_dir / "spill",
    )
    try:

        async def main() -> None:
            loop = asyncio.get_running_loop()
            a.audit(ev(0))
            t0 = loop.time()
            assert not await a.handed_over(a.handover_mark())
            assert loop.time() - t0 >= SHORT_HANDOVER_S
            for i in range(1, 5):
                a.audit(ev(i))
                t1 = loop.time()
                assert not await a.handed_over(a.handover_mark())
                assert loop.time() - t1 < SHORT_HANDOVER_S  # stalled: no wait at all

        asyncio.run(main())
        assert a.stats.handover_timeouts == 1
        assert a.stats.handover_skipped == 4
    finally:
        a.close(timeout=0.1)


def test_a_stall_ends_once_the_agent_takes_events_again(sock_dir: Path) -> None:
    path = sock_dir / "late.sock"
    a = SocketAuditor(
        path, batch_size=1000, batch_interval=LINGER_S, handover_timeout=SHORT_HANDOVER_S
    )
    agent: Receiver | None = None
    try:

        async def main() -> None:
            nonlocal agent
            a.audit(ev(0))
            assert not await a.handed_over(a.handover_mark())
            agent = Receiver(path).start()

            async def handed() -> bool:
                a.audit(ev(1))
                return await a.handed_over(a.handover_mark())

            # Skipped waits still ask the sender to write: it reconnects
            # (with backoff), hands over, and the stall ends.
            await aeventually(handed, "a handover after the agent came up")
            assert not a._handoff.handover.stalled
            a.audit(ev(2))
            assert await a.handed_over(a.handover_mark())

        asyncio.run(main())
    finally:
        a.close(timeout=1)
        if agent is not None:
            agent.stop()


def test_auditors_without_a_socket_do_not_hand_over_and_multi_delegates(
    receiver: Receiver,
) -> None:
    memory = MemoryAuditor()
    assert not isinstance(memory, HandsOver)
    assert not isinstance(LogAuditor(), HandsOver)
    with SocketAuditor(receiver.path, batch_size=1000, batch_interval=LINGER_S) as sock:
        multi = MultiAuditor([memory, sock])
        assert isinstance(multi, HandsOver)

        async def main() -> None:
            multi.audit(AuditEvent("GET", "https://x.org/", "x.org", True, "domain=x.org"))
            assert await multi.handed_over(multi.handover_mark())
            await aeventually(lambda: receiver.sequence_numbers() == [0], "delegated handover")

        asyncio.run(main())
    assert await_nothing(MultiAuditor([memory]))


def await_nothing(multi: MultiAuditor) -> bool:
    """A MultiAuditor with nothing that hands over resolves at once."""
    return asyncio.run(multi.handed_over(multi.handover_mark()))

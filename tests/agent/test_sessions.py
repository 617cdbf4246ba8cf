"""Opens, seals and acks with the real sender (SocketAuditor); senders that never ask."""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import Callable

import pytest

from boundary_audit.agent import Agent
from boundary_audit.auditor import SocketAuditor
from boundary_audit.wire import (
    BoundaryMessage,
    BoundaryStatus,
    FrameDecoder,
    SessionOpen,
    encode_message,
)
from tests.support import EVENTUALLY_TIMEOUT_S, aeventually, eventually
from tests.support.doubles import CollectorDouble
from tests.support.services import AgentProcess

from .helpers import connect, logs_frame, new_session
from .test_interop import event

pytestmark = pytest.mark.timeout(180)

#: Events of the SIGKILL test; the agent is killed KILLS times while they flow.
KILL_STREAM_EVENTS = 12_000
KILLS = 3
#: The agent is killed each time the collector has this many more events.
KILL_EVERY_EVENTS = 2_500
#: How long a test waits to see that the agent wrote nothing back. Nothing is
#: expected, so this only bounds the wait: an ack would come within a commit
#: (milliseconds).
NOTHING_WRITTEN_WAIT_S = 0.5


def open_frame(session: str, want_acks: bool = True) -> bytes:
    status = BoundaryStatus(
        session_id=session, open=SessionOpen(want_acks=want_acks, sender="test/1")
    )
    return encode_message(BoundaryMessage(status=status))


async def read_acks(reader: asyncio.StreamReader, until: int) -> list[int]:
    decoder = FrameDecoder()
    acks: list[int] = []
    async with asyncio.timeout(EVENTUALLY_TIMEOUT_S):
        while not acks or acks[-1] < until:
            data = await reader.read(4096)
            assert data, f"connection closed after acks {acks}"
            for frame in decoder.feed(data):
                acks.append(BoundaryMessage.FromString(frame.payload).status.ack.frames)
    return acks


async def test_socket_auditor_session_is_opened_sealed_and_acknowledged(
    agent: Agent, collector_double: CollectorDouble
) -> None:
    session = str(uuid.uuid4())
    auditor = SocketAuditor(agent.socket_path, session_id=session, confined_process_name="codex")
    for i in range(500):
        auditor.audit(event(i))
    await asyncio.to_thread(auditor.close, 20)
    await aeventually(lambda: len(collector_double.seals(session)) == 1)
    stats = auditor.stats
    assert stats.agent_acknowledges is True
    assert stats.acks_received > 0
    assert stats.sealed
    [seal] = collector_double.seals(session)
    assert seal.seal.events_made == 500
    assert seal.seal.events_sent == 500
    assert seal.confined_process_name == "codex"
    assert seal.observed_at.ToNanoseconds() > 0
    opens = [r for r in collector_double.session_records(session) if r.HasField("open")]
    assert opens
    assert opens[0].open.want_acks
    assert collector_double.order(session) == list(range(500))
    assert collector_double.state.duplicates == 0


async def test_acks_count_every_frame_of_the_connection_cumulatively(agent: Agent) -> None:
    session = new_session()
    reader, writer = await connect(agent.socket_path)
    writer.write(open_frame(session) + logs_frame(session, 0, 3) + logs_frame(session, 3, 3))
    acks = await read_acks(reader, until=3)
    assert acks == sorted(acks)
    assert acks[-1] == 3
    writer.write(logs_frame(session, 6, 1))
    assert (await read_acks(reader, until=4))[-1] == 4
    writer.close()


@pytest.mark.parametrize("first", ["logs", "open_without_acks"])
async def test_nothing_is_written_to_a_sender_that_did_not_ask(
    agent: Agent, collector_double: CollectorDouble, first: str
) -> None:
    """Coder's sender never reads its socket: not one byte may come back."""
    session = new_session()
    reader, writer = await connect(agent.socket_path)
    head = logs_frame(session, 0, 2) if first == "logs" else open_frame(session, want_acks=False)
    writer.write(head + logs_frame(session, 2, 2))
    await writer.drain()
    await aeventually(lambda: len(collector_double.order(session)) >= 2)
    try:
        async with asyncio.timeout(NOTHING_WRITTEN_WAIT_S):
            data = await reader.read(1)
    except TimeoutError:
        data = b""
    assert data == b""
    writer.close()


async def test_a_forged_frame_never_shadows_the_real_event(
    agent: Agent, collector_double: CollectorDouble
) -> None:
    """Another process sends frames for a session a live sender opened: refused."""
    session = new_session()
    real_reader, real = await connect(agent.socket_path)
    real.write(open_frame(session))
    await read_acks(real_reader, until=1)

    def forge() -> None:  # another thread's connection is still this pid: use a child
        import subprocess
        import sys

        code = (
            "import socket,sys;s=socket.socket(socket.AF_UNIX);s.connect(sys.argv[1]);"
            "s.sendall(sys.stdin.buffer.read());s.close()"
        )
        subprocess.run(
            [sys.executable, "-c", code, str(agent.socket_path)],
            input=logs_frame(session, 0, 5),
            check=True,
        )

    await asyncio.to_thread(forge)
    await aeventually(
        lambda: (
            agent.metrics.registry.get_sample_value(
                "boundary_audit_agent_dropped_frames_total", {"reason": "forged"}
            )
            == 1
        )
    )
    real.write(logs_frame(session, 0, 5))
    await read_acks(real_reader, until=2)
    await aeventually(lambda: collector_double.order(session) == list(range(5)))
    stored = collector_double.state.events[(session, 0)]
    assert stored.url == "https://example.test/item/0"
    assert collector_double.state.duplicates == 0  # the forged copy never reached it
    real.close()


def test_exactly_once_across_agent_sigkills_with_acks(
    agent_process: AgentProcess, collector_double: CollectorDouble
) -> None:
    """The agent is SIGKILLed several times mid-stream: every event stored once."""
    proc = agent_process
    proc.start()
    session = str(uuid.uuid4())
    auditor = SocketAuditor(proc.socket_path, session_id=session, batch_interval=0.02)
    done = threading.Event()

    def sent_at_least(n: int) -> Callable[[], bool]:
        return lambda: auditor.stats.sent >= n

    def stored_at_least(n: int) -> Callable[[], bool]:
        return lambda: collector_double.event_count() >= n

    def produce() -> None:
        for i in range(KILL_STREAM_EVENTS):
            auditor.audit(event(i))
            if i % 200 == 0:
                eventually(
                    sent_at_least(i - 4096),
                    "the sender to keep up",
                    within=2 * EVENTUALLY_TIMEOUT_S,
                )
        done.set()

    producer = threading.Thread(target=produce, daemon=True)
    try:
        producer.start()
        for k in range(1, KILLS + 1):
            target = k * KILL_EVERY_EVENTS
            eventually(
                stored_at_least(target),
                "the stream to be flowing",
            )
            proc.kill()
            eventually(lambda: not auditor.stats.connected, "the sender to notice the dead agent")
            proc.start()
        eventually(done.is_set, "the producer to finish")
        auditor.close(30)
        stats = auditor.stats
        assert stats.agent_acknowledges is True
        dropped = stats.dropped_total
        eventually(
            lambda: collector_double.event_count() == KILL_STREAM_EVENTS - dropped,
            "every sent event",
        )
        assert set(collector_double.order(session)) == set(collector_double.keys_of(session))
        assert len(collector_double.order(session)) == KILL_STREAM_EVENTS - dropped
        eventually(lambda: len(collector_double.seals(session)) >= 1, "the seal")
        # The collector may receive events twice (it stores them once): the
        # request in flight when the agent died is re-sent from its spool, and
        # frames committed in the instant before a kill, not yet acknowledged,
        # are re-sent by the sender. Stored: exactly once, checked above.
        assert proc.stop() == 0
    finally:
        proc.ensure_stopped()


async def test_a_connection_the_agent_closes_is_not_acknowledged(
    agent: Agent, collector_double: CollectorDouble
) -> None:
    """Frames, then a header no frame can have, in one write: closed, and no ack at all."""
    session = new_session()
    reader, writer = await connect(agent.socket_path)
    bad_header = (0x7F << 24 | 4).to_bytes(4, "big") + b"xxxx"  # unknown tag
    writer.write(open_frame(session) + logs_frame(session, 0, 2) + bad_header)
    await writer.drain()
    received = b""
    async with asyncio.timeout(EVENTUALLY_TIMEOUT_S):
        while chunk := await reader.read(4096):
            received += chunk
    assert received == b""  # closed without a word
    # The frames before the bad header were still kept (nothing accepted is lost).
    await aeventually(lambda: collector_double.order(session) == [0, 1])

"""What the agent tests send and look at: frames, connections, metrics."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

from boundary_audit.agent import Agent, AgentConfig
from boundary_audit.wire import (
    BoundaryLog,
    BoundaryMessage,
    BoundaryStatus,
    ReportBoundaryLogsRequest,
    encode_message,
)
from tests.support import EVENTUALLY_TIMEOUT_S

#: Builds an AgentConfig for the test's collector double and socket directory;
#: keyword arguments override fields.
ConfigFactory = Callable[..., AgentConfig]


def new_session() -> str:
    return str(uuid.uuid4())


def logs_request(
    session: str, start: int, count: int, process: str = "claude-code"
) -> ReportBoundaryLogsRequest:
    req = ReportBoundaryLogsRequest(session_id=session, confined_process_name=process)
    for seq in range(start, start + count):
        log = BoundaryLog(allowed=seq % 2 == 0, sequence_number=seq)
        log.time.FromNanoseconds(time.time_ns())
        log.http_request.method = "GET"
        log.http_request.url = f"https://example.test/item/{seq}"
        if log.allowed:
            log.http_request.matched_rule = "domain=example.test"
        req.logs.append(log)
    return req


def logs_frame(session: str, start: int, count: int) -> bytes:
    """A tag-2 frame (envelope with logs), as current senders write."""
    return encode_message(BoundaryMessage(logs=logs_request(session, start, count)))


def v1_frame(session: str, start: int, count: int) -> bytes:
    """A tag-1 frame (bare request), as protocol-v1 senders write."""
    return encode_message(logs_request(session, start, count))


def status_frame(channel_full: int = 0, batch_full: int = 0) -> bytes:
    status = BoundaryStatus(dropped_channel_full=channel_full, dropped_batch_full=batch_full)
    return encode_message(BoundaryMessage(status=status))


async def connect(path: Path) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_unix_connection(str(path))


async def send(path: Path, *frames: bytes) -> None:
    """One connection: write ``frames``, close cleanly."""
    _, writer = await connect(path)
    writer.write(b"".join(frames))
    await writer.drain()
    writer.close()
    await writer.wait_closed()


@contextlib.contextmanager
def sending(path: Path, *frames: bytes) -> Iterator[socket.socket]:
    """A blocking connection (for tests outside asyncio) that has written
    ``frames``; closed when the block ends."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.connect(str(path))
        for frame in frames:
            s.sendall(frame)
        yield s


async def closed_by_peer(
    reader: asyncio.StreamReader, within: float = EVENTUALLY_TIMEOUT_S
) -> bool:
    """True once the agent has closed the connection (EOF or reset); False after ``within``.

    With a short ``within`` this is the wait that proves the agent did *not*
    close the connection in that time.
    """
    try:
        async with asyncio.timeout(within):
            while True:
                if not await reader.read(1024):
                    return True
    except ConnectionError:  # reset, or a broken pipe left by our last write
        return True
    except TimeoutError:
        return False


def metric(agent: Agent, name: str, **labels: str) -> float:
    value = agent.metrics.registry.get_sample_value(name, labels)
    return 0.0 if value is None else value


__all__ = [
    "ConfigFactory",
    "closed_by_peer",
    "connect",
    "logs_frame",
    "logs_request",
    "metric",
    "new_session",
    "send",
    "sending",
    "status_frame",
    "v1_frame",
]

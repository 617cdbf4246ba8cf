"""Fixtures and helpers for the agent tests: a collector double, short socket
paths, frame builders and polling helpers."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from boundary_audit.agent import Agent, AgentConfig
from boundary_audit.wire import (
    BoundaryLog,
    BoundaryMessage,
    BoundaryStatus,
    ReportBoundaryLogsRequest,
    encode_message,
)

from .collector_double import CollectorDouble

#: How long a test waits for something that should happen within moments;
#: generous because the machine is shared and slow at times.
EVENTUALLY_S = 30.0


@pytest.fixture
def collector() -> Iterator[CollectorDouble]:
    double = CollectorDouble()
    double.start()
    yield double
    double.stop()


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """A directory with a short path: Unix socket paths are capped at 107 bytes."""
    d = Path(tempfile.mkdtemp(prefix="ba-"))
    yield d
    shutil.rmtree(d, ignore_errors=True)


ConfigFactory = Callable[..., AgentConfig]


@pytest.fixture
def make_config(short_dir: Path, collector: CollectorDouble) -> ConfigFactory:
    def factory(**overrides: Any) -> AgentConfig:
        values: dict[str, Any] = {
            "collector_url": collector.url,
            "token": collector.state.token,
            "socket_path": short_dir / "agent.sock",
            "spool_dir": short_dir / "spool",
            "backoff_initial": 0.02,
            "backoff_max": 0.2,
            "flush_timeout": 5.0,
            "drain_timeout": 2.0,
        }
        values.update(overrides)
        return AgentConfig(**values)

    return factory


@pytest.fixture
async def agent(make_config: ConfigFactory) -> AsyncIterator[Agent]:
    async with Agent(make_config()) as running:
        yield running


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


async def eventually(
    predicate: Callable[[], bool | Awaitable[bool]], within: float = EVENTUALLY_S
) -> None:
    """Poll until ``predicate`` holds; fail with a clear message otherwise."""
    deadline = time.monotonic() + within
    while True:
        result = predicate()
        if not isinstance(result, bool):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {within} s")
        await asyncio.sleep(0.02)


async def closed_by_peer(reader: asyncio.StreamReader, within: float = EVENTUALLY_S) -> bool:
    """True once the agent has closed the connection (EOF or reset)."""
    try:
        async with asyncio.timeout(within):
            while True:
                if not await reader.read(1024):
                    return True
    except ConnectionError:  # reset, or a broken pipe left by our last write
        return True


def metric(agent: Agent, name: str, **labels: str) -> float:
    value = agent.metrics.registry.get_sample_value(name, labels)
    return 0.0 if value is None else value

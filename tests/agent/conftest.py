"""Fixtures of the agent tests: a collector double, agent configs, running agents.

``sock_dir`` (a short directory: Unix socket paths are capped at 107 bytes)
comes from ``tests/conftest.py``; helpers live in :mod:`tests.agent.helpers`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from boundary_audit.agent import Agent, AgentConfig
from tests.support.doubles import CollectorDouble
from tests.support.services import AgentProcess

from .helpers import ConfigFactory

#: Retry delays of the agents under test: short, so a test that makes the
#: collector fail sees the retries within tens of milliseconds.
TEST_BACKOFF_INITIAL_S = 0.02
TEST_BACKOFF_MAX_S = 0.2
#: Shutdown bounds: long enough to flush what a test sent, short enough that
#: a test stopping an agent with the collector down does not wait long.
TEST_FLUSH_TIMEOUT_S = 5.0
TEST_DRAIN_TIMEOUT_S = 2.0


@pytest.fixture
def collector_double() -> Iterator[CollectorDouble]:
    with CollectorDouble() as double:
        yield double


@pytest.fixture
def make_config(sock_dir: Path, collector_double: CollectorDouble) -> ConfigFactory:
    def factory(**overrides: Any) -> AgentConfig:
        values: dict[str, Any] = {
            "collector_url": collector_double.url,
            "token": collector_double.state.token,
            "socket_path": sock_dir / "agent.sock",
            "spool_dir": sock_dir / "spool",
            "spill_dir": sock_dir / "spill",
            "backoff_initial": TEST_BACKOFF_INITIAL_S,
            "backoff_max": TEST_BACKOFF_MAX_S,
            "flush_timeout": TEST_FLUSH_TIMEOUT_S,
            "drain_timeout": TEST_DRAIN_TIMEOUT_S,
        }
        values.update(overrides)
        return AgentConfig(**values)

    return factory


@pytest.fixture
async def agent(make_config: ConfigFactory) -> AsyncIterator[Agent]:
    async with Agent(make_config()) as running:
        yield running


@pytest.fixture
def agent_process(sock_dir: Path, collector_double: CollectorDouble) -> Iterator[AgentProcess]:
    """The agent as its own process (not started yet), sending to the double."""
    proc = AgentProcess(sock_dir, sock_dir, collector_double.url, collector_double.state.token)
    yield proc
    proc.ensure_stopped()

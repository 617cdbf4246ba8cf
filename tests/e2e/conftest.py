"""Fixtures of the end-to-end suite: every component a real, separate process.

``sock_dir`` (a short private directory for the agent's socket) comes from
``tests/conftest.py``; the pieces live in :mod:`tests.e2e.helpers`.
"""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.services import AgentProcess

from .helpers import AgentFactory, CollectorProcess, TinyUpstream


@pytest.fixture
def upstream() -> Iterator[int]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), TinyUpstream)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield int(server.server_address[1])
    server.shutdown()
    server.server_close()


@pytest.fixture
def collector_process(tmp_path: Path) -> Iterator[CollectorProcess]:
    collector = CollectorProcess(tmp_path)
    collector.start()
    yield collector
    collector.ensure_stopped()


@pytest.fixture
def agent_token(collector_process: CollectorProcess) -> str:
    return collector_process.create_token()


@pytest.fixture
def make_agent_process(
    tmp_path: Path, sock_dir: Path, collector_process: CollectorProcess, agent_token: str
) -> Iterator[AgentFactory]:
    """Agents for the collector, with the token made for them; stopped at teardown."""
    made: list[AgentProcess] = []

    def make(*extra: str) -> AgentProcess:
        agent = AgentProcess(tmp_path, sock_dir, collector_process.url, agent_token, *extra)
        made.append(agent)
        return agent

    yield make
    for agent in made:
        agent.ensure_stopped()


@pytest.fixture
def agent_process(make_agent_process: AgentFactory) -> AgentProcess:
    agent = make_agent_process()
    agent.start()
    return agent

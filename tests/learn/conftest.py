"""The end-to-end suite's real processes (collector, agent, upstream) for the learn tests."""

from tests.e2e.conftest import (
    agent_process,
    agent_token,
    collector_process,
    make_agent_process,
    upstream,
)

__all__ = ["agent_process", "agent_token", "collector_process", "make_agent_process", "upstream"]

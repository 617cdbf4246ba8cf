"""Fixtures of the attack suite: the e2e suite's real collector, agent and upstream.

Every attack runs as ``boundary-audit run -- python -c ATTACK`` in a real
subprocess against a real agent and collector; the pieces come from
:mod:`tests.e2e.helpers` and :mod:`tests.attacks.helpers`.
"""

from __future__ import annotations

from tests.e2e.conftest import (
    agent_process,
    agent_token,
    collector_process,
    make_agent_process,
    upstream,
)

__all__ = ["agent_process", "agent_token", "collector_process", "make_agent_process", "upstream"]

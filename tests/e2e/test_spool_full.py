"""The agent's own bound: a long collector outage fills the spool.

Batches beyond the bound are refused and counted (``spool_full``), the count
reaches the collector once it is back, and per session stored + dropped == made.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from boundary_audit.agent.config import DROP_REPORT_HEADROOM_BYTES
from tests.support import eventually

from .helpers import (
    DELIVERY_TIMEOUT_S,
    POLL_S,
    AgentFactory,
    CollectorProcess,
    start_client,
    wait_until_accounted,
)

pytestmark = pytest.mark.timeout(300)

#: Requests of the confined command: their events need several times the spool bound.
REQUESTS = 3000
#: The spool bound in payload bytes: a fraction of what REQUESTS produce (~100
#: bytes an event), so most of the outage's batches must be refused.
SPOOL_MAX_BYTES = 64 * 1024


def test_a_full_spool_refuses_counts_and_reports_never_loses_silently(
    tmp_path: Path,
    upstream: int,
    collector_process: CollectorProcess,
    make_agent_process: AgentFactory,
) -> None:
    collector_process.stop()
    agent = make_agent_process("--spool-max-bytes", str(SPOOL_MAX_BYTES))
    agent.start()
    client = start_client(tmp_path, agent.socket_path, upstream, "s0", REQUESTS)
    result = client.finish()
    assert (result.made, result.summary["events"]) == (REQUESTS, REQUESTS)
    assert (result.summary["dropped"], result.summary["undelivered"]) == (0, 0)
    eventually(
        lambda: agent.metric("boundary_audit_agent_events_received_total") >= REQUESTS,
        "the agent to account for every event",
        within=DELIVERY_TIMEOUT_S,
        interval=POLL_S,
    )
    refused = agent.metric("boundary_audit_agent_dropped_events_total", reason="spool_full")
    assert refused > 0
    # Batches stay under the bound; drop reports may use the reserved headroom.
    spooled = agent.metric("boundary_audit_agent_spool_bytes")
    assert spooled <= SPOOL_MAX_BYTES + DROP_REPORT_HEADROOM_BYTES
    collector_process.start()

    wait_until_accounted(collector_process, [result], with_dropped=True)
    session = collector_process.session(result.session_id)
    assert session is not None
    assert session["dropped"] == refused
    assert session["dropped_by_reason"] == {"spool_full": refused}
    assert session["allowed"] + session["denied"] + session["dropped"] == REQUESTS

"""The agent's own bound: a long collector outage fills the spool.

Batches beyond the bound are refused and counted (``spool_full``), the count
reaches the collector once it is back, and per session stored + dropped == made.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from boundary_audit.agent.config import DROP_REPORT_HEADROOM_BYTES

from .conftest import AgentProcess, Collector, start_client, wait_for

pytestmark = pytest.mark.timeout(300)

#: Requests of the confined command: their events need several times the spool bound.
REQUESTS = 3000
#: The spool bound in payload bytes: a fraction of what REQUESTS produce (~100
#: bytes an event), so most of the outage's batches must be refused.
SPOOL_MAX_BYTES = 64 * 1024


def test_a_full_spool_refuses_counts_and_reports_never_loses_silently(
    tmp_path: Path, sock_dir: Path, upstream: int, collector: Collector, agent_token: str
) -> None:
    collector.stop()
    agent = AgentProcess(
        tmp_path,
        sock_dir,
        collector.url,
        agent_token,
        "--spool-max-bytes",
        str(SPOOL_MAX_BYTES),
    )
    agent.start()
    try:
        client = start_client(tmp_path, agent.socket_path, upstream, "s0", REQUESTS)
        result = client.finish()
        assert (result.made, result.summary["events"]) == (REQUESTS, REQUESTS)
        assert (result.summary["dropped"], result.summary["undelivered"]) == (0, 0)
        wait_for(
            "the agent to account for every event",
            lambda: agent.metric("boundary_audit_agent_events_received_total") >= REQUESTS,
        )
        refused = agent.metric("boundary_audit_agent_dropped_events_total", reason="spool_full")
        assert refused > 0
        # Batches stay under the bound; drop reports may use the reserved headroom.
        spooled = agent.metric("boundary_audit_agent_spool_bytes")
        assert spooled <= SPOOL_MAX_BYTES + DROP_REPORT_HEADROOM_BYTES
        collector.start()

        def accounted() -> dict[str, object] | None:
            s = collector.session(result.session_id)
            if s is None or s["allowed"] + s["denied"] + s["dropped"] < REQUESTS:
                return None
            return s

        session = wait_for("stored + dropped to account for every request", accounted)
        assert session["dropped"] == refused
        assert session["dropped_by_reason"] == {"spool_full": refused}
        assert session["allowed"] + session["denied"] + session["dropped"] == REQUESTS
    finally:
        if agent.alive():
            agent.stop()

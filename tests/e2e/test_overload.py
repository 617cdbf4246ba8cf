"""Overload: senders far faster than a stalled (SIGSTOPped) agent_process.

Memory stays bounded everywhere, the senders drop and count, the counts travel
through the agent to the collector, and per session stored + dropped == made.
"""

from __future__ import annotations

import re
import threading
from pathlib import Path

import httpx
import pytest

from tests.support import eventually
from tests.support.processes import run_cli
from tests.support.services import AgentProcess

from .helpers import (
    DELIVERY_TIMEOUT_S,
    POLL_S,
    Client,
    CollectorProcess,
    start_client,
    wait_until_accounted,
)

pytestmark = pytest.mark.timeout(300)

#: Confined commands hammering the stalled agent at once.
CLIENTS = 2
#: Requests per command: several times what the sender's queue plus the
#: socket buffers can hold, so most of them have to be dropped.
REQUESTS_PER_CLIENT = 3000
#: The sender queue, far below the default, so the overload shows in seconds.
QUEUE_SIZE = 64
#: Peak resident memory allowed to any process: these are Python processes of
#: ~60 MiB here; an unbounded queue, spool buffer or request body would grow past it.
MAX_RSS_BYTES = 200 * 1024 * 1024
#: Seconds between memory samples.
SAMPLE_INTERVAL_S = 0.2


class PeakRss:
    """Samples the RSS of the processes on a thread until stopped; keeps each peak."""

    def __init__(self, named: dict[str, Client | AgentProcess | CollectorProcess]) -> None:
        self.named = named
        self.peaks = dict.fromkeys(named, 0)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(SAMPLE_INTERVAL_S):
            for name, proc in self.named.items():
                self.peaks[name] = max(self.peaks[name], proc.rss())

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def test_a_stalled_agent_means_counted_drops_never_silent_loss_or_growth(
    tmp_path: Path, upstream: int, collector_process: CollectorProcess, agent_process: AgentProcess
) -> None:
    agent_process.pause()
    clients = [
        start_client(
            tmp_path,
            agent_process.socket_path,
            upstream,
            f"o{i}",
            REQUESTS_PER_CLIENT,
            extra=("--audit-queue-size", str(QUEUE_SIZE)),
        )
        for i in range(CLIENTS)
    ]
    watched: dict[str, Client | AgentProcess | CollectorProcess] = {c.name: c for c in clients}
    watched |= {"agent": agent_process, "collector": collector_process}
    with PeakRss(watched) as rss:
        eventually(
            lambda: all(c.progress() == c.n for c in clients),
            "the clients to make every request",
            within=DELIVERY_TIMEOUT_S,
            interval=POLL_S,
        )
        agent_process.resume()
        results = [c.finish() for c in clients]
    for name, peak in rss.peaks.items():
        assert 0 < peak < MAX_RSS_BYTES, (name, peak)

    for r in results:
        assert r.made == REQUESTS_PER_CLIENT
        assert r.summary["events"] == r.made, r.summary
        assert r.summary["undelivered"] == 0, r.summary
        # The agent was stopped far longer than the queue lasts: drops happened.
        assert r.summary["dropped"] > 0, r.summary

    sessions = wait_until_accounted(collector_process, results, with_dropped=True)
    total_dropped = sum(int(r.summary["dropped"]) for r in results)
    assert (
        agent_process.metric(
            "boundary_audit_agent_dropped_events_total", reason="boundary_channel_full"
        )
        == total_dropped
    )
    for r in results:
        row = sessions[r.session_id]
        # Nothing lost silently: what was not stored was reported dropped, exactly.
        assert row["dropped"] == r.summary["dropped"], row
        assert row["allowed"] + row["denied"] + row["dropped"] == r.made, row
        # The UI's session page shows the same count.
        page = httpx.get(f"{collector_process.url}/sessions/{r.session_id}", timeout=30)
        assert page.status_code == 200
        shown = re.search(r"<dt>Dropped</dt>\s*<dd>(\d+)", page.text)
        assert shown is not None, page.text[:2000]
        assert int(shown.group(1)) == r.summary["dropped"]
        assert "boundary_channel_full" in page.text
    # The CLI's table view names the drop too (what an operator sees first).
    table = run_cli("sessions", "--collector-url", collector_process.url).stdout
    for r in results:
        assert f"e2e-{r.name}" in table
        assert str(r.summary["dropped"]) in table

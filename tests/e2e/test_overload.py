"""Overload: senders far faster than a stalled (SIGSTOPped) agent.

Memory stays bounded everywhere, the senders drop and count, the counts travel
through the agent to the collector, and per session stored + dropped == made.
"""

from __future__ import annotations

import re
import threading
from pathlib import Path

import httpx
import pytest

from .conftest import AgentProcess, Client, Collector, cli, start_client, wait_for

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

    def __init__(self, named: dict[str, Client | AgentProcess | Collector]) -> None:
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
    tmp_path: Path, upstream: int, collector: Collector, agent: AgentProcess
) -> None:
    agent.pause()
    clients = [
        start_client(
            tmp_path,
            agent.socket_path,
            upstream,
            f"o{i}",
            REQUESTS_PER_CLIENT,
            extra=("--audit-queue-size", str(QUEUE_SIZE)),
        )
        for i in range(CLIENTS)
    ]
    watched: dict[str, Client | AgentProcess | Collector] = {c.name: c for c in clients}
    watched |= {"agent": agent, "collector": collector}
    with PeakRss(watched) as rss:
        wait_for(
            "the clients to make every request",
            lambda: all(c.progress() == c.n for c in clients),
        )
        agent.resume()
        results = [c.finish() for c in clients]
    for name, peak in rss.peaks.items():
        assert 0 < peak < MAX_RSS_BYTES, (name, peak)

    for r in results:
        assert r.made == REQUESTS_PER_CLIENT
        assert r.summary["events"] == r.made, r.summary
        assert r.summary["undelivered"] == 0, r.summary
        # The agent was stopped far longer than the queue lasts: drops happened.
        assert r.summary["dropped"] > 0, r.summary

    def accounted() -> bool:
        for r in results:
            s = collector.session(r.session_id)
            if s is None or s["allowed"] + s["denied"] + s["dropped"] < r.made:
                return False
        return True

    wait_for("stored + dropped to account for every request", accounted)
    total_dropped = sum(int(r.summary["dropped"]) for r in results)
    assert (
        agent.metric("boundary_audit_agent_dropped_events_total", reason="boundary_channel_full")
        == total_dropped
    )
    sessions = collector.sessions_cli()
    for r in results:
        row = sessions[r.session_id]
        # Nothing lost silently: what was not stored was reported dropped, exactly.
        assert row["dropped"] == r.summary["dropped"], row
        assert row["allowed"] + row["denied"] + row["dropped"] == r.made, row
        # The UI's session page shows the same count.
        page = httpx.get(f"{collector.url}/sessions/{r.session_id}", timeout=30)
        assert page.status_code == 200
        shown = re.search(r"<dt>Dropped</dt>\s*<dd>(\d+)", page.text)
        assert shown is not None, page.text[:2000]
        assert int(shown.group(1)) == r.summary["dropped"]
        assert "boundary_channel_full" in page.text
    # The CLI's table view names the drop too (what an operator sees first).
    table = cli("sessions", "--collector-url", collector.url)
    for r in results:
        assert f"e2e-{r.name}" in table
        assert str(r.summary["dropped"]) in table

"""End to end: a real collector process exports 100k stored events across restarts.

SIGTERM: the request in flight finishes and its cursor is committed, so
nothing is sent twice. SIGKILL while a batch is accepted but not yet
answered: that batch is sent again after the restart (at-least-once after a
crash), and nothing is missing.
"""

from __future__ import annotations

import collections
import signal
import uuid
from pathlib import Path

import httpx
import pytest

from boundary_audit.collector import open_storage
from boundary_audit.collector.ingest import parse_ingest_request
from tests.support import eventually

from .helpers import HTTP_POLL_INTERVAL_S, CollectorProcess, make_request, start_collector
from .otlp_receiver import Receiver

pytestmark = pytest.mark.timeout(600)

#: What the issue asks for: 100k events through a restart (SIGTERM).
EVENTS = 100_000
#: The SIGKILL case shows the same with a fifth of the store: only the one
#: batch in flight may come twice, whatever the size (and CI time is shared).
KILL_EVENTS = 20_000
#: Events per stored batch (and session) of the prefill.
PER_SESSION = 1000
#: Records per export request: 100 requests for the whole store.
BATCH = 1000
#: Requests answered before the one held across the stop (a fifth of the store).
HOLD_AFTER = {EVENTS: 20, KILL_EVENTS: 4}
#: Seconds the whole export may take on a loaded two-core machine.
EXPORT_TIMEOUT_S = 300.0


def _prefill(db_url: str, events: int) -> set[tuple[str, int]]:
    storage = open_storage(db_url)
    try:
        ident = storage.authenticate(storage.create_token("laptop"))
        assert ident is not None
        keys: set[tuple[str, int]] = set()
        for _ in range(events // PER_SESSION):
            sid = str(uuid.uuid4())
            request = make_request(sid, range(PER_SESSION))
            storage.ingest(parse_ingest_request(request.SerializeToString()), ident)
            keys.update((sid, s) for s in range(PER_SESSION))
        drop = make_request(sid, [])
        drop.drops.add(report_id="rep-1", session_id=sid, source="agent").dropped["x"] = 2
        storage.ingest(parse_ingest_request(drop.SerializeToString()), ident)
    finally:
        storage.close()
    return keys


def _collector(db_url: str, log: Path, receiver: Receiver) -> CollectorProcess:
    return start_collector(
        db_url,
        log,
        "--otlp-endpoint",
        receiver.url,
        "--otlp-header",
        "X-Token=secret",
        "--otlp-batch-size",
        str(BATCH),
        "--no-event-log",
    )


def _lag(collector: CollectorProcess) -> float | None:
    text = httpx.get(collector.url + "/metrics").text
    for line in text.splitlines():
        if line.startswith("boundary_audit_collector_otlp_lag_events "):
            return float(line.split()[1])
    return None


@pytest.mark.parametrize(
    ("sig", "events"),
    [(signal.SIGTERM, EVENTS), (signal.SIGKILL, KILL_EVENTS)],
    ids=["sigterm-100k", "sigkill-20k"],
)
def test_events_across_a_restart(tmp_path: Path, sig: signal.Signals, events: int) -> None:
    db_url = f"sqlite:///{tmp_path / 'collector.db'}"
    keys = _prefill(db_url, events)
    hold_after = HOLD_AFTER[events]
    with Receiver() as receiver:
        receiver.hold_after = hold_after
        first = _collector(db_url, tmp_path / "first.log", receiver)
        try:
            eventually(receiver.held.is_set, "a request held mid-export", within=EXPORT_TIMEOUT_S)
            first.proc.send_signal(sig)
            if sig == signal.SIGKILL:
                first.proc.wait()
            receiver.release.set()
            assert first.stop() == (0 if sig == signal.SIGTERM else -signal.SIGKILL)
        finally:
            first.stop()
        before = receiver.event_keys()
        assert max(before.values()) == 1
        # The held batch was kept too; after SIGTERM the exporter may finish
        # more batches while the server drains, never a part of one.
        assert len(before) >= (hold_after + 1) * BATCH
        assert len(before) % BATCH == 0
        receiver.hold_after = None
        second = _collector(db_url, tmp_path / "second.log", receiver)
        try:
            eventually(lambda: receiver.distinct() == events, "all events", within=EXPORT_TIMEOUT_S)
            eventually(lambda: _lag(second) == 0, "no export lag", interval=HTTP_POLL_INTERVAL_S)
        finally:
            assert second.stop() == 0
    got = receiver.event_keys()
    assert set(got) == keys  # none missing
    doubled = collections.Counter(n for n in got.values() if n > 1)
    if sig == signal.SIGTERM:
        assert not doubled  # the request in flight finished and its cursor was committed
    else:
        assert doubled == {2: BATCH}  # only the batch accepted but never acknowledged
    assert [d["boundary.drop.count"] for d in receiver.drops()] == [2]
    assert {h["x-token"] for h in receiver.headers} == {"secret"}

"""The OTLP exporter against a real local receiver, on SQLite and PostgreSQL."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceResponse
from prometheus_client import CollectorRegistry

from boundary_audit.collector import Storage
from boundary_audit.collector.ingest import parse_ingest_request
from boundary_audit.collector.otlp import Exporter, OtlpMetrics, OtlpOptions
from boundary_audit.collector.otlp.options import collect_headers
from boundary_audit.wire import IngestRequest
from tests.support import eventually
from tests.support.processes import run_cli

from .helpers import make_request
from .otlp_receiver import Receiver

pytestmark = pytest.mark.timeout(120)

#: Small batches, so a few hundred events take several requests.
BATCH = 100


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver() as r:
        yield r


def _ingest(storage: Storage, request: IngestRequest) -> None:
    token = storage.create_token("laptop")
    ident = storage.authenticate(token)
    assert ident is not None
    storage.ingest(parse_ingest_request(request.SerializeToString()), ident)


def _exporter(storage: Storage, receiver: Receiver, **kw: object) -> Exporter:
    options = OtlpOptions(endpoint=receiver.url, batch_size=BATCH, **kw)  # type: ignore[arg-type]
    return Exporter(storage, options, OtlpMetrics(CollectorRegistry()))


def _drain(exporter: Exporter, max_cycles: int = 1000) -> int:
    """Run cycles (without their waits) until one finds nothing to send; records sent."""
    sent = 0
    for _ in range(max_cycles):
        cycle = exporter.run_once()
        sent += cycle.sent
        if cycle.sent == 0 and cycle.delay is None:
            return sent
    raise AssertionError("the exporter never caught up")


def _value(exporter: Exporter, name: str, **labels: str) -> float:
    got = exporter.metrics.registry.get_sample_value(
        "boundary_audit_collector_otlp_" + name, labels
    )
    return float(got or 0.0)


def test_every_event_and_drop_once_and_resumes_after_restart(
    storage: Storage, receiver: Receiver
) -> None:
    sid = str(uuid.uuid4())
    request = make_request(sid, range(250))
    request.drops.add(report_id="rep-1", session_id=sid, source="agent").dropped["spool_full"] = 3
    _ingest(storage, request)
    first = _exporter(storage, receiver, headers={"Authorization": "Bearer t"})
    assert _drain(first) == 251
    assert receiver.event_keys() == {(sid, s): 1 for s in range(250)}
    assert [d["boundary.drop.count"] for d in receiver.drops()] == [3]
    assert receiver.headers[0]["authorization"] == "Bearer t"
    assert _value(first, "lag_events") == 0
    _ingest(storage, make_request(sid, range(250, 300)))
    again = _exporter(storage, receiver)  # a restarted collector: the cursor is in the store
    assert _drain(again) == 50
    assert receiver.event_keys() == {(sid, s): 1 for s in range(300)}
    assert len(receiver.drops()) == 1


def test_failures_are_retried_with_backoff_until_delivered(
    storage: Storage, receiver: Receiver
) -> None:
    sid = str(uuid.uuid4())
    _ingest(storage, make_request(sid, range(150)))
    receiver.script(500, (429, {"Retry-After": "0"}, b""), 503)
    exporter = _exporter(storage, receiver)
    delays = [exporter.run_once().delay for _ in range(3)]
    assert all(d is not None for d in delays)
    assert _drain(exporter) == 150
    assert receiver.event_keys() == {(sid, s): 1 for s in range(150)}
    assert _value(exporter, "request_failures_total", kind="http_500") == 1
    assert _value(exporter, "request_failures_total", kind="http_429") == 1
    assert exporter.backoff.failures == 0


def test_receiver_down_then_up(storage: Storage) -> None:
    sid = str(uuid.uuid4())
    _ingest(storage, make_request(sid, range(20)))
    with Receiver() as gone:
        url = gone.url
    exporter = Exporter(storage, OtlpOptions(endpoint=url), OtlpMetrics(CollectorRegistry()))
    assert exporter.run_once().delay is not None  # nobody listens: retried later
    assert _value(exporter, "request_failures_total", kind="network") == 1
    with Receiver() as back:
        exporter.options = OtlpOptions(endpoint=back.url)
        assert _drain(exporter) == 20
        assert back.event_keys() == {(sid, s): 1 for s in range(20)}


def test_bad_request_is_logged_counted_and_skipped(storage: Storage, receiver: Receiver) -> None:
    sid = str(uuid.uuid4())
    _ingest(storage, make_request(sid, range(150)))
    receiver.script(400)
    exporter = _exporter(storage, receiver)
    assert _drain(exporter) == 150  # the cursor moved past the refused batch
    assert _value(exporter, "records_rejected_total", reason="http_400") == BATCH
    assert len(receiver.event_keys()) == 150 - BATCH
    assert _value(exporter, "records_exported_total", kind="event") == 150 - BATCH


def test_partial_success_and_too_large(storage: Storage, receiver: Receiver) -> None:
    sid = str(uuid.uuid4())
    _ingest(storage, make_request(sid, range(150)))
    partial = ExportLogsServiceResponse()
    partial.partial_success.rejected_log_records = 2
    partial.partial_success.error_message = "two bad"
    receiver.script(413, (200, {}, partial.SerializeToString()))
    exporter = _exporter(storage, receiver)
    assert _drain(exporter) == 150
    assert exporter.batch_size == BATCH // 2
    assert _value(exporter, "records_rejected_total", reason="partial_success") == 2
    assert receiver.event_keys() == {(sid, s): 1 for s in range(150)}


@pytest.mark.postgres
def test_postgres_event_committed_late_with_a_lower_id_is_not_skipped(
    storage: Storage, receiver: Receiver
) -> None:
    if storage.backend != "postgresql":
        pytest.skip("SQLite commits ids in order")
    late, early = str(uuid.uuid4()), str(uuid.uuid4())
    exporter = _exporter(storage, receiver)
    exporter.run_once()  # migrated, cursor row made
    done = threading.Event()

    def one_cycle() -> None:
        exporter.run_once()
        done.set()

    with storage.transaction() as tx:
        # Draws a lower id than the ingest below, and commits after it.
        tx.execute(
            "INSERT INTO events (session_id, sequence_number, time_ns, received_ns, allowed,"
            " method, url, host, matched_rule) VALUES (?, 0, 1, 1, ?, 'GET', 'http://h/', 'h', '')",
            (late, True),
        )
        _ingest(storage, make_request(early, range(5)))
        worker = threading.Thread(target=one_cycle)
        worker.start()
        # Commit only once the cycle has either shipped or waits for this
        # transaction: without the wait it would ship the early events and
        # move its cursor past the late one's id.
        eventually(lambda: done.is_set() or _waits_for_lock(storage), "the cycle to go or wait")
    worker.join(60)
    assert done.is_set()
    _drain(exporter)
    assert receiver.event_keys() == {(late, 0): 1, **{(early, s): 1 for s in range(5)}}


def _waits_for_lock(storage: Storage) -> bool:
    rows = storage.query(
        "SELECT COUNT(*) FROM pg_locks WHERE NOT granted AND relation = 'events'::regclass"
    )
    return int(rows[0][0]) > 0


def test_headers_from_file_env_and_flags(tmp_path: Path) -> None:
    path = tmp_path / "h"
    path.write_text("# token\nX-Key = secret\n")
    got = collect_headers(["X-Flag=1"], "X-Env=2, X-Key=override", str(path))
    assert got == {"X-Key": "override", "X-Env": "2", "X-Flag": "1"}
    with pytest.raises(ValueError, match="NAME=VALUE"):
        collect_headers(["nope"], None, None)


def test_retention_before_export_is_counted_and_reused_ids_are_shipped(
    storage: Storage, receiver: Receiver
) -> None:
    first, second = str(uuid.uuid4()), str(uuid.uuid4())
    exporter = _exporter(storage, receiver)
    _ingest(storage, make_request(first, range(30)))
    assert _drain(exporter) == 30
    _ingest(storage, make_request(first, range(30, 40)))
    cutoff = time.time_ns() + 1  # everything stored so far is past retention
    exporter.before_prune(cutoff)
    assert _value(exporter, "pruned_unexported_total") == 10
    storage.prune(cutoff)
    # SQLite gives the next events ids from 1 again (the table is empty).
    _ingest(storage, make_request(second, range(5)))
    assert _drain(exporter) == 5
    assert {k for k in receiver.event_keys() if k[0] == second} == {(second, s) for s in range(5)}


def test_collector_refuses_a_bad_endpoint(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'c.db'}"
    result = run_cli("collector", "--db", db, "--otlp-endpoint", "ftp://siem/v1/logs", check=False)
    assert result.returncode == 2
    assert "is not an http(s) URL" in result.stderr

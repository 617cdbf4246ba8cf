from __future__ import annotations

import io
import json

import pytest

from boundary_audit.auditor import (
    AuditEvent,
    Auditor,
    LogAuditor,
    MemoryAuditor,
    MultiAuditor,
    SocketAuditor,
)
from tests.receiver import Receiver

HOSTILE = 'https://evil.example/a\n{"decision": "allow"}\r\x1b[2J\u2028"onerror='


def test_log_auditor_json_line_per_event_with_escaping() -> None:
    out = io.StringIO()
    log = LogAuditor(out, session_id="s-1")
    log.audit(AuditEvent("GET", HOSTILE, "evil.example", False, None))
    log.audit(AuditEvent("POST", "https://ok.example/", "ok.example", True, "domain=ok.example"))
    lines = out.getvalue().splitlines()
    assert len(lines) == 2
    first, second = (json.loads(x) for x in lines)
    assert first["url"] == HOSTILE  # escaped on the line, exact once parsed
    assert first["decision"] == "deny"
    assert first["level"] == "warning"
    assert first["rule"] is None
    assert first["session_id"] == "s-1"
    assert (second["decision"], second["rule"], second["sequence_number"]) == (
        "allow",
        "domain=ok.example",
        1,
    )
    assert all(ch.isprintable() for ch in out.getvalue().replace("\n", ""))


def test_log_auditor_logfmt_and_level_filter() -> None:
    out = io.StringIO()
    log = LogAuditor(out, fmt="logfmt", level="warning")
    log.audit(AuditEvent("GET", "https://ok.example/", "ok.example", True, "domain=ok.example"))
    log.audit(AuditEvent("GET", HOSTILE, "evil.example", False))
    lines = out.getvalue().splitlines()
    assert len(lines) == 1  # the allowed (info) event is below the level
    assert "decision=deny" in lines[0]
    assert "\x1b" not in lines[0]
    assert 'url="https://evil.example/a\\n' in lines[0]
    with pytest.raises(ValueError, match="level"):
        LogAuditor(out, level="loud")


def test_log_auditor_survives_a_closed_stream() -> None:
    out = io.StringIO()
    log = LogAuditor(out)
    out.close()
    assert log.audit(AuditEvent("GET", "http://a/", "a", True, "r")) == 0
    assert log.write_errors == 1


class Exploding:
    def audit(self, event: AuditEvent) -> int:
        raise RuntimeError("boom")

    def close(self, timeout: float | None = None) -> None:
        raise RuntimeError("boom on close")


def test_multi_auditor_fans_out_one_identity(receiver: Receiver) -> None:
    out = io.StringIO()
    rec = MemoryAuditor()
    sock = SocketAuditor(receiver.path, batch_size=1)
    children: list[Auditor] = [LogAuditor(out), Exploding(), sock, rec]
    with MultiAuditor(children) as multi:
        for i in range(3):
            assert multi.audit(AuditEvent("GET", f"http://a/{i}", "a", True, "r")) == i
    assert [e.sequence_number for e in rec.events] == [0, 1, 2]
    assert len({e.time_ns for e in rec.events}) == 3
    assert multi.errors == [0, 3, 0, 0]
    logged = [json.loads(x)["sequence_number"] for x in out.getvalue().splitlines()]
    assert logged == [0, 1, 2]
    assert receiver.wait_for(lambda: receiver.sequence_numbers() == [0, 1, 2])
    sent_times = [
        log.time.seconds * 10**9 + log.time.nanos
        for b in receiver.log_batches()
        for log in b.logs.logs
    ]
    assert sent_times == [e.time_ns for e in rec.events]


def test_prometheus_view_of_the_counters(receiver: Receiver) -> None:
    from prometheus_client import CollectorRegistry, generate_latest

    from boundary_audit.auditor.metrics import register_auditor_metrics

    registry = CollectorRegistry()
    a = SocketAuditor(receiver.path, batch_size=1, queue_size=2, spill_max_bytes=0)
    register_auditor_metrics(a, registry)
    for i in range(3):
        a.audit(AuditEvent("GET", f"http://a/{i}", "a", True, "r"))
    a.flush(5)
    text = generate_latest(registry).decode()
    s = a.stats
    assert f'boundary_audit_auditor_events_queued_total{{session_id="{a.session_id}"}} ' in text
    assert (
        f'boundary_audit_auditor_events_sent_total{{session_id="{a.session_id}"}} {float(s.sent)}'
        in text
    )
    dropped_line = (
        "boundary_audit_auditor_events_dropped_total"
        f'{{reason="channel_full",session_id="{a.session_id}"}} '
        f"{float(s.dropped['channel_full'])}"
    )
    assert dropped_line in text
    a.close()
    after = generate_latest(registry).decode()
    delivered = f'boundary_audit_auditor_events_delivered_total{{session_id="{a.session_id}"}} '
    assert f"{delivered}{float(a.stats.delivered)}" in after
    assert a.stats.delivered == a.stats.sent  # acknowledged by the receiver, all of them

"""A realistic session for the web UI tests: several hosts, denials, a long URL, 45 minutes."""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from boundary_audit.collector import Storage
from boundary_audit.collector.model import NS_PER_SECOND
from boundary_audit.wire import IngestRequest

from .helpers import T0, add_record, post_ingest

#: Events in the realistic session: more than one UI page (200) many times over.
EVENTS = 1_200
#: Its span by event time: 45 minutes, sent in batches that all arrive within seconds.
SPAN_NS = 45 * 60 * NS_PER_SECOND
#: Events per ingest request (well under the request size limit).
BATCH = 300
#: Hosts, and which of them the rules deny.
ALLOWED_HOSTS = ("api.anthropic.com", "pypi.example.org", "github.com", "files.example.net")
DENIED_HOSTS = ("exfil.evil.test", "telemetry.example.io")
LONG_URL = (
    "https://exfil.evil.test/upload/" + "a1b2c3d4e5f6" * 20 + "?token=" + "x" * 120 + "&part=7"
)


def host_and_decision(seq: int) -> tuple[str, bool]:
    if seq % 10 == 3:
        return DENIED_HOSTS[seq // 10 % len(DENIED_HOSTS)], False
    return ALLOWED_HOSTS[seq % len(ALLOWED_HOSTS)], True


def url_of(seq: int) -> str:
    host, _ = host_and_decision(seq)
    if seq == 503:
        return LONG_URL
    return f"https://{host}/v1/items/{seq}?page={seq % 7}"


def time_of(seq: int, start_ns: int = T0) -> int:
    return start_ns + SPAN_NS * seq // (EVENTS - 1)


def realistic_request(
    session_id: str, seqs: Sequence[int], process: str = "claude-code"
) -> IngestRequest:
    request = IngestRequest(batch_id=str(uuid.uuid4()))
    report = request.logs.add(session_id=session_id, confined_process_name=process)
    for seq in seqs:
        host, allowed = host_and_decision(seq)
        log = report.logs.add(allowed=allowed, sequence_number=seq)
        log.time.FromNanoseconds(time_of(seq))
        log.http_request.method = "POST" if not allowed else "GET"
        log.http_request.url = url_of(seq)
        if allowed:
            log.http_request.matched_rule = f"domain={host}"
    return request


def seed_realistic(base_url: str, storage: Storage) -> dict[str, str]:
    """Store the realistic session and two small ones; their ids by role."""
    ids = {"big": str(uuid.uuid4()), "clean": str(uuid.uuid4()), "lossy": str(uuid.uuid4())}
    token = storage.create_token("ci-agent", "repo-a")
    other = storage.create_token("laptop", "repo-b")
    for start in range(0, EVENTS, BATCH):
        seqs = range(start, min(start + BATCH, EVENTS))
        response = post_ingest(base_url, token, realistic_request(ids["big"], seqs))
        assert response.status_code == 200, response.text
    sealed = IngestRequest()
    add_record(sealed, ids["big"], opened=True, seal={"events_made": EVENTS})
    assert post_ingest(base_url, token, sealed).status_code == 200
    # All allowed, from another agent and process.
    clean = realistic_request(ids["clean"], range(0, 3), process="aider")
    for log in clean.logs[0].logs:
        log.allowed = True
    assert post_ingest(base_url, other, clean).status_code == 200
    # Numbers 0-4 and 9: four missing, so it shows loss.
    lossy = realistic_request(ids["lossy"], [0, 1, 2, 3, 4, 9], process="aider")
    assert post_ingest(base_url, other, lossy).status_code == 200
    return ids

"""``verify --db`` and ``export``/``verify --bundle`` end to end: a real collector process
ingests real IngestRequests, stops (signing a checkpoint), then its database is edited
behind its back (sqlite3 / psycopg) and every edit is caught and named."""

# ruff: noqa: S608 - the edits are SQL built from session ids these tests made

from __future__ import annotations

import json
import sqlite3
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from boundary_audit.evidence.leaves import (
    FLAG_AT,
    FLAG_CHAINED,
    FLAG_NO_DIGEST,
    LeafKind,
    parse_leaf,
)
from boundary_audit.wire import IngestRequest
from tests.support.processes import run_cli

from .helpers import add_record, chain_logs, make_request, post_ingest, start_collector

pytestmark = pytest.mark.timeout(180)


@dataclass
class Store:
    db: str
    key: Path
    public_key: Path
    chained: str  # sealed, chained, two batches and a drop report
    plain: str  # a sender that does not chain (Coder's boundary): no seal
    small: str  # sealed and chained, to be deleted whole

    def verify(self, *extra: str) -> tuple[int, list[dict[str, Any]], str]:
        result = run_cli(
            "verify", "--db", self.db, "--public-key", str(self.public_key), "--json", *extra,
            check=False,
        )  # fmt: skip
        assert result.returncode in (0, 1), result.stderr
        report = json.loads(result.stdout)
        return result.returncode, report["findings"], result.stdout

    def edit(self, *statements: str) -> None:
        if self.db.startswith("sqlite:///"):
            with sqlite3.connect(self.db.removeprefix("sqlite:///")) as conn:
                for statement in statements:
                    conn.execute(statement)
        else:
            import psycopg

            with psycopg.connect(self.db, autocommit=True) as conn:
                for statement in statements:
                    conn.execute(statement)


def _post(url: str, token: str, request: IngestRequest) -> None:
    response = post_ingest(url, token, request)
    assert response.status_code == 200, response.text


def build_store(db: str, tmp_path: Path) -> Store:
    key = tmp_path / "signing.key"
    token = run_cli("tokens", "create", "--agent", "agent-1", "--db", db).stdout.strip()
    proc = start_collector(db, tmp_path / "collector.log", "--signing-key", str(key))
    chained, plain, small = (str(uuid.uuid4()) for _ in range(3))
    try:
        first = make_request(chained, range(10), url="https://example.com/{seq}")
        head = chain_logs(first, chained)
        _post(proc.url, token, first)
        second = make_request(chained, range(10, 20), url="https://example.com/{seq}")
        head = chain_logs(second, chained, head)
        second.drops.add(report_id="d1", session_id=chained, source="agent").dropped[
            "agent_buffer_full"
        ] = 2
        seal = {"events_made": 22, "events_sent": 20, "chain_head": head, "chain_count": 20}
        add_record(second, chained, seal={**seal, "dropped": {"queue_full": 2}})
        _post(proc.url, token, second)
        _post(proc.url, token, make_request(plain, range(5)))
        third = make_request(small, range(3))
        add_record(third, small, seal={"events_made": 3, "events_sent": 3,
                   "chain_head": chain_logs(third, small), "chain_count": 3})  # fmt: skip
        _post(proc.url, token, third)
        chain = httpx.get(f"{proc.url}/api/v1/sessions/{chained}").json()["chain"]
        assert chain["state"] == "verified"
    finally:
        assert proc.stop() == 0
    # Stopping signed a checkpoint of everything stored.
    signed = [line for line in proc.log_lines() if line.get("event") == "checkpoint_signed"]
    assert signed, proc.log_path.read_text()
    assert key.stat().st_mode & 0o777 == 0o600
    pem = run_cli("collector", "key", "--signing-key", str(key)).stdout
    assert pem.startswith("-----BEGIN PUBLIC KEY-----")
    public = tmp_path / "collector.pub"
    public.write_text(pem)
    return Store(db, key, public, chained, plain, small)


def test_an_untouched_store_verifies(db_url: str, tmp_path: Path) -> None:
    store = build_store(db_url, tmp_path)
    code, findings, _ = store.verify()
    assert code == 0, findings
    kinds = {f["kind"] for f in findings}
    assert kinds <= {"unverified", "unsealed"}  # the plain session: informational
    table = run_cli("verify", "--db", store.db, "--public-key", str(store.public_key)).stdout
    assert "store: INTACT: 28 events in 3 sessions" in table
    one = run_cli("verify", "--db", store.db, "--public-key", str(store.public_key),
                  "--session", store.chained).stdout  # fmt: skip
    assert "INTACT: 20 events in 1 sessions" in one


Edit = Callable[[Store], list[str]]
CASES: dict[str, tuple[Edit, Callable[[Store], set[tuple[str, str | None, int | None]]]]] = {
    "update_url": (
        lambda s: [
            f"UPDATE events SET url = 'https://evil.example/' WHERE session_id = "
            f"'{s.chained}' AND sequence_number = 3"
        ],
        lambda s: {("altered", s.chained, 3), ("chain_broken", s.chained, 3)},
    ),
    "update_digest": (
        lambda s: [
            f"UPDATE events SET chain_digest = X'{'00' * 32}' WHERE session_id = "
            f"'{s.chained}' AND sequence_number = 5"
        ],
        lambda s: {("altered", s.chained, 5), ("chain_broken", s.chained, 5)},
    ),
    "delete_event": (
        lambda s: [f"DELETE FROM events WHERE session_id = '{s.chained}' AND sequence_number = 7"],
        lambda s: {
            ("deleted", s.chained, 7),
            ("chain_broken", s.chained, 8),
            ("counters_altered", s.chained, None),
        },
    ),
    "insert_event": (
        lambda s: [
            "INSERT INTO events (session_id, sequence_number, time_ns, received_ns, allowed,"
            " method, url, host, matched_rule, flags) VALUES"
            f" ('{s.plain}', 99, 1, 1, {'true' if 'postgres' in s.db else 1}, 'GET',"
            " 'https://fake.example/', 'fake.example', '', 0)"
        ],
        lambda s: {("inserted", s.plain, 99), ("counters_altered", s.plain, None)},
    ),
    "delete_session": (
        lambda s: [
            f"DELETE FROM events WHERE session_id = '{s.small}'",
            f"DELETE FROM session_seals WHERE session_id = '{s.small}'",
            f"DELETE FROM sessions WHERE session_id = '{s.small}'",
        ],
        lambda s: (
            {("session_deleted", s.small, None), ("seal_deleted", s.small, None)}
            | {("deleted", s.small, n) for n in range(3)}
        ),
    ),
    "edit_counters": (
        lambda s: [
            f"UPDATE sessions SET seal_events_made = 20, denied_count = 0"
            f" WHERE session_id = '{s.chained}'",
            f"UPDATE session_seals SET events_sent = 19 WHERE session_id = '{s.chained}'",
        ],
        lambda s: {("counters_altered", s.chained, None), ("seal_altered", s.chained, None)},
    ),
    "edit_drop_report": (
        lambda s: ["UPDATE drop_counts SET count = 0"],
        lambda s: {("drop_altered", s.chained, None)},
    ),
    "truncate_log": (
        lambda s: [
            "DELETE FROM log_leaves WHERE leaf_index = (SELECT MAX(leaf_index) FROM log_leaves)"
        ],
        lambda s: {("log_truncated", None, None), ("seal_inserted", s.small, None)},
    ),
    "delete_checkpoints": (
        lambda s: ["DELETE FROM checkpoints"],
        lambda s: {("checkpoint_missing", None, None)},
    ),
}


def test_the_collector_logs_a_chained_session_by_its_chain(tmp_path: Path) -> None:
    """Its events arrived in order with the sender's digests: every entry is chained
    (flag 2, hashed once at ingest); the plain session's are content entries (flag 0)."""
    store = build_store(f"sqlite:///{tmp_path / 'collector.db'}", tmp_path)
    with sqlite3.connect(store.db.removeprefix("sqlite:///")) as conn:
        rows = conn.execute("SELECT leaf FROM log_leaves ORDER BY leaf_index").fetchall()
    flags: dict[str, set[int]] = {}
    for (data,) in rows:
        leaf = parse_leaf(bytes(data))
        if leaf.kind is LeafKind.BATCH:
            flags.setdefault(leaf.session_id, set()).update(e[FLAG_AT] for e in leaf.entries)
    assert flags[store.chained] == flags[store.small] == {FLAG_CHAINED}
    assert flags[store.plain] == {FLAG_NO_DIGEST}
    update = CASES["update_digest"][0](store)
    store.edit(*update)
    code, findings, _ = store.verify("--session", store.chained)
    assert code == 1
    assert [(f["kind"], f["sequence_number"]) for f in findings if f["kind"] == "altered"] == [
        ("altered", 5)
    ]
    assert any("chain digest differs" in f["detail"] for f in findings)


@pytest.mark.parametrize("case", list(CASES))
def test_each_edit_is_caught_and_named(case: str, tmp_path: Path) -> None:
    store = build_store(f"sqlite:///{tmp_path / 'collector.db'}", tmp_path)
    edit, expected = CASES[case]
    store.edit(*edit(store))
    code, findings, _ = store.verify()
    assert code == 1
    named = {(f["kind"], f["session"], f["sequence_number"]) for f in findings}
    assert expected(store) <= named, findings
    failing = {f["kind"] for f in findings} - {"unverified", "unsealed", "not_checkpointed"}
    assert failing == {k for k, _, _ in expected(store)}, findings


@pytest.mark.postgres
@pytest.mark.parametrize("case", ["update_url", "delete_event", "delete_session"])
def test_edits_are_caught_on_postgresql(
    case: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    server = request.getfixturevalue("pg_server")
    store = build_store(server.new_database(), tmp_path)
    edit, expected = CASES[case]
    store.edit(*edit(store))
    code, findings, _ = store.verify()
    assert code == 1
    assert expected(store) <= {(f["kind"], f["session"], f["sequence_number"]) for f in findings}


def test_the_table_report_names_the_event(tmp_path: Path) -> None:
    store = build_store(f"sqlite:///{tmp_path / 'collector.db'}", tmp_path)
    store.edit(f"DELETE FROM events WHERE session_id = '{store.chained}' AND sequence_number = 7")
    result = run_cli("verify", "--db", store.db, "--public-key", str(store.public_key), check=False)
    assert result.returncode == 1
    assert "store: NOT INTACT" in result.stdout
    line = next(x for x in result.stdout.splitlines() if "deleted" in x and " 7 " in x)
    assert store.chained in line.replace("…", "") or store.chained[:8] in line


def test_export_bundle_verifies_offline_and_a_hand_edit_fails(tmp_path: Path) -> None:
    store = build_store(f"sqlite:///{tmp_path / 'collector.db'}", tmp_path)
    out = tmp_path / "bundle.json"
    run_cli("export", "--session", store.chained, "--out", str(out), "--db", store.db)
    ok = run_cli("verify", "--bundle", str(out), "--public-key", str(store.public_key))
    assert "INTACT: 20 events in 1 sessions" in ok.stdout
    bundle = json.loads(out.read_text())
    bundle["events"][4]["url"] = "https://evil.example/"
    out.write_text(json.dumps(bundle))
    bad = run_cli(
        "verify", "--bundle", str(out), "--public-key", str(store.public_key), "--json",
        check=False,
    )  # fmt: skip
    assert bad.returncode == 1
    named = {(f["kind"], f["sequence_number"]) for f in json.loads(bad.stdout)["findings"]}
    assert ("altered", 4) in named
    missing = run_cli("export", "--session", str(uuid.uuid4()), "--out", str(out),
                      "--db", store.db, check=False)  # fmt: skip
    assert missing.returncode == 2
    assert "no session" in missing.stderr
    # Another key: the checkpoint does not verify.
    other = tmp_path / "other.pub"
    other.write_text(run_cli("collector", "key", "--signing-key", str(tmp_path / "o.key")).stdout)
    wrong = run_cli("verify", "--bundle", str(out), "--public-key", str(other), check=False)
    assert wrong.returncode == 1

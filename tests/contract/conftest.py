"""The two ingest endpoints under contract: the real collector and the agent tests' double.

Both live for the whole module (the cases use fresh session and report ids,
so they cannot see each other's data) and accept the same token.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from boundary_audit.collector import AppSettings, CollectorServer, open_storage
from tests.support.doubles import CollectorDouble

from .helpers import Target


def _query(db: Path, sql: str, *params: str) -> set[str | int]:
    conn = sqlite3.connect(db)
    try:
        return {row[0] for row in conn.execute(sql, params)}
    finally:
        conn.close()


#: Where the real collector is expected to keep session records (h-collector
#: adds the table; until then the query finds none).
SESSION_RECORDS_SQL = "SELECT record_id FROM session_records"


def _record_ids(db: Path) -> set[str]:
    try:
        return {str(rid) for rid in _query(db, SESSION_RECORDS_SQL)}
    except sqlite3.OperationalError:  # no such table (yet)
        return set()


@pytest.fixture(scope="module")
def real_collector(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    """The collector's own app, served by uvicorn, on a real SQLite file."""
    db = tmp_path_factory.mktemp("contract") / "collector.db"
    with open_storage(f"sqlite:///{db}") as storage:
        token = storage.create_token("contract-agent", "contract")
        with CollectorServer(storage, AppSettings(require_read_auth=False)) as server:
            yield Target(
                "collector",
                server.url,
                token,
                stored=lambda session: {
                    int(seq)
                    for seq in _query(
                        db, "SELECT sequence_number FROM events WHERE session_id = ?", session
                    )
                },
                drop_report_ids=lambda: {
                    str(rid) for rid in _query(db, "SELECT report_id FROM drop_reports")
                },
                session_record_ids=lambda: _record_ids(db),
            )


@pytest.fixture(scope="module")
def double(real_collector: Target) -> Iterator[Target]:
    """The double, told the same token."""
    with CollectorDouble(token=real_collector.token) as fake:
        yield Target(
            "double",
            fake.url,
            real_collector.token,
            stored=lambda session: set(fake.order(session)),
            drop_report_ids=lambda: {report.report_id for report in fake.drops()},
            session_record_ids=lambda: {r.record_id for r in fake.session_records()},
        )


@pytest.fixture(scope="module")
def targets(real_collector: Target, double: Target) -> list[Target]:
    return [real_collector, double]

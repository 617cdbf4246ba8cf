"""Faults are visible: a database file deleted or replaced, write failures, file modes."""

from __future__ import annotations

import os
import sqlite3
import stat
import uuid
from pathlib import Path

import httpx
import pytest

from boundary_audit.collector import (
    AppSettings,
    CollectorServer,
    StorageUnavailableError,
    parse_ingest_request,
)
from boundary_audit.collector.sqlite import SQLiteStorage

from .helpers import make_request, post_ingest

pytestmark = pytest.mark.timeout(60)


@pytest.mark.parametrize("fault", ["deleted", "replaced"])
def test_a_database_file_gone_from_under_the_collector_gets_503(tmp_path: Path, fault: str) -> None:
    path = tmp_path / "c.db"
    with (
        SQLiteStorage(path) as storage,
        CollectorServer(storage, AppSettings(require_read_auth=False)) as server,
    ):
        storage.migrate()
        token = storage.create_token("a")
        assert post_ingest(server.url, token, make_request()).status_code == 200
        assert httpx.get(server.url + "/healthz").status_code == 200
        path.unlink()
        if fault == "replaced":
            sqlite3.connect(tmp_path / "other.db").close()
            os.rename(tmp_path / "other.db", path)
        response = post_ingest(server.url, token, make_request())
        assert response.status_code == 503
        assert response.headers["Retry-After"]
        health = httpx.get(server.url + "/healthz")
        assert health.status_code == 503
        assert ("deleted" if fault == "deleted" else "replaced") in health.json()["detail"]


def test_database_and_wal_are_private_whatever_the_umask(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        path = tmp_path / "new" / "dir" / "c.db"
        with SQLiteStorage(path) as storage:
            storage.migrate()
            storage.create_token("a")  # a write: the WAL exists now
            for name in ("c.db", "c.db-wal", "c.db-shm"):
                mode = stat.S_IMODE((path.parent / name).stat().st_mode)
                assert mode == 0o600, (name, oct(mode))
        for directory in (path.parent, path.parent.parent):
            assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    finally:
        os.umask(old)


def test_a_write_failure_names_its_real_cause(tmp_path: Path) -> None:
    """A full disk (SQLite's page limit standing in for it) reads SQLITE_FULL, not a rollback."""
    storage = SQLiteStorage(tmp_path / "c.db")
    with storage:
        storage.migrate()
        token = storage.create_token("a")
        ident = storage.authenticate(token)
        assert ident is not None
        pages = storage.query("PRAGMA page_count")[0][0]
        storage._writer.execute(f"PRAGMA max_page_count={pages + 1}")
        big = make_request(str(uuid.uuid4()), range(500), url="https://example.com/" + "x" * 500)
        batch = parse_ingest_request(big.SerializeToString())
        with pytest.raises(StorageUnavailableError, match="SQLITE_FULL") as caught:
            storage.ingest(batch, ident)
        assert "cannot rollback" not in str(caught.value)
        # Nothing half-written, and the storage still works once there is room.
        storage._writer.execute("PRAGMA max_page_count=1073741823")
        assert storage.ingest(batch, ident).stored == 500

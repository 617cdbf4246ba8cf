"""Fixtures: a throwaway PostgreSQL server, fresh databases, a collector on a real port.

Helpers (request builders, collector processes) live in :mod:`tests.collector.helpers`.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from boundary_audit.collector import AppSettings, CollectorServer, Storage, open_storage
from boundary_audit.collector.testing import (
    PostgresUnavailableError,
    ThrowawayPostgres,
    throwaway_postgres,
)


@pytest.fixture(scope="session")
def pg_server() -> Iterator[ThrowawayPostgres]:
    try:
        with throwaway_postgres() as server:
            yield server
    except PostgresUnavailableError as exc:
        pytest.skip(f"no throwaway PostgreSQL: {exc} (scripts/system-deps.sh installs it)")


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'collector.db'}"
    server: ThrowawayPostgres = request.getfixturevalue("pg_server")
    return server.new_database()


@pytest.fixture
def storage(db_url: str) -> Iterator[Storage]:
    with open_storage(db_url) as store:
        yield store


@pytest.fixture
def collector_server(storage: Storage) -> Iterator[CollectorServer]:
    """The collector app in-process on a loopback port, reads open (no reader token)."""
    with CollectorServer(storage, AppSettings(require_read_auth=False)) as server:
        yield server

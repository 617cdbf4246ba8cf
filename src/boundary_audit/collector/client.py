"""Read-side sources for the CLI: the collector's JSON API, or the database directly.

Both yield the JSON shapes of the API (``Session`` / ``Event`` objects), so the
CLI renders one format whichever way it reads.
"""

from __future__ import annotations

from typing import Any, Protocol

import httpx

from .filters import COUNT, CURSOR, LIMIT, TAIL, event_query_params
from .model import (
    EVENTS_PATH,
    SESSION_EVENTS_PATH,
    SESSION_PATH,
    SESSIONS_PATH,
    CollectorError,
    EventQuery,
)
from .storage import Storage

#: Seconds a query may take before the CLI gives up (a 1M-event filter answers in ms).
CLIENT_TIMEOUT_SECONDS = 30.0


class QueryError(CollectorError):
    """The collector refused or failed a query; the message says why."""


class UnreachableError(QueryError):
    """The collector did not answer (down, restarting, or failing with 5xx): worth retrying."""


class QuerySource(Protocol):
    def sessions(self, limit: int, cursor: str | None) -> tuple[list[dict[str, Any]], str | None]:
        """A page of sessions and the next cursor."""
        ...

    def events(self, query: EventQuery) -> tuple[list[dict[str, Any]], str | None, str | None]:
        """A page of events, the next cursor and the resume cursor."""
        ...

    def tail(self, query: EventQuery) -> str | None:
        """A cursor after the newest matching event."""
        ...

    def session(self, session_id: str) -> dict[str, Any]:
        """One session (with its completeness)."""
        ...

    def count_events(self, query: EventQuery) -> int:
        """How many events match the query's filters."""
        ...

    def count_sessions(self) -> int:
        """How many sessions are stored."""
        ...

    def close(self) -> None: ...


class StorageSource:
    def __init__(self, storage: Storage) -> None:
        self.storage = storage

    def sessions(self, limit: int, cursor: str | None) -> tuple[list[dict[str, Any]], str | None]:
        page = self.storage.list_sessions(limit, cursor)
        return [s.to_json() for s in page.items], page.next_cursor

    def events(self, query: EventQuery) -> tuple[list[dict[str, Any]], str | None, str | None]:
        page = self.storage.query_events(query)
        return [e.to_json() for e in page.items], page.next_cursor, page.resume_cursor

    def tail(self, query: EventQuery) -> str | None:
        return self.storage.tail_cursor(query)

    def session(self, session_id: str) -> dict[str, Any]:
        summary = self.storage.get_session(session_id)
        if summary is None:
            raise QueryError(f"no session {session_id}")
        return summary.to_json()

    def count_events(self, query: EventQuery) -> int:
        return self.storage.count_events(query)

    def count_sessions(self) -> int:
        return self.storage.count_sessions()

    def close(self) -> None:
        self.storage.close()


class HttpSource:
    """The collector's query API over HTTP, with an optional reader token."""

    def __init__(self, base_url: str, token: str | None = None) -> None:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.base_url = base_url.rstrip("/")
        self._http = httpx.Client(
            base_url=base_url.rstrip("/"), headers=headers, timeout=CLIENT_TIMEOUT_SECONDS
        )

    def _get(self, path: str, params: dict[str, Any]) -> dict[str, Any]:
        clean = {k: v for k, v in params.items() if v is not None}
        try:
            response = self._http.get(path, params=clean)
        except httpx.HTTPError as exc:
            raise UnreachableError(
                f"cannot reach the collector at {self.base_url}: {exc or type(exc).__name__}"
                " (is it running? start it with `boundary-audit collector`,"
                " or read a database with --db)"
            ) from exc
        if response.status_code != 200:
            try:
                detail = response.json().get("detail", response.text)
            except ValueError:
                detail = response.text
            error = UnreachableError if response.status_code >= 500 else QueryError
            raise error(f"collector at {self.base_url} answered {response.status_code}: {detail}")
        body: dict[str, Any] = response.json()
        return body

    def sessions(self, limit: int, cursor: str | None) -> tuple[list[dict[str, Any]], str | None]:
        body = self._get(SESSIONS_PATH, {LIMIT.name: limit, CURSOR.name: cursor})
        return body["sessions"], body["next_cursor"]

    def events(self, query: EventQuery) -> tuple[list[dict[str, Any]], str | None, str | None]:
        path, params = event_request(query)
        body = self._get(path, params)
        return body["events"], body["next_cursor"], body.get("resume_cursor")

    def tail(self, query: EventQuery) -> str | None:
        path, params = event_request(query)
        cursor: str | None = self._get(path, {**params, TAIL.name: "true"}).get("resume_cursor")
        return cursor

    def session(self, session_id: str) -> dict[str, Any]:
        return self._get(SESSION_PATH.format(session_id=session_id), {})

    def count_events(self, query: EventQuery) -> int:
        path, params = event_request(query)
        return int(self._get(path, {**params, LIMIT.name: 1, COUNT.name: "true"})["total"])

    def count_sessions(self) -> int:
        return int(self._get(SESSIONS_PATH, {LIMIT.name: 1})["total"])

    def close(self) -> None:
        self._http.close()


def event_request(query: EventQuery) -> tuple[str, dict[str, str]]:
    """Path and query string of the API request that answers ``query``."""
    if query.session_id:
        path = SESSION_EVENTS_PATH.format(session_id=query.session_id)
    else:
        path = EVENTS_PATH
    return path, event_query_params(query)

"""The JSON API: ingest from agents, queries for readers, the OpenAPI document, metrics, health.

:data:`OPERATIONS` is the route table: the app serves it and the OpenAPI
document is generated from it. Handlers raise; each route answers what the
error registry (:mod:`.errors`) says.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from .auditlog import AuditLog
from .auth import require_agent, require_reader
from .context import Context, Handler, client_of, session_param
from .errors import (
    EXPECTED,
    BodyTimeoutError,
    BodyTooLargeError,
    ClientDisconnectedError,
    OverloadedError,
    UnauthorizedError,
    json_error,
    spec_for,
)
from .filters import (
    COUNT,
    CURSOR,
    DEFAULT_PAGE_SIZE,
    EVENT_FILTERS,
    LIMIT,
    ORDER,
    PAGING,
    TAIL,
    parse_event_query,
    parse_limit,
)
from .ingest import MAX_INGEST_BODY_BYTES, parse_ingest_request
from .model import (
    EVENTS_PATH,
    INGEST_PATH,
    SESSION_EVENTS_PATH,
    SESSION_PATH,
    SESSIONS_PATH,
    Identity,
    IngestBatch,
    IngestOutcome,
    InvalidRequestError,
    NotFoundError,
    StorageUnavailableError,
)
from .openapi import SESSION_ID, Operation, Parameter, openapi_document

PROTOBUF_CONTENT_TYPE = "application/x-protobuf"
#: The answer to an ingest request that failed on a bug: it stored nothing.
INGEST_FAILED_DETAIL = "the collector failed; nothing was stored"

_READ_ERRORS: dict[type[BaseException], str] = {
    InvalidRequestError: "bad filter, cursor or session id",
    UnauthorizedError: "a reader token is required",
    StorageUnavailableError: "database unavailable",
}
_NO_SESSION: dict[type[BaseException], str] = {NotFoundError: "no such session"}
_EVENT_PARAMETERS: tuple[Parameter, ...] = (*EVENT_FILTERS, TAIL, ORDER, COUNT, *PAGING)

#: The routes of the JSON API, in the order the OpenAPI document lists them.
OPERATIONS: tuple[Operation, ...] = (
    Operation(
        "ingest",
        "POST",
        INGEST_PATH,
        "Store a batch of boundary logs and drop reports (agent token)",
        ("IngestResult", "stored (or already stored)"),
        {
            InvalidRequestError: "invalid request; nothing stored",
            UnauthorizedError: "missing, unknown or revoked agent token",
            BodyTimeoutError: "body not received in time; retry",
            BodyTooLargeError: f"body over {MAX_INGEST_BODY_BYTES} bytes",
            OverloadedError: "overloaded",
            Exception: "internal error; nothing stored",
            StorageUnavailableError: "database unavailable",
        },
        body=PROTOBUF_CONTENT_TYPE,
    ),
    Operation(
        "sessions",
        "GET",
        SESSIONS_PATH,
        "Sessions, newest first",
        ("SessionPage", "a page of sessions"),
        _READ_ERRORS,
        PAGING,
    ),
    Operation(
        "session",
        "GET",
        SESSION_PATH,
        "One session with its drops by reason",
        ("Session", "the session"),
        {**_NO_SESSION, **_READ_ERRORS},
        (SESSION_ID,),
    ),
    Operation(
        "session_events",
        "GET",
        SESSION_EVENTS_PATH,
        "Events of one session by sequence number",
        ("EventPage", "a page of events"),
        {**_NO_SESSION, **_READ_ERRORS},
        (SESSION_ID, *_EVENT_PARAMETERS),
    ),
    Operation(
        "events",
        "GET",
        EVENTS_PATH,
        "Events of all sessions in arrival order",
        ("EventPage", "a page of events"),
        _READ_ERRORS,
        _EVENT_PARAMETERS,
    ),
)

Reader = Callable[[Request], Awaitable[Any]]


class Api:
    """The JSON API's handlers over one app context."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.inflight = 0
        self.audit_log = AuditLog(ctx.settings.event_log_stream)
        self.document = openapi_document(OPERATIONS)
        self._readers: dict[str, Reader] = {
            "sessions": self.list_sessions,
            "session": self.get_session,
            "session_events": self.list_events,
            "events": self.list_events,
        }

    def routes(self) -> list[Route]:
        counted = self.ctx.counted
        routes = [Route(op.path, self._endpoint(op), methods=[op.method]) for op in OPERATIONS]
        return [
            *routes,
            Route("/api/v1/openapi.json", counted("openapi", self.openapi), methods=["GET"]),
            Route("/metrics", counted("metrics", self.metrics), methods=["GET"]),
            Route("/healthz", counted("health", self.health), methods=["GET"]),
        ]

    def _endpoint(self, op: Operation) -> Handler:
        if op.name == "ingest":
            return self.ctx.counted(op.name, self.ingest)
        return self.reader(op.name, self._readers[op.name])

    # -- ingest --------------------------------------------------------------------
    async def ingest(self, request: Request) -> Response:
        ident: Identity | None = None
        try:
            # Identity first, from headers alone: the body of an unauthenticated
            # client is never read.
            ident = await require_agent(self.ctx, request)
            if self.inflight >= self.ctx.settings.max_inflight_ingest:
                raise OverloadedError(
                    "too many ingest requests in flight, retry later",
                    context={"inflight": self.inflight},
                )
            self.inflight += 1
            try:
                body = await self._read_body(request)
                batch = parse_ingest_request(body)
                outcome = await self.ctx.db("ingest", self.ctx.storage.ingest, batch, ident)
            finally:
                self.inflight -= 1
        except Exception as exc:
            return self._refused(request, ident, exc)
        self._account(outcome, ident, batch.batch_id)
        self._altered(batch, ident)
        return JSONResponse(
            {
                "batch_id": batch.batch_id,
                "stored": outcome.stored,
                "duplicates": outcome.duplicates,
                "drop_reports": outcome.drop_reports,
                "session_records": outcome.records,
            }
        )

    async def _read_body(self, request: Request) -> bytes:
        """The body, capped while streaming (a lying or absent Content-Length gains nothing)."""
        content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if content_type != PROTOBUF_CONTENT_TYPE:
            raise InvalidRequestError(f"Content-Type must be {PROTOBUF_CONTENT_TYPE}")
        declared = request.headers.get("content-length")
        if declared is not None and not declared.isdigit():
            raise InvalidRequestError("Content-Length is not a number")
        if declared is not None and int(declared) > MAX_INGEST_BODY_BYTES:
            raise _too_large(int(declared))
        timeout = self.ctx.settings.body_timeout_seconds
        chunks: list[bytes] = []
        size = 0
        try:
            # A stalled sender must not hold one of the few in-flight slots forever.
            async with asyncio.timeout(timeout):
                async for chunk in request.stream():
                    size += len(chunk)
                    if size > MAX_INGEST_BODY_BYTES:
                        raise _too_large(size)
                    chunks.append(chunk)
        except ClientDisconnect:
            raise ClientDisconnectedError(
                "client disconnected mid-body", context={"received": size}
            ) from None
        except TimeoutError:
            raise BodyTimeoutError(
                f"body not received within {timeout:g} s", context={"received": size}
            ) from None
        return b"".join(chunks)

    def _refused(self, request: Request, ident: Identity | None, exc: Exception) -> Response:
        """Count, log and answer an ingest request that failed; nothing of it was stored."""
        self.ctx.metrics.rejected.labels(spec_for(exc).reason).inc()
        who = {"agent": ident.agent} if ident else {"client": client_of(request)}
        self.ctx.log_error("ingest", exc, **who)
        expected = isinstance(exc, EXPECTED)
        return json_error(exc, detail=None if expected else INGEST_FAILED_DETAIL)

    def _account(self, outcome: IngestOutcome, ident: Identity, batch_id: str) -> None:
        m = self.ctx.metrics
        log = self.ctx.log
        m.events_stored.inc(outcome.stored)
        m.duplicates.inc(outcome.duplicates)
        m.sessions.inc(outcome.new_sessions)
        m.drop_reports.inc(outcome.drop_reports)
        m.session_records.inc(outcome.records)
        if outcome.gap_delta > 0:
            m.gaps.inc(outcome.gap_delta)
        for reason, n in outcome.dropped_by_reason.items():
            m.dropped_events.labels(reason).inc(n)
            log.warning("events_dropped_upstream", reason=reason, count=n, agent=ident.agent)
        if outcome.gap_delta > 0:
            log.warning("sequence_gap_detected", missing=outcome.gap_delta, batch=batch_id)
        if self.ctx.settings.emit_event_logs:
            self.audit_log.write(outcome.stored_events, ident)
        log.debug(
            "ingested",
            batch=batch_id,
            agent=ident.agent,
            stored=outcome.stored,
            duplicates=outcome.duplicates,
        )

    def _altered(self, batch: IngestBatch, ident: Identity) -> None:
        """Count and log what ingest had to change to store (never silently)."""
        for alteration, n in batch.flagged.items():
            self.ctx.metrics.flagged.labels(alteration).inc(n)
            self.ctx.log.warning(
                "events_altered", alteration=alteration, events=n, agent=ident.agent
            )
        if batch.clamped:
            self.ctx.metrics.clamped.inc(batch.clamped)
            self.ctx.log.warning("counts_clamped", counts=batch.clamped, agent=ident.agent)

    # -- queries -------------------------------------------------------------------
    def reader(self, route: str, read: Reader) -> Handler:
        """A read route: a reader token first, then ``read``'s JSON, or the registry's answer."""

        async def endpoint(request: Request) -> Response:
            await require_reader(self.ctx, request)
            return JSONResponse(await read(request))

        return self.ctx.answering(route, endpoint, json_error)

    async def list_sessions(self, request: Request) -> dict[str, Any]:
        params = request.query_params
        limit = parse_limit(params.get(LIMIT.name), DEFAULT_PAGE_SIZE)
        cursor = params.get(CURSOR.name)
        storage = self.ctx.storage
        page = await self.ctx.db("list_sessions", storage.list_sessions, limit, cursor)
        unattributed = await self.ctx.db("session_drops", storage.unattributed_drops)
        total = await self.ctx.db("count_sessions", storage.count_sessions)
        return {
            "sessions": [s.to_json() for s in page.items],
            "next_cursor": page.next_cursor,
            "unattributed_dropped_by_reason": unattributed,
            "total": total,
        }

    async def get_session(self, request: Request) -> dict[str, Any]:
        session_id = session_param(request)
        summary = await self.ctx.session(session_id)
        drops = await self.ctx.db("session_drops", self.ctx.storage.session_drops, session_id)
        return {**summary.to_json(), "dropped_by_reason": drops}

    async def list_events(self, request: Request) -> dict[str, Any]:
        session_id = session_param(request) if "session_id" in request.path_params else None
        query = parse_event_query(request.query_params, session_id, DEFAULT_PAGE_SIZE)
        if session_id is not None:
            await self.ctx.session(session_id)
        storage = self.ctx.storage
        if request.query_params.get(TAIL.name) == "true" and not query.cursor:
            cursor = await self.ctx.db("tail_cursor", storage.tail_cursor, query)
            return {"events": [], "next_cursor": None, "resume_cursor": cursor}
        page = await self.ctx.db("query_events", storage.query_events, query)
        body: dict[str, Any] = {
            "events": [e.to_json() for e in page.items],
            "next_cursor": page.next_cursor,
            "resume_cursor": page.resume_cursor,
        }
        if request.query_params.get(COUNT.name) == "true":
            body["total"] = await self.ctx.db("count_events", storage.count_events, query)
        return body

    # -- service -------------------------------------------------------------------
    async def openapi(self, request: Request) -> Response:
        return JSONResponse(self.document)

    async def metrics(self, request: Request) -> Response:
        body = generate_latest(self.ctx.metrics.registry)
        return Response(body, media_type=CONTENT_TYPE_LATEST)

    async def health(self, request: Request) -> Response:
        try:
            await self.ctx.db("health", self.ctx.storage.health)
        except StorageUnavailableError as exc:
            # Operators, not clients, read this: the database's own words help them.
            return json_error(exc, detail=str(exc))
        return PlainTextResponse("ok\n")


def _too_large(size: int) -> BodyTooLargeError:
    return BodyTooLargeError(
        f"body exceeds {MAX_INGEST_BODY_BYTES} bytes",
        fields={"limit": MAX_INGEST_BODY_BYTES},
        context={"size": size, "limit": MAX_INGEST_BODY_BYTES},
    )

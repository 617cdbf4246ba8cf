"""The collector's ASGI app: ingest, query API, web UI, metrics.

Blocking database calls run in Starlette's thread pool so the event loop keeps
answering (health checks, 429s, metrics) while SQLite or PostgreSQL works.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO, TypeVar
from urllib.parse import parse_qs, urlencode

import jinja2
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect, Request
from starlette.responses import (
    HTMLResponse,
    JSONResponse,
    PlainTextResponse,
    RedirectResponse,
    Response,
)
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from boundary_audit.logs import get_logger

from .auditlog import AuditLog
from .ingest import MAX_INGEST_BODY_BYTES, parse_ingest_request
from .metrics import CollectorMetrics
from .model import (
    EventQuery,
    Identity,
    IngestOutcome,
    InvalidRequestError,
    NotFoundError,
    StorageUnavailableError,
    TimelineBucket,
    format_ns,
    parse_time,
)
from .openapi import openapi_document
from .storage import MAX_PAGE_SIZE, MAX_TIMELINE_BUCKETS, TIMELINE_BUCKET_NS, Storage

T = TypeVar("T")

#: Ingest requests handled at once; beyond it 429. Each holds up to 4 MiB of
#: body and one DB connection; 32 keeps memory bounded (~128 MiB worst case)
#: while leaving far more concurrency than one SQLite writer can use.
MAX_INFLIGHT_INGEST = 32
#: Seconds an ingest body may take to arrive once its headers are in: a 4 MiB
#: body needs under a second even on a slow link; past this the sender gets a
#: 408 (the agent retries) and its in-flight slot is freed.
BODY_TIMEOUT_SECONDS = 30.0
#: Seconds a client should wait after 429 (a burst clears within a second).
OVERLOAD_RETRY_AFTER_SECONDS = 1
#: Seconds a client should wait after 503 (a restarting database takes a few).
UNAVAILABLE_RETRY_AFTER_SECONDS = 5
#: Largest login form body; a token is 46 chars, the rest is field names.
MAX_FORM_BYTES = 4_096
#: Reader cookie lifetime: a working day, then log in again.
COOKIE_MAX_AGE_SECONDS = 12 * 3600
COOKIE_NAME = "ba_reader"
PROTOBUF_CONTENT_TYPE = "application/x-protobuf"
#: Events or sessions per API page unless ``limit`` says otherwise: a screenful
#: for a person, small enough to answer in a few milliseconds.
DEFAULT_PAGE_SIZE = 100
#: Rows per web page: twice the API default, still quick for a browser to render.
UI_PAGE_SIZE = 200
#: Height in pixels of the timeline chart's plot area.
CHART_HEIGHT = 120
#: Width in pixels of one minute in the timeline chart (120 minutes fit 1440 px).
CHART_BAR_WIDTH = 12

_HERE = Path(__file__).parent
SECURITY_HEADERS = {
    # Defence in depth: every value is escaped, and even so no script may run.
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
        "frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}


@dataclass(frozen=True, slots=True)
class AppSettings:
    """How the app treats readers and audit log lines."""

    #: False only when listening on loopback: reads then need no token.
    require_read_auth: bool = True
    max_inflight_ingest: int = MAX_INFLIGHT_INGEST
    body_timeout_seconds: float = BODY_TIMEOUT_SECONDS
    #: One JSON line per stored event (for log aggregators).
    emit_event_logs: bool = True
    #: Where those lines go; ``None`` means the process's stderr.
    event_log_stream: TextIO | None = None


def _error(
    status: int, error: str, detail: str, headers: dict[str, str] | None = None, **extra: Any
) -> JSONResponse:
    headers = dict(headers or {})
    if status == 429:
        headers["Retry-After"] = str(OVERLOAD_RETRY_AFTER_SECONDS)
    elif status == 503:
        headers["Retry-After"] = str(UNAVAILABLE_RETRY_AFTER_SECONDS)
    return JSONResponse({"error": error, "detail": detail, **extra}, status, headers=headers)


class _Refused(Exception):
    """Carries a ready error response out of a helper."""

    def __init__(self, response: Response) -> None:
        self.response = response
        super().__init__(response.status_code)


class _Collector:
    """Handlers bound to one storage, metrics registry and settings."""

    def __init__(self, storage: Storage, metrics: CollectorMetrics, settings: AppSettings) -> None:
        self.storage = storage
        self.metrics = metrics
        self.settings = settings
        self.inflight = 0
        self.log = get_logger("collector")
        self.audit_log = AuditLog(settings.event_log_stream)
        self.templates = jinja2.Environment(
            loader=jinja2.FileSystemLoader(_HERE / "templates"),
            autoescape=True,
            undefined=jinja2.StrictUndefined,
        )
        self.templates.filters["time"] = format_ns

    # -- plumbing ------------------------------------------------------------------
    async def db(self, operation: str, fn: Callable[..., T], *args: Any) -> T:
        start = time.perf_counter()
        try:
            return await run_in_threadpool(fn, *args)
        except StorageUnavailableError:
            self.metrics.db_errors.labels(operation, "unavailable").inc()
            raise
        except InvalidRequestError:
            raise
        except Exception:
            self.metrics.db_errors.labels(operation, "error").inc()
            raise
        finally:
            self.metrics.db_latency.labels(operation).observe(time.perf_counter() - start)

    def respond(self, route: str, response: Response) -> Response:
        self.metrics.requests.labels(route, str(response.status_code)).inc()
        return response

    async def identity(self, request: Request, *, cookie: bool = False) -> Identity | None:
        token = _bearer(request)
        if token is None and cookie:
            token = request.cookies.get(COOKIE_NAME)
        if not token:
            return None
        return await self.db("authenticate", self.storage.authenticate, token)

    async def reader_allowed(self, request: Request, *, cookie: bool) -> bool:
        if not self.settings.require_read_auth:
            return True
        ident = await self.identity(request, cookie=cookie)
        return ident is not None and ident.scope == "reader"

    # -- ingest --------------------------------------------------------------------
    async def ingest(self, request: Request) -> Response:
        route = "ingest"
        try:
            response = await self._ingest(request)
        except StorageUnavailableError as exc:
            self.log.warning("ingest_db_unavailable", error=str(exc))
            self.metrics.rejected.labels("db_unavailable").inc()
            response = _error(503, "unavailable", "database unavailable, retry later")
        except Exception:
            self.log.exception("ingest_failed")
            self.metrics.rejected.labels("internal_error").inc()
            response = _error(500, "internal_error", "the collector failed; nothing was stored")
        return self.respond(route, response)

    async def _ingest(self, request: Request) -> Response:
        # Identity first, from headers alone: the body of an unauthenticated
        # client is never read.
        ident = await self.identity(request)
        if ident is None or ident.scope != "agent":
            self.metrics.rejected.labels("unauthorized").inc()
            self.log.warning("ingest_unauthorized", client=_client(request))
            return _error(401, "unauthorized", "missing, unknown or revoked agent token")
        if self.inflight >= self.settings.max_inflight_ingest:
            self.metrics.rejected.labels("overload").inc()
            self.log.warning("ingest_overloaded", inflight=self.inflight, agent=ident.agent)
            return _error(429, "overloaded", "too many ingest requests in flight, retry later")
        self.inflight += 1
        try:
            return await self._ingest_body(request, ident)
        finally:
            self.inflight -= 1

    async def _ingest_body(self, request: Request, ident: Identity) -> Response:
        try:
            batch = parse_ingest_request(await self._read_body(request, ident))
            outcome: IngestOutcome = await self.db("ingest", self.storage.ingest, batch, ident)
        except _Refused as refused:
            return refused.response
        except InvalidRequestError as exc:
            return self._invalid(ident, exc.detail)
        self._account(outcome, ident, batch.batch_id)
        return JSONResponse(
            {
                "batch_id": batch.batch_id,
                "stored": outcome.stored,
                "duplicates": outcome.duplicates,
                "drop_reports": outcome.drop_reports,
            }
        )

    async def _read_body(self, request: Request, ident: Identity) -> bytes:
        """The body, capped while streaming (a lying or absent Content-Length gains nothing)."""
        content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if content_type != PROTOBUF_CONTENT_TYPE:
            raise InvalidRequestError(f"Content-Type must be {PROTOBUF_CONTENT_TYPE}")
        declared = request.headers.get("content-length")
        if declared is not None and not declared.isdigit():
            raise InvalidRequestError("Content-Length is not a number")
        if declared is not None and int(declared) > MAX_INGEST_BODY_BYTES:
            raise _Refused(self._too_large(ident, int(declared)))
        chunks: list[bytes] = []
        size = 0
        try:
            # A stalled sender must not hold one of the few in-flight slots forever.
            async with asyncio.timeout(self.settings.body_timeout_seconds):
                async for chunk in request.stream():
                    size += len(chunk)
                    if size > MAX_INGEST_BODY_BYTES:
                        raise _Refused(self._too_large(ident, size))
                    chunks.append(chunk)
        except ClientDisconnect:
            self.metrics.rejected.labels("client_disconnect").inc()
            self.log.warning("ingest_client_disconnected", agent=ident.agent, received=size)
            raise _Refused(_error(400, "invalid_request", "client disconnected mid-body")) from None
        except TimeoutError:
            self.metrics.rejected.labels("body_timeout").inc()
            self.log.warning("ingest_body_timeout", agent=ident.agent, received=size)
            detail = f"body not received within {self.settings.body_timeout_seconds:g} s"
            raise _Refused(
                _error(408, "timeout", detail, headers={"Connection": "close"})
            ) from None
        return b"".join(chunks)

    def _invalid(self, ident: Identity, detail: str) -> Response:
        self.metrics.rejected.labels("invalid").inc()
        self.log.warning("ingest_rejected", agent=ident.agent, detail=detail)
        return _error(400, "invalid_request", detail)

    def _too_large(self, ident: Identity, size: int) -> Response:
        self.metrics.rejected.labels("too_large").inc()
        self.log.warning(
            "ingest_too_large", agent=ident.agent, size=size, limit=MAX_INGEST_BODY_BYTES
        )
        return _error(
            413,
            "too_large",
            f"body exceeds {MAX_INGEST_BODY_BYTES} bytes",
            limit=MAX_INGEST_BODY_BYTES,
        )

    def _account(self, outcome: IngestOutcome, ident: Identity, batch_id: str) -> None:
        m = self.metrics
        m.events_stored.inc(outcome.stored)
        m.duplicates.inc(outcome.duplicates)
        m.sessions.inc(outcome.new_sessions)
        m.drop_reports.inc(outcome.drop_reports)
        if outcome.gap_delta > 0:
            m.gaps.inc(outcome.gap_delta)
        for reason, n in outcome.dropped_by_reason.items():
            m.dropped_events.labels(reason).inc(n)
            self.log.warning("events_dropped_upstream", reason=reason, count=n, agent=ident.agent)
        if outcome.gap_delta > 0:
            self.log.warning("sequence_gap_detected", missing=outcome.gap_delta, batch=batch_id)
        if self.settings.emit_event_logs:
            self.audit_log.write(outcome.stored_events, ident)
        self.log.debug(
            "ingested",
            batch=batch_id,
            agent=ident.agent,
            stored=outcome.stored,
            duplicates=outcome.duplicates,
        )

    # -- query API -----------------------------------------------------------------
    async def api(self, request: Request, route: str, fn: Callable[[], Any]) -> Response:
        try:
            if not await self.reader_allowed(request, cookie=True):
                response: Response = _error(401, "unauthorized", "a reader token is required")
            else:
                response = JSONResponse(await fn())
        except InvalidRequestError as exc:
            response = _error(400, "invalid_request", exc.detail)
        except StorageUnavailableError as exc:
            self.log.warning("query_db_unavailable", route=route, error=str(exc))
            response = _error(503, "unavailable", "database unavailable, retry later")
        except NotFoundError as exc:
            response = _error(404, "not_found", str(exc))
        return self.respond(route, response)

    async def list_sessions(self, request: Request) -> Response:
        async def run() -> Any:
            params = request.query_params
            limit = _limit(params.get("limit"), DEFAULT_PAGE_SIZE)
            page = await self.db(
                "list_sessions", self.storage.list_sessions, limit, params.get("cursor")
            )
            unattributed = await self.db("session_drops", self.storage.unattributed_drops)
            return {
                "sessions": [s.to_json() for s in page.items],
                "next_cursor": page.next_cursor,
                "unattributed_dropped_by_reason": unattributed,
            }

        return await self.api(request, "sessions", run)

    async def get_session(self, request: Request) -> Response:
        async def run() -> Any:
            session_id = _session_param(request)
            summary = await self.db("get_session", self.storage.get_session, session_id)
            if summary is None:
                raise NotFoundError(f"no session {session_id}")
            drops = await self.db("session_drops", self.storage.session_drops, session_id)
            return {**summary.to_json(), "dropped_by_reason": drops}

        return await self.api(request, "session", run)

    async def list_events(self, request: Request) -> Response:
        async def run() -> Any:
            session_id = _session_param(request) if "session_id" in request.path_params else None
            query = _event_query(request.query_params, session_id, DEFAULT_PAGE_SIZE)
            if session_id is not None:
                found = await self.db("get_session", self.storage.get_session, session_id)
                if found is None:
                    raise NotFoundError(f"no session {session_id}")
            if request.query_params.get("tail") == "true" and not query.cursor:
                cursor = await self.db("tail_cursor", self.storage.tail_cursor, query)
                return {"events": [], "next_cursor": None, "resume_cursor": cursor}
            page = await self.db("query_events", self.storage.query_events, query)
            return {
                "events": [e.to_json() for e in page.items],
                "next_cursor": page.next_cursor,
                "resume_cursor": page.resume_cursor,
            }

        route = "session_events" if "session_id" in request.path_params else "events"
        return await self.api(request, route, run)

    async def openapi(self, request: Request) -> Response:
        return self.respond("openapi", JSONResponse(openapi_document()))

    async def metrics_endpoint(self, request: Request) -> Response:
        body = generate_latest(self.metrics.registry)
        return self.respond("metrics", Response(body, media_type=CONTENT_TYPE_LATEST))

    async def health(self, request: Request) -> Response:
        try:
            await self.db("health", self.storage.query, "SELECT 1")
        except StorageUnavailableError as exc:
            return self.respond("health", _error(503, "unavailable", str(exc)))
        return self.respond("health", PlainTextResponse("ok\n"))

    # -- web UI --------------------------------------------------------------------
    def page(self, template: str, status: int = 200, **context: Any) -> HTMLResponse:
        context.setdefault("logout", self.settings.require_read_auth)
        html = self.templates.get_template(template).render(**context)
        return HTMLResponse(html, status, headers=SECURITY_HEADERS)

    async def ui(self, request: Request, route: str, render: Callable[[], Any]) -> Response:
        try:
            if not await self.reader_allowed(request, cookie=True):
                target = "/login?" + urlencode({"next": request.url.path})
                response: Response = RedirectResponse(target, 303)
            else:
                response = await render()
        except InvalidRequestError as exc:
            response = self.page("error.html", 400, message=exc.detail)
        except NotFoundError as exc:
            response = self.page("error.html", 404, message=str(exc))
        except StorageUnavailableError:
            response = self.page("error.html", 503, message="database unavailable, retry later")
        return self.respond(route, response)

    async def ui_sessions(self, request: Request) -> Response:
        async def render() -> Response:
            cursor = request.query_params.get("cursor")
            page = await self.db("list_sessions", self.storage.list_sessions, UI_PAGE_SIZE, cursor)
            unattributed = await self.db("session_drops", self.storage.unattributed_drops)
            return self.page(
                "sessions.html",
                sessions=page.items,
                next_cursor=page.next_cursor,
                unattributed=unattributed,
            )

        return await self.ui(request, "ui_sessions", render)

    async def ui_session(self, request: Request) -> Response:
        async def render() -> Response:
            session_id = _session_param(request)
            summary = await self.db("get_session", self.storage.get_session, session_id)
            if summary is None:
                raise NotFoundError(f"no session {session_id}")
            params = request.query_params
            query = _event_query(params, session_id, UI_PAGE_SIZE)
            page = await self.db("query_events", self.storage.query_events, query)
            drops = await self.db("session_drops", self.storage.session_drops, session_id)
            buckets = await self.db("timeline", self.storage.timeline, session_id)
            filters = {k: params.get(k, "") for k in ("decision", "host", "q", "since", "until")}
            next_link = None
            if page.next_cursor:
                kept = {k: v for k, v in filters.items() if v}
                next_link = "?" + urlencode({**kept, "cursor": page.next_cursor})
            return self.page(
                "session.html",
                session=summary,
                events=page.items,
                drops=drops,
                chart=_chart(buckets),
                filters=filters,
                next_link=next_link,
            )

        return await self.ui(request, "ui_session", render)

    async def login(self, request: Request) -> Response:
        next_path = _safe_next(request.query_params.get("next", "/"))
        if request.method == "GET":
            return self.respond("login", self.page("login.html", next=next_path, failed=False))
        body = b""
        async for chunk in request.stream():
            body += chunk
            if len(body) > MAX_FORM_BYTES:
                return self.respond("login", _error(413, "too_large", "form too large"))
        form = parse_qs(body.decode("utf-8", "replace"))
        token = (form.get("token") or [""])[0].strip()
        next_path = _safe_next((form.get("next") or [next_path])[0])
        try:
            ident = await self.db("authenticate", self.storage.authenticate, token)
        except StorageUnavailableError:
            page = self.page("error.html", 503, message="database unavailable, retry later")
            return self.respond("login", page)
        if ident is None or ident.scope != "reader":
            self.log.warning("login_failed", client=_client(request))
            page = self.page("login.html", 401, next=next_path, failed=True)
            return self.respond("login", page)
        response = RedirectResponse(next_path, 303)
        response.set_cookie(
            COOKIE_NAME,
            token,
            max_age=COOKIE_MAX_AGE_SECONDS,
            httponly=True,
            samesite="strict",
            secure=request.url.scheme == "https",
        )
        self.log.info("login", agent=ident.agent, token_id=ident.token_id)
        return self.respond("login", response)

    async def server_error(self, request: Request, exc: Exception) -> Response:
        """Last resort for a bug in a read handler: logged, counted, a JSON 500."""
        self.log.error("request_failed", path=request.url.path, error=repr(exc), exc_info=exc)
        return self.respond(
            "unhandled", _error(500, "internal_error", "the collector failed on this request")
        )

    async def logout(self, request: Request) -> Response:
        response = RedirectResponse("/login", 303)
        response.delete_cookie(COOKIE_NAME)
        return self.respond("logout", response)


def create_app(
    storage: Storage,
    settings: AppSettings | None = None,
    metrics: CollectorMetrics | None = None,
) -> Starlette:
    """The collector as an ASGI app over an already-migrated ``storage``."""
    c = _Collector(storage, metrics or CollectorMetrics(), settings or AppSettings())
    app = Starlette(
        routes=[
            Route("/api/v1/boundary-logs", c.ingest, methods=["POST"]),
            Route("/api/v1/sessions", c.list_sessions, methods=["GET"]),
            Route("/api/v1/sessions/{session_id}", c.get_session, methods=["GET"]),
            Route("/api/v1/sessions/{session_id}/events", c.list_events, methods=["GET"]),
            Route("/api/v1/events", c.list_events, methods=["GET"]),
            Route("/api/v1/openapi.json", c.openapi, methods=["GET"]),
            Route("/metrics", c.metrics_endpoint, methods=["GET"]),
            Route("/healthz", c.health, methods=["GET"]),
            # Browsers ask for it on every page; no icon, and no 404 noise either.
            Route("/favicon.ico", lambda request: Response(status_code=204), methods=["GET"]),
            Route("/", c.ui_sessions, methods=["GET"]),
            Route("/sessions/{session_id}", c.ui_session, methods=["GET"]),
            Route("/login", c.login, methods=["GET", "POST"]),
            Route("/logout", c.logout, methods=["POST"]),
            Mount("/static", StaticFiles(directory=_HERE / "static"), name="static"),
        ],
        exception_handlers={Exception: c.server_error},
    )
    app.state.collector = c
    app.state.metrics = c.metrics
    return app


def _bearer(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def _client(request: Request) -> str:
    return f"{request.client.host}:{request.client.port}" if request.client else "unknown"


def _safe_next(path: str) -> str:
    """Only same-site absolute paths: no open redirect to another host."""
    if not path.startswith("/") or path.startswith("//") or "\\" in path:
        return "/"
    return path


def _session_param(request: Request) -> str:
    raw = str(request.path_params["session_id"])
    try:
        return str(uuid.UUID(raw))
    except ValueError:
        raise InvalidRequestError("session id is not a UUID") from None


def _limit(raw: str | None, default: int) -> int:
    if raw is None or raw == "":
        return default
    if not raw.isdigit() or not 1 <= int(raw) <= MAX_PAGE_SIZE:
        raise InvalidRequestError(f"limit must be an integer from 1 to {MAX_PAGE_SIZE}")
    return int(raw)


def _event_query(params: Any, session_id: str | None, default_limit: int) -> EventQuery:
    decision = params.get("decision") or None
    if decision not in (None, "allowed", "denied"):
        raise InvalidRequestError("decision must be 'allowed' or 'denied'")
    since = params.get("since") or None
    until = params.get("until") or None
    return EventQuery(
        session_id=session_id,
        allowed=None if decision is None else decision == "allowed",
        host=params.get("host") or None,
        url_contains=params.get("q") or None,
        since_ns=parse_time(since) if since else None,
        until_ns=parse_time(until) if until else None,
        cursor=params.get("cursor") or None,
        limit=_limit(params.get("limit"), default_limit),
    )


def _chart(buckets: list[TimelineBucket]) -> dict[str, Any]:
    """Geometry of the stacked allowed/denied bars, computed here so the template stays dumb.

    Minutes without events get an empty slot, so the x axis is time.
    """
    counts = {b.minute_ns: b for b in buckets}
    minutes: list[int] = []
    if buckets:
        last = buckets[-1].minute_ns
        first = max(buckets[0].minute_ns, last - (MAX_TIMELINE_BUCKETS - 1) * TIMELINE_BUCKET_NS)
        minutes = list(range(first, last + 1, TIMELINE_BUCKET_NS))
    peak = max((b.allowed + b.denied for b in buckets), default=0)
    scale = CHART_HEIGHT / peak if peak else 0
    bars = []
    for i, minute in enumerate(minutes):
        b = counts.get(minute, TimelineBucket(minute, 0, 0))
        h_allowed = round(b.allowed * scale, 1)
        h_denied = round(b.denied * scale, 1)
        bars.append(
            {
                "x": i * CHART_BAR_WIDTH,
                "allowed_y": CHART_HEIGHT - h_allowed,
                "allowed_h": h_allowed,
                "denied_y": CHART_HEIGHT - h_allowed - h_denied,
                "denied_h": h_denied,
                "label": f"{format_ns(minute)[:16]}Z: {b.allowed} allowed, {b.denied} denied",
            }
        )
    return {
        "bars": bars,
        "width": max(len(minutes), 1) * CHART_BAR_WIDTH,
        "height": CHART_HEIGHT,
        "bar_width": CHART_BAR_WIDTH - 2,
        "peak": peak,
        "start": format_ns(minutes[0]) if minutes else "",
        "end": format_ns(minutes[-1] + TIMELINE_BUCKET_NS) if minutes else "",
    }

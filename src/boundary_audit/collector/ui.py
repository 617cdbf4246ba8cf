"""The web UI: sessions, one session's events and timeline chart, the reader login.

Pages are rendered on the server (no script may run: see the CSP); the chart's
geometry is computed here by :func:`chart_layout` so the template stays dumb.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode

import jinja2
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from .auth import clear_reader_cookie, reader_allowed, safe_next, set_reader_cookie
from .chart import chart_layout
from .context import Context, Handler, client_of, session_param
from .errors import BodyTooLargeError, detail_of, json_error, spec_for
from .filters import CURSOR, EVENT_FILTERS, filter_values, parse_event_query
from .model import format_ns
from .uiformat import (
    SESSION_FLAG_FILTERS,
    SESSION_TEXT_FILTERS,
    duration,
    page_link,
    parse_session_filter,
    session_filter_values,
    short_id,
    when,
)

#: Rows per web page: twice the API default, still quick for a browser to render.
UI_PAGE_SIZE = 200
#: Largest login form body; a token is 46 chars, the rest is field names.
MAX_FORM_BYTES = 4_096
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


def templates() -> jinja2.Environment:
    """The UI's templates: autoescaped, and a missing variable is an error, not a blank."""
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(_HERE / "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
    )
    env.filters["time"] = format_ns
    env.filters["when"] = when
    env.filters["duration"] = duration
    env.filters["short_id"] = short_id
    return env


def next_page_link(filters: dict[str, str], cursor: str | None) -> str | None:
    """The query string of the next page: the filters in use and the cursor."""
    if not cursor:
        return None
    kept = {k: v for k, v in filters.items() if v}
    return "?" + urlencode({**kept, CURSOR.name: cursor})


Render = Callable[[Request], Awaitable[Response]]


class Ui:
    """The UI's handlers over one app context."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.templates = templates()

    def routes(self) -> list[BaseRoute]:
        return [
            Route("/", self.page_route("ui_sessions", self.sessions), methods=["GET"]),
            Route(
                "/sessions/{session_id}",
                self.page_route("ui_session", self.session),
                methods=["GET"],
            ),
            Route(
                "/login",
                self.page_route("login", self.login, reader_only=False),
                methods=["GET", "POST"],
            ),
            Route("/logout", self.ctx.counted("logout", self.logout), methods=["POST"]),
            # Browsers ask for it on every page; no icon, and no 404 noise either.
            Route("/favicon.ico", lambda request: Response(status_code=204), methods=["GET"]),
            Mount("/static", StaticFiles(directory=_HERE / "static"), name="static"),
        ]

    def page(self, template: str, status: int = 200, **context: Any) -> HTMLResponse:
        context.setdefault("logout", self.ctx.settings.require_read_auth)
        html = self.templates.get_template(template).render(**context)
        return HTMLResponse(html, status, headers=SECURITY_HEADERS)

    def error_page(self, exc: BaseException) -> Response:
        return self.page("error.html", spec_for(exc).status, message=detail_of(exc))

    def page_route(self, route: str, render: Render, *, reader_only: bool = True) -> Handler:
        """A page: readers only (others are sent to log in), failures as an error page."""

        async def endpoint(request: Request) -> Response:
            if reader_only and not await reader_allowed(self.ctx, request):
                target = "/login?" + urlencode({"next": request.url.path})
                return RedirectResponse(target, 303)
            return await render(request)

        return self.ctx.answering(route, endpoint, self.error_page)

    async def sessions(self, request: Request) -> Response:
        storage, db = self.ctx.storage, self.ctx.db
        cursor = request.query_params.get(CURSOR.name)
        values = session_filter_values(request.query_params)
        wanted = parse_session_filter(values)
        page = await db("list_sessions", storage.find_sessions, wanted, UI_PAGE_SIZE, cursor)
        total = await db("list_sessions", storage.count_sessions, wanted)
        before = await db("list_sessions", storage.sessions_before, wanted, cursor)
        ranges = await db(
            "list_sessions", storage.event_time_ranges, [s.session_id for s in page.items]
        )
        unattributed = await db("session_drops", storage.unattributed_drops)
        return self.page(
            "sessions.html",
            sessions=page.items,
            ranges=ranges,
            total=total,
            first=before + 1,
            last=before + len(page.items),
            filtering=wanted.active(),
            values=values,
            text_filters=SESSION_TEXT_FILTERS,
            flag_filters=SESSION_FLAG_FILTERS,
            next_link=page_link(values, cursor=page.next_cursor) if page.next_cursor else None,
            first_link=page_link(values) if cursor else None,
            unattributed=unattributed,
        )

    async def session(self, request: Request) -> Response:
        storage, db = self.ctx.storage, self.ctx.db
        session_id = session_param(request)
        summary = await self.ctx.session(session_id)
        query = parse_event_query(request.query_params, session_id, UI_PAGE_SIZE)
        page = await db("query_events", storage.query_events, query)
        total = await db("query_events", storage.count_events, query)
        before = await db("query_events", storage.events_before, query)
        drops = await db("session_drops", storage.session_drops, session_id)
        buckets = await db("timeline", storage.timeline, session_id)
        span = await db("timeline", storage.event_time_range, session_id)
        hosts = await db("session_hosts", storage.session_hosts, session_id)
        host_total = await db("session_hosts", storage.count_hosts, session_id)
        filters = filter_values(request.query_params)
        return self.page(
            "session.html",
            session=summary,
            events=page.items,
            total=total,
            first=before + 1,
            last=before + len(page.items),
            span=span,
            hosts=hosts,
            host_total=host_total,
            drops=drops,
            chart=chart_layout(buckets),
            filter_fields=EVENT_FILTERS,
            filters=filters,
            filtering=any(filters.values()),
            next_link=next_page_link(filters, page.next_cursor),
            first_link=page_link(filters) if query.cursor else None,
        )

    async def login(self, request: Request) -> Response:
        next_path = safe_next(request.query_params.get("next", "/"))
        if request.method == "GET":
            return self.page("login.html", next=next_path, failed=False)
        body = b""
        async for chunk in request.stream():
            body += chunk
            if len(body) > MAX_FORM_BYTES:
                # Refused before any page is rendered, in the API's words.
                return json_error(BodyTooLargeError("form too large"))
        form = parse_qs(body.decode("utf-8", "replace"))
        token = (form.get("token") or [""])[0].strip()
        next_path = safe_next((form.get("next") or [next_path])[0])
        ident = await self.ctx.db("authenticate", self.ctx.storage.authenticate, token)
        if ident is None or ident.scope != "reader":
            self.ctx.log.warning("login_failed", client=client_of(request))
            return self.page("login.html", 401, next=next_path, failed=True)
        response = RedirectResponse(next_path, 303)
        set_reader_cookie(response, token, secure=request.url.scheme == "https")
        self.ctx.log.info("login", agent=ident.agent, token_id=ident.token_id)
        return response

    async def logout(self, request: Request) -> Response:
        response = RedirectResponse("/login", 303)
        clear_reader_cookie(response)
        return response

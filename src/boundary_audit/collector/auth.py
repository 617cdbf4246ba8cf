"""Who is asking: bearer tokens for agents and readers, the reader cookie the login sets.

Agents always need a token. Readers need one unless the collector listens on
loopback only (``AppSettings.require_read_auth``); browsers carry theirs in an
HttpOnly cookie set by ``/login``.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from .context import Context
from .errors import UnauthorizedError
from .model import Identity

#: Reader cookie lifetime: a working day, then log in again.
COOKIE_MAX_AGE_SECONDS = 12 * 3600
COOKIE_NAME = "ba_reader"


def bearer_token(authorization: str) -> str | None:
    """The token of an ``Authorization: Bearer ...`` header value, else ``None``."""
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


async def identity(ctx: Context, request: Request, *, cookie: bool = False) -> Identity | None:
    """The identity of the request's bearer token (or, with ``cookie``, its reader cookie)."""
    token = bearer_token(request.headers.get("authorization", ""))
    if token is None and cookie:
        token = request.cookies.get(COOKIE_NAME)
    if not token:
        return None
    return await ctx.db("authenticate", ctx.storage.authenticate, token)


async def require_agent(ctx: Context, request: Request) -> Identity:
    """The agent behind the request, from headers alone (its body is not read yet)."""
    ident = await identity(ctx, request)
    if ident is None or ident.scope != "agent":
        raise UnauthorizedError("missing, unknown or revoked agent token")
    return ident


async def reader_allowed(ctx: Context, request: Request) -> bool:
    """Whether the request may read (a reader token or cookie, or no auth needed)."""
    if not ctx.settings.require_read_auth:
        return True
    ident = await identity(ctx, request, cookie=True)
    return ident is not None and ident.scope == "reader"


async def require_reader(ctx: Context, request: Request) -> None:
    if not await reader_allowed(ctx, request):
        raise UnauthorizedError("a reader token is required")


def safe_next(path: str) -> str:
    """Only same-site absolute paths: no open redirect to another host."""
    if not path.startswith("/") or path.startswith("//") or "\\" in path:
        return "/"
    return path


def set_reader_cookie(response: Response, token: str, *, secure: bool) -> None:
    response.set_cookie(
        COOKIE_NAME,
        token,
        max_age=COOKIE_MAX_AGE_SECONDS,
        httponly=True,
        samesite="strict",
        secure=secure,
    )


def clear_reader_cookie(response: Response) -> None:
    response.delete_cookie(COOKIE_NAME)

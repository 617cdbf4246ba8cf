"""The collector's ASGI app, assembled: the JSON API's routes, the UI's, one last resort.

What each route does lives in :mod:`.api` and :mod:`.ui`; how each failure is
answered, in :mod:`.errors`.
"""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response

from .api import Api
from .context import AppSettings, Context
from .errors import json_error
from .metrics import CollectorMetrics
from .storage import Storage
from .ui import Ui

__all__ = ["AppSettings", "create_app"]


def create_app(
    storage: Storage,
    settings: AppSettings | None = None,
    metrics: CollectorMetrics | None = None,
) -> Starlette:
    """The collector as an ASGI app over an already-migrated ``storage``."""
    ctx = Context(storage, metrics or CollectorMetrics(), settings or AppSettings())

    async def server_error(request: Request, exc: Exception) -> Response:
        """Last resort for a bug in a read handler: logged, counted, a JSON 500."""
        ctx.log.error("request_failed", path=request.url.path, error=repr(exc), exc_info=exc)
        return ctx.respond("unhandled", json_error(exc))

    app = Starlette(
        routes=[*Api(ctx).routes(), *Ui(ctx).routes()],
        exception_handlers={Exception: server_error},
    )
    app.state.metrics = ctx.metrics
    return app

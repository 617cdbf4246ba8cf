"""What the API and UI handlers share: settings, storage calls with metrics, request counting.

Blocking database calls run in Starlette's thread pool so the event loop keeps
answering (health checks, 429s, metrics) while SQLite or PostgreSQL works.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TextIO, TypeVar

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from boundary_audit.logs import get_logger

from .errors import EXPECTED, log_context, spec_for
from .metrics import CollectorMetrics
from .model import InvalidRequestError, NotFoundError, SessionSummary, StorageUnavailableError
from .storage import Storage

T = TypeVar("T")
Handler = Callable[[Request], Awaitable[Response]]

#: Ingest requests handled at once; beyond it 429. Each holds up to 4 MiB of
#: body and one DB connection; 32 keeps memory bounded (~128 MiB worst case)
#: while leaving far more concurrency than one SQLite writer can use.
MAX_INFLIGHT_INGEST = 32
#: Seconds an ingest body may take to arrive once its headers are in: a 4 MiB
#: body needs under a second even on a slow link; past this the sender gets a
#: 408 (the agent retries) and its in-flight slot is freed.
BODY_TIMEOUT_SECONDS = 30.0


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


class Context:
    """One app's storage, metrics, settings and logger, and the calls every handler makes."""

    def __init__(self, storage: Storage, metrics: CollectorMetrics, settings: AppSettings) -> None:
        self.storage = storage
        self.metrics = metrics
        self.settings = settings
        self.log = get_logger("collector")

    async def db(self, operation: str, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)`` in the thread pool, timed and its failures counted by ``operation``."""
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

    def log_error(self, prefix: str, exc: BaseException, **fields: Any) -> None:
        """Log a failed request as ``{prefix}_{event}``; an unexpected one with its traceback."""
        event = f"{prefix}_{spec_for(exc).event}"
        if isinstance(exc, EXPECTED):
            self.log.warning(event, **fields, **log_context(exc))
        else:
            self.log.error(event, exc_info=exc, **fields, **log_context(exc))

    def respond(self, route: str, response: Response) -> Response:
        """``response``, counted by route and status."""
        self.metrics.requests.labels(route, str(response.status_code)).inc()
        return response

    def answering(
        self, route: str, handler: Handler, render: Callable[[BaseException], Response]
    ) -> Handler:
        """``handler``, counted under ``route``, with the expected failures rendered by ``render``.

        Anything else is a bug and goes on to the app's last-resort handler.
        """

        async def endpoint(request: Request) -> Response:
            try:
                response = await handler(request)
            except EXPECTED as exc:
                if spec_for(exc).status >= 500:
                    self.log_error("query", exc, route=route)
                response = render(exc)
            return self.respond(route, response)

        return endpoint

    def counted(self, route: str, handler: Handler) -> Handler:
        """``handler`` with each of its responses counted under ``route``."""

        async def endpoint(request: Request) -> Response:
            return self.respond(route, await handler(request))

        return endpoint

    async def session(self, session_id: str) -> SessionSummary:
        """The session's summary; :class:`NotFoundError` when there is none."""
        summary = await self.db("get_session", self.storage.get_session, session_id)
        if summary is None:
            raise NotFoundError(f"no session {session_id}")
        return summary


def session_param(request: Request) -> str:
    """The ``{session_id}`` of the path, canonical; a 400 when it is not a UUID."""
    raw = str(request.path_params["session_id"])
    try:
        return str(uuid.UUID(raw))
    except ValueError:
        raise InvalidRequestError("session id is not a UUID") from None


def client_of(request: Request) -> str:
    """``host:port`` of the peer, for log lines."""
    return f"{request.client.host}:{request.client.port}" if request.client else "unknown"

"""How each failure is answered: one registry from exception class to status, as Starlette's
``exception_handlers`` map them, so every status, error code and Retry-After is written once.

Handlers raise; the route's surface renders what the registry says (JSON for the
API and ingest, an HTML page for the UI) and the OpenAPI document lists the same
statuses. Looked up along the exception's MRO, so a subclass answers like its base
unless it has its own row.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from starlette.responses import JSONResponse

from .model import CollectorError, InvalidRequestError, NotFoundError, StorageUnavailableError

#: Seconds a client should wait after 429 (a burst clears within a second).
OVERLOAD_RETRY_AFTER_SECONDS = 1
#: Seconds a client should wait after 503 (a restarting database takes a few).
UNAVAILABLE_RETRY_AFTER_SECONDS = 5


class RefusedError(CollectorError):
    """A request refused for a reason of its own (not the client's data).

    ``fields`` go into the JSON answer next to ``error`` and ``detail``;
    ``context`` goes into the log line only.
    """

    def __init__(
        self,
        detail: str,
        *,
        fields: dict[str, Any] | None = None,
        context: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(detail)
        self.fields = fields or {}
        self.context = context or {}


class UnauthorizedError(RefusedError):
    """No token, or one that is unknown, revoked or of the wrong scope."""


class OverloadedError(RefusedError):
    """Too many ingest requests in flight."""


class BodyTooLargeError(RefusedError):
    """A body over its cap (announced or while streaming)."""


class BodyTimeoutError(RefusedError):
    """A body that did not arrive in time."""


class ClientDisconnectedError(RefusedError):
    """The client went away before its body was complete."""


@dataclass(frozen=True, slots=True)
class ErrorSpec:
    """The answer to one kind of failure."""

    status: int
    #: The ``error`` field of a JSON answer.
    error: str
    #: Label of ``ingest_rejected_total`` when an ingest request fails this way.
    reason: str
    #: What the failure is logged as, after ``ingest_`` or ``query_``.
    event: str
    #: A fixed ``detail`` that hides the exception's own text; ``None`` shows it.
    detail: str | None = None
    retry_after: int | None = None
    #: Ask the client to close the connection (its request stream is unusable).
    close: bool = False


#: Every failure a request can meet, by exception class. ``Exception`` is the
#: last resort: a bug, answered 500 without details.
ERRORS: dict[type[BaseException], ErrorSpec] = {
    InvalidRequestError: ErrorSpec(400, "invalid_request", "invalid", "rejected"),
    ClientDisconnectedError: ErrorSpec(
        400, "invalid_request", "client_disconnect", "client_disconnected"
    ),
    UnauthorizedError: ErrorSpec(401, "unauthorized", "unauthorized", "unauthorized"),
    NotFoundError: ErrorSpec(404, "not_found", "not_found", "not_found"),
    BodyTimeoutError: ErrorSpec(408, "timeout", "body_timeout", "body_timeout", close=True),
    BodyTooLargeError: ErrorSpec(413, "too_large", "too_large", "too_large"),
    OverloadedError: ErrorSpec(
        429, "overloaded", "overload", "overloaded", retry_after=OVERLOAD_RETRY_AFTER_SECONDS
    ),
    StorageUnavailableError: ErrorSpec(
        503,
        "unavailable",
        "db_unavailable",
        "db_unavailable",
        detail="database unavailable, retry later",
        retry_after=UNAVAILABLE_RETRY_AFTER_SECONDS,
    ),
    Exception: ErrorSpec(
        500,
        "internal_error",
        "internal_error",
        "failed",
        detail="the collector failed on this request",
    ),
}

#: The failures a route answers itself; anything else is a bug for the app's last resort.
EXPECTED: tuple[type[BaseException], ...] = tuple(e for e in ERRORS if e is not Exception)


def spec_for(error: type[BaseException] | BaseException) -> ErrorSpec:
    """The registry's row for an exception (or class): its own, else its nearest base's."""
    cls = error if isinstance(error, type) else type(error)
    for base in cls.__mro__:
        spec = ERRORS.get(base)
        if spec is not None:
            return spec
    return ERRORS[Exception]


def detail_of(exc: BaseException) -> str:
    """What a client (or a person at a browser) is told about ``exc``."""
    spec = spec_for(exc)
    return spec.detail if spec.detail is not None else str(exc)


def error_headers(spec: ErrorSpec) -> dict[str, str]:
    headers: dict[str, str] = {}
    if spec.retry_after is not None:
        headers["Retry-After"] = str(spec.retry_after)
    if spec.close:
        headers["Connection"] = "close"
    return headers


def json_error(exc: BaseException, *, detail: str | None = None) -> JSONResponse:
    """The JSON answer to ``exc``: ``error``, ``detail`` and its fields, status and headers."""
    spec = spec_for(exc)
    fields = exc.fields if isinstance(exc, RefusedError) else {}
    body = {"error": spec.error, "detail": detail or detail_of(exc), **fields}
    return JSONResponse(body, spec.status, headers=error_headers(spec))


def log_context(exc: BaseException) -> dict[str, Any]:
    """Fields for the log line of ``exc``: what it carries, and its own text."""
    context = exc.context if isinstance(exc, RefusedError) else {}
    return {**context, "error": str(exc)}

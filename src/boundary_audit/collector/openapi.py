"""The OpenAPI 3.0 document of the JSON API, generated from the API's route table.

Each operation's parameters come from the filter table (:mod:`.filters`), its
error statuses from the error registry (:mod:`.errors`), so the document says
exactly what the routes do; the response schemas are written out here.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from .chainstatus import ChainState
from .completeness import State
from .errors import spec_for
from .filters import QueryFilter, QueryParam


@dataclass(frozen=True, slots=True)
class PathParam:
    name: str
    schema: Mapping[str, Any]


SESSION_ID = PathParam("session_id", {"type": "string", "format": "uuid"})

Parameter = PathParam | QueryParam | QueryFilter


@dataclass(frozen=True, slots=True)
class Operation:
    """One route of the JSON API as OpenAPI sees it."""

    #: The route's label in the request metrics.
    name: str
    method: str
    path: str
    summary: str
    #: Schema name and description of the 200 answer.
    ok: tuple[str, str]
    #: What each failure means on this route; the status comes from the error registry.
    errors: Mapping[type[BaseException], str]
    parameters: tuple[Parameter, ...] = ()
    #: Content type of a (binary) request body; ``None`` for none.
    body: str | None = None


_RETRY_AFTER = {"Retry-After": {"schema": {"type": "integer"}, "description": "seconds"}}


def _json(ref: str, description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{ref}"}}},
    }


def parameter(param: Parameter) -> dict[str, Any]:
    """The OpenAPI parameter object of one path parameter, query parameter or filter."""
    if isinstance(param, PathParam):
        return {"name": param.name, "in": "path", "required": True, "schema": dict(param.schema)}
    schema = param.type.schema if isinstance(param, QueryFilter) else param.schema
    out: dict[str, Any] = {"name": param.name, "in": "query", "schema": dict(schema)}
    if param.description:
        out["description"] = param.description
    return out


def _responses(op: Operation) -> dict[str, Any]:
    responses: dict[str, Any] = {"200": _json(*op.ok)}
    for error, description in op.errors.items():
        spec = spec_for(error)
        response = _json("Error", description)
        if spec.retry_after is not None:
            response["headers"] = _RETRY_AFTER
        responses[str(spec.status)] = response
    return responses


def _operation(op: Operation) -> dict[str, Any]:
    out: dict[str, Any] = {"summary": op.summary}
    if op.parameters:
        out["parameters"] = [parameter(p) for p in op.parameters]
    if op.body is not None:
        out["requestBody"] = {
            "required": True,
            "content": {op.body: {"schema": {"type": "string", "format": "binary"}}},
        }
    out["responses"] = _responses(op)
    return out


_STRING = {"type": "string"}
_INTEGER = {"type": "integer"}
_UUID = {"type": "string", "format": "uuid"}
_TIME = {"type": "string", "format": "date-time"}
_NULLABLE_STRING = {"type": "string", "nullable": True}
_COUNTS = {"type": "object", "additionalProperties": _INTEGER}


def _object(properties: dict[str, Any], *, optional: tuple[str, ...] = ()) -> dict[str, Any]:
    """An object schema whose properties are all required but the ``optional`` ones."""
    required = [name for name in properties if name not in optional]
    return {"type": "object", "required": required, "properties": properties}


def _array_of(ref: str) -> dict[str, Any]:
    return {"type": "array", "items": {"$ref": f"#/components/schemas/{ref}"}}


_EVENT_PROPERTIES = {
    "session_id": _UUID,
    "sequence_number": _INTEGER,
    "time": _TIME,
    "allowed": {"type": "boolean"},
    "method": _STRING,
    "url": _STRING,
    "host": _STRING,
    "matched_rule": _STRING,
    "time_unix_ns": {
        "type": "string",
        "pattern": "^[0-9]+$",
        "description": "the event time in Unix nanoseconds, exactly as sent",
    },
    "altered": {
        "type": "array",
        "items": {"type": "string", "enum": ["cut", "escaped", "time_clamped"]},
        "description": "what the collector had to do to store the event (empty: nothing)",
    },
}

_SCHEMAS: dict[str, Any] = {
    "Error": _object({"error": _STRING, "detail": _STRING, "limit": _INTEGER}, optional=("limit",)),
    "Session": _object(
        {
            "session_id": _UUID,
            "agent": _STRING,
            "workspace": _STRING,
            "confined_process_name": _STRING,
            "first_seen": _TIME,
            "last_seen": _TIME,
            "allowed": _INTEGER,
            "denied": _INTEGER,
            "dropped": _INTEGER,
            "gaps": _INTEGER,
            "pruned": {**_INTEGER, "description": "events deleted by retention (they had arrived)"},
            "max_sequence_number": _INTEGER,
            "completeness": {"$ref": "#/components/schemas/Completeness"},
            "chain": {"$ref": "#/components/schemas/Chain"},
            "dropped_by_reason": _COUNTS,
        },
        optional=("dropped_by_reason",),
    ),
    "Completeness": _object(
        {
            "state": {"type": "string", "enum": [str(s) for s in State]},
            "events_made": _INTEGER,
            "stored": _INTEGER,
            "lost": {**_INTEGER, "description": "events reported dropped"},
            "lost_by_reason": _COUNTS,
            "unaccounted": {**_INTEGER, "description": "neither stored nor reported dropped"},
            "unaccounted_by_reason": _COUNTS,
            "idle_seconds": {"type": "number", "nullable": True},
            "summary": _STRING,
        }
    ),
    "Chain": _object(
        {
            "state": {
                "type": "string",
                "enum": [str(s) for s in ChainState],
                "description": "verified: the stored events match the sender's chain and seal;"
                " tampered: they do not; unverified: no chain to check (not sealed yet,"
                " or a sender that does not chain)",
            },
            "first_bad_sequence": {
                "type": "integer",
                "nullable": True,
                "description": "tampered: the first sequence number that breaks the chain",
            },
            "summary": _STRING,
        }
    ),
    "SessionPage": _object(
        {
            "sessions": _array_of("Session"),
            "next_cursor": _NULLABLE_STRING,
            "unattributed_dropped_by_reason": {
                **_COUNTS,
                "description": "events lost that no session could be named for",
            },
            "total": {"type": "integer", "minimum": 0, "description": "sessions stored"},
        },
        optional=("unattributed_dropped_by_reason", "total"),
    ),
    "Event": _object(_EVENT_PROPERTIES),
    "EventPage": _object(
        {
            "events": _array_of("Event"),
            "next_cursor": _NULLABLE_STRING,
            "resume_cursor": _NULLABLE_STRING,
            "total": {
                "type": "integer",
                "minimum": 0,
                "description": "events the filters match (with count=true)",
            },
        },
        optional=("resume_cursor", "total"),
    ),
    "IngestResult": _object(
        {
            "batch_id": _STRING,
            "stored": _INTEGER,
            "duplicates": _INTEGER,
            "drop_reports": _INTEGER,
            "session_records": _INTEGER,
        }
    ),
}


def openapi_document(operations: Iterable[Operation]) -> dict[str, Any]:
    paths: dict[str, dict[str, Any]] = {}
    for op in operations:
        paths.setdefault(op.path, {})[op.method.lower()] = _operation(op)
    return {
        "openapi": "3.0.3",
        "info": {"title": "boundary-audit collector", "version": "1.0.0"},
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": _SCHEMAS,
        },
        "security": [{"bearer": []}, {}],
        "paths": paths,
    }

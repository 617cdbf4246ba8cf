"""The OpenAPI 3.0 document of the JSON API, generated from the API's route table.

Each operation's parameters come from the filter table (:mod:`.filters`), its
error statuses from the error registry (:mod:`.errors`), so the document says
exactly what the routes do; the response schemas are written out here.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from .errors import spec_for
from .filters import QueryFilter, QueryParam
from .model import EVENT_JSON_FIELDS


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


def openapi_document(operations: Iterable[Operation]) -> dict[str, Any]:
    paths: dict[str, dict[str, Any]] = {}
    for op in operations:
        paths.setdefault(op.path, {})[op.method.lower()] = _operation(op)
    return {
        "openapi": "3.0.3",
        "info": {"title": "boundary-audit collector", "version": "1.0.0"},
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {
                "Error": {
                    "type": "object",
                    "required": ["error", "detail"],
                    "properties": {
                        "error": {"type": "string"},
                        "detail": {"type": "string"},
                        "limit": {"type": "integer"},
                    },
                },
                "Session": {
                    "type": "object",
                    "required": [
                        "session_id",
                        "agent",
                        "workspace",
                        "confined_process_name",
                        "first_seen",
                        "last_seen",
                        "allowed",
                        "denied",
                        "dropped",
                        "gaps",
                        "max_sequence_number",
                    ],
                    "properties": {
                        "session_id": {"type": "string", "format": "uuid"},
                        "agent": {"type": "string"},
                        "workspace": {"type": "string"},
                        "confined_process_name": {"type": "string"},
                        "first_seen": {"type": "string", "format": "date-time"},
                        "last_seen": {"type": "string", "format": "date-time"},
                        "allowed": {"type": "integer"},
                        "denied": {"type": "integer"},
                        "dropped": {"type": "integer"},
                        "gaps": {"type": "integer"},
                        "max_sequence_number": {"type": "integer"},
                        "dropped_by_reason": {
                            "type": "object",
                            "additionalProperties": {"type": "integer"},
                        },
                    },
                },
                "SessionPage": {
                    "type": "object",
                    "required": ["sessions", "next_cursor"],
                    "properties": {
                        "sessions": {
                            "type": "array",
                            "items": {"$ref": "#/components/schemas/Session"},
                        },
                        "next_cursor": {"type": "string", "nullable": True},
                        "unattributed_dropped_by_reason": {
                            "type": "object",
                            "additionalProperties": {"type": "integer"},
                            "description": "events lost that no session could be named for",
                        },
                    },
                },
                "Event": {
                    "type": "object",
                    "required": list(EVENT_JSON_FIELDS),
                    "properties": {
                        "session_id": {"type": "string", "format": "uuid"},
                        "sequence_number": {"type": "integer"},
                        "time": {"type": "string", "format": "date-time"},
                        "allowed": {"type": "boolean"},
                        "method": {"type": "string"},
                        "url": {"type": "string"},
                        "host": {"type": "string"},
                        "matched_rule": {"type": "string"},
                    },
                },
                "EventPage": {
                    "type": "object",
                    "required": ["events", "next_cursor"],
                    "properties": {
                        "events": {
                            "type": "array",
                            "items": {"$ref": "#/components/schemas/Event"},
                        },
                        "next_cursor": {"type": "string", "nullable": True},
                        "resume_cursor": {"type": "string", "nullable": True},
                    },
                },
                "IngestResult": {
                    "type": "object",
                    "required": ["batch_id", "stored", "duplicates", "drop_reports"],
                    "properties": {
                        "batch_id": {"type": "string"},
                        "stored": {"type": "integer"},
                        "duplicates": {"type": "integer"},
                        "drop_reports": {"type": "integer"},
                    },
                },
            },
        },
        "security": [{"bearer": []}, {}],
        "paths": paths,
    }

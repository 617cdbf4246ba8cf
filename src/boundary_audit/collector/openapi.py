"""The OpenAPI 3.0 document of the JSON API, written by hand so it says exactly what we serve."""

from __future__ import annotations

from typing import Any

from .ingest import MAX_INGEST_BODY_BYTES
from .model import EVENT_JSON_FIELDS
from .storage import MAX_PAGE_SIZE


def _error_response(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
    }


def _json(ref: str, description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{ref}"}}},
    }


_RETRY_AFTER = {"Retry-After": {"schema": {"type": "integer"}, "description": "seconds"}}
_SESSION_ID = {
    "name": "session_id",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "format": "uuid"},
}
_PAGING = [
    {
        "name": "limit",
        "in": "query",
        "schema": {"type": "integer", "minimum": 1, "maximum": MAX_PAGE_SIZE},
    },
    {
        "name": "cursor",
        "in": "query",
        "schema": {"type": "string"},
        "description": "next_cursor of the previous page",
    },
]
_EVENT_FILTERS = [
    {
        "name": "decision",
        "in": "query",
        "schema": {"type": "string", "enum": ["allowed", "denied"]},
    },
    {
        "name": "host",
        "in": "query",
        "schema": {"type": "string"},
        "description": "exact host (case-insensitive)",
    },
    {
        "name": "q",
        "in": "query",
        "schema": {"type": "string"},
        "description": "URL substring (case-sensitive)",
    },
    {"name": "since", "in": "query", "schema": {"type": "string", "format": "date-time"}},
    {"name": "until", "in": "query", "schema": {"type": "string", "format": "date-time"}},
    {
        "name": "tail",
        "in": "query",
        "schema": {"type": "string", "enum": ["true", "false"]},
        "description": "return no events, only a cursor after the newest (to follow new ones)",
    },
]
_READ_ERRORS = {
    "400": _error_response("bad filter, cursor or session id"),
    "401": _error_response("a reader token is required"),
    "503": {**_error_response("database unavailable"), "headers": _RETRY_AFTER},
}


def openapi_document() -> dict[str, Any]:
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
        "paths": {
            "/api/v1/boundary-logs": {
                "post": {
                    "summary": "Store a batch of boundary logs and drop reports (agent token)",
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/x-protobuf": {
                                "schema": {"type": "string", "format": "binary"}
                            }
                        },
                    },
                    "responses": {
                        "200": _json("IngestResult", "stored (or already stored)"),
                        "400": _error_response("invalid request; nothing stored"),
                        "401": _error_response("missing, unknown or revoked agent token"),
                        "408": _error_response("body not received in time; retry"),
                        "413": _error_response(f"body over {MAX_INGEST_BODY_BYTES} bytes"),
                        "429": {**_error_response("overloaded"), "headers": _RETRY_AFTER},
                        "500": _error_response("internal error; nothing stored"),
                        "503": {**_error_response("database unavailable"), "headers": _RETRY_AFTER},
                    },
                }
            },
            "/api/v1/sessions": {
                "get": {
                    "summary": "Sessions, newest first",
                    "parameters": _PAGING,
                    "responses": {
                        "200": _json("SessionPage", "a page of sessions"),
                        **_READ_ERRORS,
                    },
                }
            },
            "/api/v1/sessions/{session_id}": {
                "get": {
                    "summary": "One session with its drops by reason",
                    "parameters": [_SESSION_ID],
                    "responses": {
                        "200": _json("Session", "the session"),
                        "404": _error_response("no such session"),
                        **_READ_ERRORS,
                    },
                }
            },
            "/api/v1/sessions/{session_id}/events": {
                "get": {
                    "summary": "Events of one session by sequence number",
                    "parameters": [_SESSION_ID, *_EVENT_FILTERS, *_PAGING],
                    "responses": {
                        "200": _json("EventPage", "a page of events"),
                        "404": _error_response("no such session"),
                        **_READ_ERRORS,
                    },
                }
            },
            "/api/v1/events": {
                "get": {
                    "summary": "Events of all sessions in arrival order",
                    "parameters": [*_EVENT_FILTERS, *_PAGING],
                    "responses": {"200": _json("EventPage", "a page of events"), **_READ_ERRORS},
                }
            },
        },
    }

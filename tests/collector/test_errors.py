"""The error registry, sans I/O: one status per failure, the same on every surface."""

from __future__ import annotations

import json
from typing import Any

import pytest
from starlette.responses import Response

from boundary_audit.collector import (
    InvalidRequestError,
    QueryError,
    SessionOwnershipError,
    StorageUnavailableError,
    errors,
)
from boundary_audit.collector.api import OPERATIONS
from boundary_audit.collector.model import InvalidCursorError, NotFoundError
from boundary_audit.collector.openapi import openapi_document


def _body(response: Response) -> Any:
    return json.loads(bytes(response.body))


@pytest.mark.parametrize(
    ("exc", "status", "error"),
    [
        (InvalidRequestError("logs[0].url is empty"), 400, "invalid_request"),
        (SessionOwnershipError("session s belongs to a"), 400, "invalid_request"),
        (InvalidCursorError("cursor is not valid"), 400, "invalid_request"),
        (errors.ClientDisconnectedError("client disconnected mid-body"), 400, "invalid_request"),
        (errors.UnauthorizedError("a reader token is required"), 401, "unauthorized"),
        (NotFoundError("no session s"), 404, "not_found"),
        (errors.BodyTimeoutError("body not received within 30 s"), 408, "timeout"),
        (errors.BodyTooLargeError("body exceeds 4 bytes"), 413, "too_large"),
        (errors.OverloadedError("too many"), 429, "overloaded"),
        (StorageUnavailableError("connection refused"), 503, "unavailable"),
        (QueryError("a client-side error reaching the app is a bug"), 500, "internal_error"),
        (KeyError("bug"), 500, "internal_error"),
    ],
)
def test_each_failure_has_its_status(exc: Exception, status: int, error: str) -> None:
    spec = errors.spec_for(exc)
    assert (spec.status, spec.error) == (status, error)
    assert errors.spec_for(type(exc)) is spec
    response = errors.json_error(exc)
    assert response.status_code == status
    assert _body(response)["error"] == error


def test_details_show_the_clients_mistake_but_hide_the_servers() -> None:
    assert errors.detail_of(InvalidRequestError("logs[3].session_id is not a UUID")) == (
        "logs[3].session_id is not a UUID"
    )
    assert errors.detail_of(StorageUnavailableError("FATAL: password for db1")) == (
        "database unavailable, retry later"
    )
    assert errors.detail_of(RuntimeError("stack details")) == "the collector failed on this request"
    assert _body(errors.json_error(RuntimeError("x"), detail="nothing stored")) == {
        "error": "internal_error",
        "detail": "nothing stored",
    }


def test_retry_after_and_connection_close_come_with_their_statuses() -> None:
    assert errors.json_error(errors.OverloadedError("busy")).headers["Retry-After"] == "1"
    assert errors.json_error(StorageUnavailableError("down")).headers["Retry-After"] == "5"
    assert errors.json_error(errors.BodyTimeoutError("slow")).headers["Connection"] == "close"
    assert "Retry-After" not in errors.json_error(InvalidRequestError("bad")).headers


def test_fields_go_to_the_answer_and_context_only_to_the_log() -> None:
    exc = errors.BodyTooLargeError("too big", fields={"limit": 4}, context={"size": 9})
    assert _body(errors.json_error(exc)) == {
        "error": "too_large",
        "detail": "too big",
        "limit": 4,
    }


def test_only_the_last_resort_is_unexpected() -> None:
    assert Exception not in errors.EXPECTED
    assert set(errors.EXPECTED) == set(errors.ERRORS) - {Exception}
    assert not isinstance(KeyError("bug"), errors.EXPECTED)


def test_openapi_statuses_come_from_the_registry() -> None:
    paths = openapi_document(OPERATIONS)["paths"]
    for op in OPERATIONS:
        responses = paths[op.path][op.method.lower()]["responses"]
        expected = {"200"} | {str(errors.spec_for(e).status) for e in op.errors}
        assert set(responses) == expected
        for error in op.errors:
            answer = responses[str(errors.spec_for(error).status)]
            assert ("headers" in answer) == (errors.spec_for(error).retry_after is not None)
    ingest = paths["/api/v1/boundary-logs"]["post"]["responses"]
    assert set(ingest) == {"200", "400", "401", "408", "413", "429", "500", "503"}

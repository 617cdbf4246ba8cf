"""The app's assembly and its small pure parts (tokens in headers, redirect targets), sans I/O."""

from __future__ import annotations

from pathlib import Path

import pytest
from starlette.routing import Route

from boundary_audit.collector import create_app, open_storage
from boundary_audit.collector.api import OPERATIONS
from boundary_audit.collector.auth import bearer_token, safe_next
from boundary_audit.collector.completeness import Facts, assess
from boundary_audit.collector.model import EVENT_JSON_FIELDS, EventRecord, SessionSummary
from boundary_audit.collector.openapi import openapi_document


def test_every_operation_is_served(tmp_path: Path) -> None:
    with open_storage(f"sqlite:///{tmp_path / 'app.db'}") as storage:
        app = create_app(storage)
    served = {
        (route.path, method)
        for route in app.routes
        if isinstance(route, Route)
        for method in route.methods or ()
    }
    assert {(op.path, op.method) for op in OPERATIONS} <= served
    assert {("/", "GET"), ("/login", "POST"), ("/healthz", "GET")} <= served


def test_the_documented_schemas_are_what_the_api_writes() -> None:
    schemas = openapi_document(OPERATIONS)["components"]["schemas"]
    event = EventRecord(1, "s", 2, 3, 4, True, "GET", "https://h/", "h", "r").to_json()
    assert list(schemas["Event"]["properties"]) == list(EVENT_JSON_FIELDS) == list(event)
    assert schemas["Event"]["required"] == list(EVENT_JSON_FIELDS)
    session = SessionSummary("s", "a", "w", "p", 1, 2, 3, 4, 5, 6).to_json()
    assert set(schemas["Session"]["required"]) == set(session)
    assert set(schemas["Session"]["properties"]) == {*session, "dropped_by_reason"}
    verdict = assess(Facts(1, 0, 0, {}, opened=False, seal=None)).to_json()
    assert set(schemas["Completeness"]["properties"]) == set(verdict)


@pytest.mark.parametrize(
    ("header", "token"),
    [
        ("Bearer ba_abc", "ba_abc"),
        ("bearer   ba_abc  ", "ba_abc"),
        ("Bearer", None),
        ("Bearer    ", None),
        ("Basic abc", None),
        ("", None),
    ],
)
def test_bearer_token(header: str, token: str | None) -> None:
    assert bearer_token(header) == token


@pytest.mark.parametrize(
    ("target", "safe"),
    [
        ("/sessions/x?q=1", "/sessions/x?q=1"),
        ("//evil.test/", "/"),
        ("/\\evil.test", "/"),
        ("https://evil.test/", "/"),
        ("", "/"),
    ],
)
def test_login_redirects_stay_on_site(target: str, safe: str) -> None:
    assert safe_next(target) == safe

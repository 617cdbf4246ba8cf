"""The filter table, sans I/O: every surface reads the same rows and round-trips them."""

from __future__ import annotations

import dataclasses
import re
from typing import Any

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st
from starlette.datastructures import QueryParams

from boundary_audit.collector import EventQuery, InvalidRequestError
from boundary_audit.collector.api import OPERATIONS
from boundary_audit.collector.client import event_request
from boundary_audit.collector.filters import (
    DEFAULT_PAGE_SIZE,
    EVENT_FILTERS,
    event_query_params,
    filter_values,
    parse_event_query,
    sql_clauses,
)
from boundary_audit.collector.model import INT64_MAX, MAX_PAGE_SIZE
from boundary_audit.collector.openapi import openapi_document
from boundary_audit.collector.ui import templates

SESSION = "8d3c2a57-4a6e-4b8e-9a51-3c1f8e2b7d10"
#: Text a query string can carry (UTF-8 encodable, so no lone surrogates).
TEXT = st.text(alphabet=st.characters(exclude_categories=["Cs"]), min_size=1, max_size=30)
#: Times as the API writes them: whole microseconds.
TIMES = st.integers(min_value=0, max_value=INT64_MAX // 1000).map(lambda us: us * 1000)


def test_every_row_sets_its_own_event_query_field() -> None:
    fields = {f.name for f in dataclasses.fields(EventQuery)}
    assert {f.field for f in EVENT_FILTERS} <= fields
    assert len({f.field for f in EVENT_FILTERS}) == len(EVENT_FILTERS)
    assert len({f.name for f in EVENT_FILTERS}) == len(EVENT_FILTERS)


@given(
    allowed=st.none() | st.booleans(),
    host=st.none() | TEXT,
    url_contains=st.none() | TEXT,
    since_ns=st.none() | TIMES,
    until_ns=st.none() | TIMES,
    cursor=st.none() | TEXT,
    limit=st.integers(min_value=1, max_value=MAX_PAGE_SIZE),
    session_id=st.none() | st.just(SESSION),
)
def test_client_query_strings_parse_back_to_the_same_query(**values: Any) -> None:
    """What HttpSource sends is what the API reads, through real URL encoding."""
    query = EventQuery(**values)
    path, params = event_request(query)
    encoded = str(httpx.QueryParams(params))
    assert parse_event_query(QueryParams(encoded), query.session_id, DEFAULT_PAGE_SIZE) == query
    assert (SESSION in path) == (query.session_id is not None)


def test_empty_parameters_mean_any_and_limit_defaults() -> None:
    empty = QueryParams("decision=&host=&q=&since=&until=&cursor=&limit=")
    assert parse_event_query(empty, None, 7) == EventQuery(limit=7)


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("decision=maybe", "decision must be 'allowed' or 'denied'"),
        ("since=yesterday", "'yesterday' is not an RFC 3339 time"),
        ("until=1969-12-31T00:00:00Z", "outside the years 1970-2262"),
        ("limit=0", f"limit must be an integer from 1 to {MAX_PAGE_SIZE}"),
        (f"limit={MAX_PAGE_SIZE + 1}", "limit must be"),
        ("limit=ten", "limit must be"),
    ],
)
def test_bad_values_are_refused_by_name(query: str, message: str) -> None:
    with pytest.raises(InvalidRequestError, match=re.escape(message)):
        parse_event_query(QueryParams(query), None, DEFAULT_PAGE_SIZE)


def test_sql_has_one_clause_per_filter_set() -> None:
    query = EventQuery(allowed=False, host="API.Example", url_contains="/x", since_ns=5, until_ns=9)
    clauses, params = sql_clauses(query, "strpos")
    assert clauses == [
        "allowed = ?",
        "host = ?",
        "strpos(url, ?) > 0",
        "time_ns >= ?",
        "time_ns < ?",
    ]
    assert params == [False, "api.example", "/x", 5, 9]
    assert sql_clauses(EventQuery(host="", since_ns=0), "instr") == (["time_ns >= ?"], [0])


def test_openapi_lists_every_filter_on_both_event_listings() -> None:
    paths = openapi_document(OPERATIONS)["paths"]
    for path in ("/api/v1/events", "/api/v1/sessions/{session_id}/events"):
        listed = {p["name"]: p for p in paths[path]["get"]["parameters"]}
        for f in EVENT_FILTERS:
            assert listed[f.name]["in"] == "query"
            assert listed[f.name]["schema"] == dict(f.type.schema)
        assert {"limit", "cursor", "tail"} <= set(listed)
    assert paths["/api/v1/events"]["get"]["parameters"][0]["schema"] == {
        "type": "string",
        "enum": ["allowed", "denied"],
    }


def test_the_ui_form_has_a_field_per_filter_holding_its_value() -> None:
    values = filter_values(QueryParams('decision=denied&host=h.example&q="><b>'))
    assert values == {
        "decision": "denied",
        "host": "h.example",
        "q": '"><b>',
        "since": "",
        "until": "",
    }
    page = _session_page(values)
    for f in EVENT_FILTERS:
        assert re.search(rf'<(input|select) name="{f.name}"', page), f.name
    assert '<option value="denied" selected>denied</option>' in page
    assert 'name="host" value="h.example"' in page
    assert 'name="q" value="&#34;&gt;&lt;b&gt;"' in page


def _session_page(filters: dict[str, str]) -> str:
    from boundary_audit.collector.chart import chart_layout
    from boundary_audit.collector.model import SessionSummary

    summary = SessionSummary(SESSION, "a", "w", "p", 0, 0, 0, 0, -1, 0)
    return (
        templates()
        .get_template("session.html")
        .render(
            session=summary,
            events=[],
            total=0,
            first=1,
            last=0,
            span=None,
            hosts=[],
            host_total=0,
            drops={},
            chart=chart_layout([]),
            filter_fields=EVENT_FILTERS,
            filters=filters,
            filtering=True,
            next_link=None,
            first_link=None,
            logout=False,
        )
    )


def test_query_params_leave_unset_filters_out() -> None:
    assert event_query_params(EventQuery(host="", limit=3)) == {"limit": "3"}
    assert event_query_params(EventQuery(allowed=True, since_ns=0)) == {
        "decision": "allowed",
        "since": "1970-01-01T00:00:00.000000Z",
        "limit": "100",
    }

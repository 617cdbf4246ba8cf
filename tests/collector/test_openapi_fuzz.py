"""Schemathesis drives the JSON API from its OpenAPI document: no 500s, answers match it."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.core.result import Ok

from boundary_audit.collector import AppSettings, CollectorServer, open_storage
from boundary_audit.collector.ingest import parse_ingest_request

from .helpers import make_request

#: Examples per operation: enough to reach every parameter's edge cases,
#: few enough to keep the suite quick on two cores.
EXAMPLES_PER_OPERATION = 100


@schemathesis.serializer("application/x-protobuf")
def _protobuf_body(ctx: object, value: object) -> bytes:
    """Generated bodies are arbitrary bytes: the collector must reject them cleanly."""
    if isinstance(value, bytes):
        return value
    return str(value).encode()


@pytest.mark.timeout(300)
def test_api_conforms_to_its_openapi_document(tmp_path: Path) -> None:
    # Driven by hand rather than through schemathesis' pytest plugin, which
    # does not load under this pytest version.
    with open_storage(f"sqlite:///{tmp_path / 'fuzz.db'}") as storage:
        token = storage.create_token("fuzzer")
        ident = storage.authenticate(token)
        assert ident is not None
        request = make_request(str(uuid.uuid4()), range(50))
        storage.ingest(parse_ingest_request(request.SerializeToString()), ident)
        with CollectorServer(storage, AppSettings(require_read_auth=False)) as server:
            schema = schemathesis.openapi.from_url(server.url + "/api/v1/openapi.json")
            operations = []
            for result in schema.get_all_operations():
                assert isinstance(result, Ok), result.err()
                operations.append(result.ok())
            assert {op.path for op in operations} >= {
                "/api/v1/boundary-logs",
                "/api/v1/sessions",
                "/api/v1/sessions/{session_id}/events",
            }
            for operation in operations:

                @given(case=operation.as_strategy())
                @settings(
                    max_examples=EXAMPLES_PER_OPERATION,
                    deadline=None,
                    database=None,
                    suppress_health_check=list(HealthCheck),
                )
                def check(case: Any) -> None:
                    case.call_and_validate(
                        headers={"Authorization": f"Bearer {token}"},
                        # Opaque cursors and UUIDs of sessions that do not
                        # exist are schema-valid yet rightly refused (400/404).
                        excluded_checks=[schemathesis.checks.positive_data_acceptance],
                    )

                check()

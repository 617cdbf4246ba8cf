"""Issue 10 item 7 end to end: empty segments, ``%2F``, ``;`` and ``\\`` cannot
carry a request past a path rule, through ``boundary-audit run`` and its real
proxy to a real upstream.

The upstream records every request it receives; a server that merges slashes
(nginx), drops ``;`` parameters (Tomcat) or splits on ``\\`` (IIS) would have
served ``/admin/secret`` for each refused URL below, so none may reach it.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.cli.helpers import client_command, expected_output, run_boundary
from tests.proxy.helpers import Upstream

pytestmark = pytest.mark.timeout(90)

RULE = "domain=127.0.0.1 path=/public/*"
BYPASSES = [
    "/public//../admin/secret",
    "/public/%2F../admin/secret",
    "/public/%2f%2F../admin/secret",
    "/public/..;/admin/secret",
    "/public/..%3B/admin/secret",
    "/public/..\\admin/secret",
    "/public/..%5Cadmin/secret",
    "//public/../admin/secret",
]


def test_path_bypasses_are_denied_and_never_reach_the_upstream(
    http_upstream: Upstream, tmp_path: Path
) -> None:
    allowed = [http_upstream.url("/public/ok"), http_upstream.url("/public//ok;v=1")]
    denied = [http_upstream.url(path) for path in BYPASSES]
    result = run_boundary(
        ["run", "--no-audit-socket", "--allow", RULE, "--", *client_command(allowed + denied)],
        tmp_path,
    )
    expected = [(url, 200) for url in allowed] + [(url, 403) for url in denied]
    assert result.stdout == expected_output(expected), result.stderr
    received = [hit["raw_path"] for hit in http_upstream.hits]
    assert received == ["/public/ok", "/public//ok;v=1"]
    lines = [json.loads(line) for line in result.stderr.splitlines() if line.startswith("{")]
    audited = [line["url"] for line in lines if line.get("event") == "http_request"]
    assert audited == denied  # off a terminal, denials are logged (allowed ones at info)

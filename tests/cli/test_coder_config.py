"""docs/examples/coder-config.yaml, a Coder boundary config written from
Coder's documented keys, runs unchanged under ``boundary-audit run``."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest
import yaml

from boundary_audit.cli import resolve_run_settings
from boundary_audit.cli.config_file import load_config_file
from boundary_audit.wire import SOCKET_PATH_ENV
from tests.cli.helpers import client_command, expected_output, run_boundary
from tests.proxy.helpers import Upstream
from tests.receiver import Receiver
from tests.support import free_port

pytestmark = pytest.mark.timeout(90)

EXAMPLE = Path(__file__).resolve().parents[2] / "docs" / "examples" / "coder-config.yaml"
CODER_KEYS = {
    "allowlist",
    "jail_type",
    "log_dir",
    "log_level",
    "proxy_port",
    "disable_audit_logs",
    "use_real_dns",
    "no_user_namespace",
    "pprof_enabled",
    "pprof_port",
    "session_correlation_enabled",
    "session_id_inject_targets",
}


def test_the_example_uses_only_coders_keys_and_resolves_as_coder_would() -> None:
    assert set(load_config_file(EXAMPLE)) >= {"rules", "log_level", "proxy_port"}
    assert set(yaml.safe_load(EXAMPLE.read_text())) == CODER_KEYS
    settings = resolve_run_settings(["claude"], flags={"config": str(EXAMPLE)}, environ={})
    assert settings.rules[0] == "domain=dev.coder.com"
    assert len(settings.rules) == 8
    assert (settings.log_level, settings.log_dir, settings.proxy_port) == (
        "warning",
        "/tmp/boundary_logs",
        8087,
    )
    assert (settings.isolate_network, settings.disable_audit_socket) == (False, False)
    assert not settings.correlation.enabled
    assert settings.notices == ()  # the targets are off on purpose, nothing to warn of


def test_the_example_runs_unchanged_and_audits_allowed_and_denied(
    receiver: Receiver, http_upstream: Upstream, tmp_path: Path
) -> None:
    allowed = http_upstream.url("/allowed", host="localhost")
    denied_http = http_upstream.url("/denied")  # 127.0.0.1 is not in the allowlist
    denied_https = "https://exfil.example/upload"  # refused inside the tunnel
    session = str(uuid.uuid4())
    # The file is used as it is; only the two machine-wide resources it names
    # (port 8087, /tmp/boundary_logs) are moved, by Coder's own variables,
    # and the agent socket is shared the way Coder's agent shares it.
    log_dir = tmp_path / "boundary_logs"
    env = {
        "BOUNDARY_CONFIG": str(EXAMPLE),
        "PROXY_PORT": str(free_port()),
        "BOUNDARY_LOG_DIR": str(log_dir),
        SOCKET_PATH_ENV: str(receiver.path),
    }
    urls = [allowed, denied_http, denied_https]
    result = run_boundary(
        ["run", "--session-id", session, "--", *client_command(urls)], tmp_path, env=env
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == expected_output(
        [(allowed, 200), (denied_http, 403), (denied_https, 403)]
    )
    receiver.wait_for(lambda: len(receiver.sequence_numbers()) == 3)
    logs = [log for b in receiver.log_batches() for log in b.logs.logs]
    assert [(log.http_request.method, log.http_request.url, log.allowed) for log in logs] == [
        ("GET", allowed, True),
        ("GET", denied_http, False),
        ("GET", denied_https, False),
    ]
    assert logs[0].http_request.matched_rule == "domain=localhost"
    lines = [
        json.loads(x)
        for x in (log_dir / f"boundary-audit-{session}.jsonl").read_text().splitlines()
    ]
    assert sum(1 for x in lines if x.get("event") == "http_request") == 3

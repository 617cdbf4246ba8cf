"""``boundary-audit run`` as a user runs it: a real process, proxy, socket, upstream.

Output is captured here (not a terminal); what a terminal sees is in
test_terminal.py.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import uuid
from pathlib import Path

import pytest

from boundary_audit.proxy import SEQUENCE_NUMBER_HEADER, SESSION_ID_HEADER
from tests.cli.helpers import assert_refused, client_command, expected_output, run_boundary
from tests.proxy.helpers import Upstream
from tests.receiver import Receiver
from tests.support import free_port

pytestmark = pytest.mark.timeout(90)

ALLOW_LOCAL = "domain=127.0.0.1 path=/allowed"


def _print_env(name: str) -> list[str]:
    return [sys.executable, "-c", f"import os; print(os.environ.get({name!r}, '-'))"]


def test_run_audits_allowed_and_denied_requests_to_the_agent_socket(
    receiver: Receiver, http_upstream: Upstream, tmp_path: Path
) -> None:
    allowed_url = http_upstream.url("/allowed")
    denied_url = http_upstream.url("/denied", host="localhost")
    script = (
        "import urllib.request, urllib.error, sys\n"
        f"ok = urllib.request.urlopen({allowed_url!r}).read()\n"
        "try:\n"
        f"    urllib.request.urlopen({denied_url!r})\n"
        "except urllib.error.HTTPError as e:\n"
        "    print('denied', e.code, e.read().decode())\n"
        "print('upstream said', ok.decode())\n"
        "sys.exit(7)\n"
    )
    result = run_boundary(
        [
            "run",
            "--allow",
            ALLOW_LOCAL,
            "--audit-socket",
            str(receiver.path),
            "--process-name",
            "agent-under-test",
            "--",
            sys.executable,
            "-c",
            script,
        ],
        tmp_path,
    )
    assert result.returncode == 7, result.stderr  # the command's own exit code
    assert "upstream said" in result.stdout
    assert '"raw_path":"/allowed"' in result.stdout
    assert "/denied" not in {hit["raw_path"] for hit in http_upstream.hits}  # never left
    assert "denied 403" in result.stdout
    assert denied_url in result.stdout
    assert "--allow" in result.stdout  # the 403 body suggests a rule
    assert receiver.wait_for(lambda: len(receiver.sequence_numbers()) == 2)
    batches = receiver.log_batches()
    logs = [log for b in batches for log in b.logs.logs]
    assert [log.sequence_number for log in logs] == [0, 1]
    assert {b.logs.confined_process_name for b in batches} == {"agent-under-test"}
    assert len({b.logs.session_id for b in batches}) == 1
    allowed, denied = logs
    assert allowed.allowed
    assert allowed.http_request.url == allowed_url
    assert allowed.http_request.matched_rule == ALLOW_LOCAL
    assert not denied.allowed
    assert denied.http_request.matched_rule == ""
    # Off a terminal the default level is Coder's warn: denied requests are
    # logged (warning), allowed ones (info) are not.
    assert '"decision": "deny"' in result.stderr
    assert denied_url in result.stderr
    assert allowed_url not in result.stderr


def test_run_rejects_a_bad_rule_before_starting_anything(tmp_path: Path) -> None:
    result = run_boundary(
        ["run", "--allow", "domian=github.com", "--no-audit-socket", "--", "true"], tmp_path
    )
    assert result.returncode == 2
    assert "domian" in result.stderr


def test_run_reports_a_missing_command(tmp_path: Path) -> None:
    result = run_boundary(["run", "--no-audit-socket", "--", "no-such-command-xyz"], tmp_path)
    assert result.returncode == 127
    assert "no-such-command-xyz" in result.stderr


@pytest.mark.parametrize("level", ["debug", "info", "warn", "warning", "WARN", "error"])
def test_global_flags_are_accepted_after_the_subcommand(tmp_path: Path, level: str) -> None:
    result = run_boundary(
        ["run", "--log-level", level, "--log-format", "json", "--no-audit-socket", "--", "true"],
        tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert "usage:" not in result.stderr
    shown = {json.loads(line)["level"] for line in result.stderr.splitlines()}
    order = ["debug", "info", "warning", "error"]
    wanted = {"warn": "warning"}.get(level.lower(), level.lower())
    # With no rules, run warns that every request will be denied.
    assert ("warning" in shown) == (wanted != "error"), shown
    assert all(order.index(s) >= order.index(wanted) for s in shown), shown


def test_a_bad_log_level_names_the_choices(tmp_path: Path) -> None:
    result = run_boundary(["run", "--log-level", "loud", "--", "true"], tmp_path)
    assert result.returncode == 2
    assert "error, warn, info, debug" in result.stderr


def test_log_dir_gets_the_full_json_log_named_with_the_session_id(
    receiver: Receiver, http_upstream: Upstream, tmp_path: Path
) -> None:
    session = str(uuid.uuid4())
    log_dir = tmp_path / "logs" / "nested"
    allowed, denied = http_upstream.url("/allowed"), http_upstream.url("/nope")
    result = run_boundary(
        [
            "run",
            "--allow",
            ALLOW_LOCAL,
            "--audit-socket",
            str(receiver.path),
            "--session-id",
            session,
            "--log-dir",
            str(log_dir),
            "--log-level",
            "error",
            "--",
            *client_command([allowed, denied]),
        ],
        tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == expected_output([(allowed, 200), (denied, 403)])
    assert result.stderr == ""  # --log-level error: the terminal level only
    log_file = log_dir / f"boundary-audit-{session}.jsonl"
    assert [p.name for p in log_dir.iterdir()] == [log_file.name]
    assert log_file.stat().st_mode & 0o777 == 0o600
    assert log_dir.stat().st_mode & 0o777 == 0o700
    lines = [json.loads(line) for line in log_file.read_text().splitlines()]
    requests = [line for line in lines if line.get("event") == "http_request"]
    assert [(r["decision"], r["url"], r["level"]) for r in requests] == [
        ("allow", allowed, "info"),
        ("deny", denied, "warning"),
    ]
    assert {r["session_id"] for r in requests} == {session}
    events = {line.get("event") for line in lines}
    assert {"run settings", "proxy listening; starting command", "audit summary"} <= events


def test_log_dir_that_cannot_be_created_is_a_config_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    result = run_boundary(
        ["run", "--log-dir", str(blocker / "sub"), "--", "echo", "must not run"], tmp_path
    )
    assert_refused(result, "--log-dir")


def test_proxy_port_is_used_and_a_taken_one_is_a_clear_error(tmp_path: Path) -> None:
    port = free_port()
    result = run_boundary(
        ["run", "--proxy-port", str(port), "--no-audit-socket", "--", *_print_env("HTTP_PROXY")],
        tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"http://127.0.0.1:{port}"
    with socket.create_server(("127.0.0.1", 0)) as taken:
        busy = taken.getsockname()[1]
        result = run_boundary(
            ["run", "--no-audit-socket", "--", "echo", "must not run"],
            tmp_path,
            env={"PROXY_PORT": str(busy)},
        )
    assert result.returncode == 2
    assert f"environment variable PROXY_PORT: the proxy cannot listen on port {busy}" in (
        result.stderr
    )
    assert "address already in use" in result.stderr
    assert "must not run" not in result.stdout


def test_flag_beats_env_beats_config_file(tmp_path: Path) -> None:
    file_port, env_port, flag_port = free_port(), free_port(), free_port()
    config = tmp_path / "config.yaml"
    config.write_text(f"proxy_port: {file_port}\n")
    base = ["run", "--config", str(config), "--no-audit-socket"]
    cmd = ["--", *_print_env("HTTP_PROXY")]
    env = {"PROXY_PORT": str(env_port)}
    runs = {
        "file": run_boundary([*base, *cmd], tmp_path),
        "env": run_boundary([*base, *cmd], tmp_path, env=env),
        "flag": run_boundary([*base, "--proxy-port", str(flag_port), *cmd], tmp_path, env=env),
    }
    ports = {k: r.stdout.strip().rsplit(":", 1)[-1] for k, r in runs.items()}
    assert ports == {"file": str(file_port), "env": str(env_port), "flag": str(flag_port)}, {
        k: r.stderr for k, r in runs.items()
    }


def test_boundary_config_and_the_default_location_are_read(
    http_upstream: Upstream, tmp_path: Path
) -> None:
    url = http_upstream.url("/allowed")
    home_config = tmp_path / "home" / ".config" / "coder_boundary" / "config.yaml"
    home_config.parent.mkdir(parents=True)
    home_config.write_text(f"allowlist: ['{ALLOW_LOCAL}']\ndisable_audit_logs: true\n")
    by_default = run_boundary(["run", "--", *client_command([url])], tmp_path)
    assert by_default.stdout == expected_output([(url, 200)]), by_default.stderr
    other = tmp_path / "other.yaml"
    other.write_text("allowlist: [domain=example.invalid]\ndisable_audit_logs: true\n")
    chosen = run_boundary(
        ["run", "--", *client_command([url])], tmp_path, env={"BOUNDARY_CONFIG": str(other)}
    )
    assert chosen.stdout == expected_output([(url, 403)]), chosen.stderr


@pytest.mark.parametrize(
    ("text", "key", "fragment"),
    [
        ("allowlist: [domain=a.com]\nalow: [x]\n", "alow", "unknown setting"),
        ("pprof_enabled: true\n", "pprof_enabled", "no pprof server"),
        ("jail_type: chroot\n", "jail_type", "expected landjail"),
        ("proxy_port: http\n", "proxy_port", "expected a port number"),
        (
            "socket_path: /a.sock\nlog_proxy_socket_path: /b.sock\n",
            "log_proxy_socket_path",
            "contradicts",
        ),
    ],
)
def test_a_bad_config_file_exits_2_naming_file_and_key(
    tmp_path: Path, text: str, key: str, fragment: str
) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text(text)
    result = run_boundary(
        ["run", "--", "echo", "must not run"], tmp_path, env={"BOUNDARY_CONFIG": str(config)}
    )
    assert_refused(result, f"{config}: key {key!r}", fragment)


def test_a_missing_boundary_config_is_an_error(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    result = run_boundary(["run", "--", "true"], tmp_path, env={"BOUNDARY_CONFIG": str(missing)})
    assert result.returncode == 2
    assert f"{missing}: cannot read config file" in result.stderr


def test_real_dns_with_network_isolation_is_refused(tmp_path: Path) -> None:
    result = run_boundary(
        ["run", "--jail-type", "nsjail", "--", "echo", "must not run"],
        tmp_path,
        env={"BOUNDARY_USE_REAL_DNS": "true"},
    )
    assert_refused(result, "environment variable BOUNDARY_USE_REAL_DNS", "--jail-type", "no DNS")


def test_jail_type_nsjail_runs_the_command_in_its_own_network_namespace(tmp_path: Path) -> None:
    own = os.readlink("/proc/self/ns/net")
    show_ns = [sys.executable, "-c", "import os; print(os.readlink('/proc/self/ns/net'))"]
    isolated = run_boundary(
        ["run", "--no-audit-socket", "--", *show_ns], tmp_path, env={"BOUNDARY_JAIL_TYPE": "nsjail"}
    )
    landjail = run_boundary(
        ["run", "--no-audit-socket", "--jail-type", "landjail", "--", *show_ns], tmp_path
    )
    assert isolated.returncode == 0, isolated.stderr
    assert isolated.stdout.strip() not in ("", own)
    assert landjail.stdout.strip() == own


@pytest.mark.parametrize(
    "how",
    [["--disable-audit-logs"], ["--no-audit-socket"], "DISABLE_AUDIT_LOGS"],
)
def test_audit_socket_can_be_disabled_the_coder_way(
    receiver: Receiver, http_upstream: Upstream, tmp_path: Path, how: list[str] | str
) -> None:
    url = http_upstream.url("/allowed")
    flags = how if isinstance(how, list) else []
    env = {"DISABLE_AUDIT_LOGS": "true"} if isinstance(how, str) else {}
    result = run_boundary(
        [
            "run",
            *flags,
            "--audit-socket",
            str(receiver.path),
            "--allow",
            ALLOW_LOCAL,
            "--log-level",
            "info",
            "--",
            *client_command([url]),
        ],
        tmp_path,
        env=env,
    )
    assert result.returncode == 0, result.stderr
    assert url in result.stderr  # still audited on stderr
    assert receiver.connections == 0


@pytest.mark.parametrize("how", ["flag", "env"])
def test_coders_socket_path_spellings_reach_the_agent(
    receiver: Receiver, http_upstream: Upstream, tmp_path: Path, how: str
) -> None:
    url = http_upstream.url("/denied")
    flags = ["--log-proxy-socket-path", str(receiver.path)] if how == "flag" else []
    env = {"CODER_AGENT_BOUNDARY_LOG_PROXY_SOCKET_PATH": str(receiver.path)} if how == "env" else {}
    result = run_boundary(["run", *flags, "--", *client_command([url])], tmp_path, env=env)
    assert result.stdout == expected_output([(url, 403)]), result.stderr
    receiver.wait_for(lambda: len(receiver.sequence_numbers()) == 1)


def test_session_headers_reach_an_allowed_upstream(http_upstream: Upstream, tmp_path: Path) -> None:
    url = http_upstream.url("/allowed?correlated")
    session = str(uuid.uuid4())
    result = run_boundary(
        [
            "run",
            "--no-audit-socket",
            "--allow",
            ALLOW_LOCAL,
            "--session-id",
            session,
            "--session-header",
            "127.0.0.1",
            "--",
            *client_command([url]),
        ],
        tmp_path,
    )
    assert result.stdout == expected_output([(url, 200)]), result.stderr
    hit = next(h for h in http_upstream.hits if h.get("query") == "correlated")
    headers = {k.lower(): v for k, v in hit["headers"]}
    assert headers[SESSION_ID_HEADER.lower()] == session
    assert headers[SEQUENCE_NUMBER_HEADER.lower()] == "0"


def test_a_path_inject_target_from_coder_agent_url_gets_coders_headers(
    http_upstream: Upstream, tmp_path: Path
) -> None:
    """Coder's switch with no target: the target is derived from
    CODER_AGENT_URL (``path=/api/v2/aibridge/*``), and only requests under
    that path carry the headers, under Coder's names."""
    inside = http_upstream.url("/api/v2/aibridge/v1/chat?inside")
    outside = http_upstream.url("/api/v2/users?outside")
    session = str(uuid.uuid4())
    result = run_boundary(
        [
            "run",
            "--no-audit-socket",
            "--allow",
            "domain=127.0.0.1",
            "--session-id",
            session,
            "--enable-session-correlation",
            "--",
            *client_command([inside, outside]),
        ],
        tmp_path,
        env={"CODER_AGENT_URL": f"http://127.0.0.1:{http_upstream.port}/"},
    )
    assert result.stdout == expected_output([(inside, 200), (outside, 200)]), result.stderr
    hits = {h["query"]: {k.lower(): v for k, v in h["headers"]} for h in http_upstream.hits}
    assert hits["inside"]["x-coder-agent-firewall-session-id"] == session
    assert hits["inside"]["x-coder-agent-firewall-sequence-number"] == "0"
    assert "x-coder-agent-firewall-session-id" not in hits["outside"]


def test_session_header_names_are_configurable(http_upstream: Upstream, tmp_path: Path) -> None:
    url = http_upstream.url("/allowed?named")
    result = run_boundary(
        [
            "run",
            "--no-audit-socket",
            "--allow",
            ALLOW_LOCAL,
            "--session-header",
            "domain=127.0.0.1 path=/allowed",
            "--session-id-header",
            "X-Run-Id",
            "--sequence-number-header",
            "X-Run-Seq",
            "--",
            *client_command([url]),
        ],
        tmp_path,
    )
    assert result.stdout == expected_output([(url, 200)]), result.stderr
    hit = next(h for h in http_upstream.hits if h.get("query") == "named")
    headers = {k.lower(): v for k, v in hit["headers"]}
    assert headers["x-run-seq"] == "0"
    assert "x-run-id" in headers
    assert SESSION_ID_HEADER.lower() not in headers

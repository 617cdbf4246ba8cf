"""Merging run's settings: flag > environment > config file > default."""

from __future__ import annotations

import argparse
import uuid
from pathlib import Path

import pytest

from boundary_audit.cli import build_parser
from boundary_audit.cli.run_config import (
    DEFAULT_LOG_LEVEL,
    ConfigError,
    command_from_args,
    new_session_id,
    process_name_from_command,
    resolve_run_settings,
    settings_from_args,
)

FULL_CONFIG = """\
allow:
  - domain=github.com
  - method=GET,HEAD domain=*.pythonhosted.org path=/packages/*
allowlist: [domain=coder.example]
session_header_domains: [127.0.0.1]
log_level: error
log_dir: /var/log/from-file
proxy_port: 8087
socket_path: /run/boundary/audit.sock
disable_audit_socket: true
require_enforcement: false
jail_type: nsjail
process_name: claude-code
"""


def _write(tmp_path: Path, text: str, name: str = "boundary.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def _parse(argv: list[str]) -> argparse.Namespace:
    return build_parser().parse_args(["run", *argv])


def test_defaults_without_file_env_or_flags(tmp_path: Path) -> None:
    settings = settings_from_args(_parse(["curl", "https://example.com"]), environ={})
    assert settings.rules == ()
    assert settings.process_name == "curl"
    assert settings.log_level == DEFAULT_LOG_LEVEL == "warning"  # Coder's default
    assert (settings.log_dir, settings.proxy_port, settings.socket_path) == (None, 0, None)
    assert not settings.disable_audit_socket
    assert not settings.require_enforcement
    assert not settings.isolate_network
    assert not settings.correlation.enabled
    assert settings.config_path is None
    assert settings.origins == {}


def test_the_file_alone(tmp_path: Path) -> None:
    path = _write(tmp_path, FULL_CONFIG)
    settings = settings_from_args(_parse(["--config", str(path), "git"]), environ={})
    assert settings.rules == (
        "domain=github.com",
        "method=GET,HEAD domain=*.pythonhosted.org path=/packages/*",
        "domain=coder.example",
    )
    assert settings.correlation.targets == ("domain=127.0.0.1", "domain=*.127.0.0.1")
    assert (settings.log_level, settings.log_dir, settings.proxy_port) == (
        "error",
        "/var/log/from-file",
        8087,
    )
    assert settings.socket_path == "/run/boundary/audit.sock"
    assert settings.disable_audit_socket is True
    assert settings.isolate_network is True  # jail_type: nsjail
    assert settings.process_name == "claude-code"
    assert settings.config_path == str(path)
    assert settings.origins["isolate_network"] == f"{path}: key 'jail_type'"
    assert settings.origins["config"] == "--config"


def test_env_beats_the_file_and_flags_beat_both(tmp_path: Path) -> None:
    path = _write(tmp_path, FULL_CONFIG)
    env = {
        "BOUNDARY_ALLOW": "domain=env.example\ndomain=github.com",
        "BOUNDARY_LOG_LEVEL": "info",
        "BOUNDARY_LOG_DIR": "/var/log/from-env",
        "PROXY_PORT": "9001",
        "CODER_AGENT_BOUNDARY_LOG_PROXY_SOCKET_PATH": "/env.sock",
        "DISABLE_AUDIT_LOGS": "false",
        "BOUNDARY_JAIL_TYPE": "landjail",
    }
    from_env = settings_from_args(_parse(["--config", str(path), "git"]), environ=env)
    assert from_env.rules[-1] == "domain=env.example"  # combined, duplicates dropped
    assert len(from_env.rules) == 4
    assert (from_env.log_level, from_env.log_dir, from_env.proxy_port) == (
        "info",
        "/var/log/from-env",
        9001,
    )
    assert (from_env.socket_path, from_env.disable_audit_socket) == ("/env.sock", False)
    assert from_env.isolate_network is False
    assert from_env.origins["proxy_port"] == "environment variable PROXY_PORT"
    flags = [
        *("--config", str(path), "--allow", "domain=cli.example", "--log-level", "debug"),
        *("--log-dir", "/var/log/from-flag", "--proxy-port", "9002"),
        *("--log-proxy-socket-path", "/flag.sock", "--disable-audit-logs", "--isolate-network"),
        *("--require-enforcement", "--process-name", "my-agent", "--", "/usr/bin/git", "pull"),
    ]
    from_flags = settings_from_args(_parse(flags), environ=env)
    assert from_flags.rules == (*from_env.rules, "domain=cli.example")
    assert (from_flags.log_level, from_flags.log_dir, from_flags.proxy_port) == (
        "debug",
        "/var/log/from-flag",
        9002,
    )
    assert (from_flags.socket_path, from_flags.disable_audit_socket) == ("/flag.sock", True)
    assert (from_flags.isolate_network, from_flags.require_enforcement) == (True, True)
    assert from_flags.process_name == "my-agent"
    assert from_flags.origins["log_level"] == "--log-level"


def test_log_level_given_before_the_subcommand_counts_as_a_flag() -> None:
    args = build_parser().parse_args(["--log-level", "warn", "run", "true"])
    settings = settings_from_args(args, environ={"BOUNDARY_LOG_LEVEL": "debug"})
    assert settings.log_level == "warning"
    after = build_parser().parse_args(["--log-level", "error", "run", "--log-level", "info", "x"])
    assert settings_from_args(after, environ={}).log_level == "info"  # the later one


def test_config_location_from_the_environment(tmp_path: Path) -> None:
    path = _write(tmp_path, "proxy_port: 8087\n")
    settings = resolve_run_settings(["x"], environ={"BOUNDARY_CONFIG": str(path)})
    assert (settings.proxy_port, settings.config_path) == (8087, str(path))
    home = tmp_path / "home"
    default = home / ".config" / "coder_boundary" / "config.yaml"
    default.parent.mkdir(parents=True)
    default.write_text("proxy_port: 8088\n")
    assert resolve_run_settings(["x"], environ={"HOME": str(home)}).proxy_port == 8088
    override = {"HOME": str(home), "BOUNDARY_CONFIG": str(path)}
    assert resolve_run_settings(["x"], environ=override).proxy_port == 8087


@pytest.mark.parametrize(
    ("file", "env", "flags", "fragment"),
    [
        ("use_real_dns: true\njail_type: nsjail\n", {}, [], "key 'use_real_dns' (True) conflicts"),
        ("use_real_dns: true\n", {"BOUNDARY_JAIL_TYPE": "nsjail"}, [], "no DNS"),
        ("", {"BOUNDARY_NO_USER_NAMESPACE": "1"}, ["--isolate-network"], "cannot do without one"),
        ("no_user_namespace: true\n", {}, ["--jail-type", "nsjail"], "jail_type: landjail"),
    ],
)
def test_isolation_conflicts_name_both_sources(
    tmp_path: Path, file: str, env: dict[str, str], flags: list[str], fragment: str
) -> None:
    path = _write(tmp_path, file)
    with pytest.raises(ConfigError, match="conflicts with") as info:
        settings_from_args(_parse(["--config", str(path), *flags, "x"]), environ=env)
    assert fragment in str(info.value)


def test_without_isolation_real_dns_and_no_user_namespace_are_honoured(tmp_path: Path) -> None:
    path = _write(tmp_path, "use_real_dns: true\nno_user_namespace: true\njail_type: landjail\n")
    settings = settings_from_args(_parse(["--config", str(path), "x"]), environ={})
    assert settings.isolate_network is False
    flagged = _parse(["--use-real-dns", "--no-user-namespace", "--pprof-port", "6060", "x"])
    assert settings_from_args(flagged, environ={}).isolate_network is False


def test_a_later_source_can_lift_isolation_the_file_asked_for(tmp_path: Path) -> None:
    path = _write(tmp_path, "jail_type: nsjail\n")
    settings = settings_from_args(
        _parse(["--config", str(path), "--use-real-dns", "x"]),
        environ={"BOUNDARY_JAIL_TYPE": "landjail"},
    )
    assert settings.isolate_network is False


def test_session_correlation_through_the_sources(tmp_path: Path) -> None:
    env = {
        "CODER_AGENT_URL": "https://dev.coder.example/",
        "BOUNDARY_SESSION_CORRELATION_ENABLED": "true",
    }
    settings = settings_from_args(_parse(["x"]), environ=env)
    assert settings.correlation.targets == ("domain=dev.coder.example path=/api/v2/aibridge/*",)
    flagged = _parse(["--session-id-inject-target", "domain=a.example path=/v1/*", "x"])
    assert settings_from_args(flagged, environ=env).correlation.targets == (
        "domain=a.example path=/v1/*",
    )
    path = _write(tmp_path, "session_id_inject_targets: [domain=a.example]\n")
    quiet = settings_from_args(_parse(["--config", str(path), "x"]), environ={})
    assert not quiet.correlation.enabled
    assert len(quiet.notices) == 1
    assert "not enabled" in quiet.notices[0]


def test_bad_config_file_surfaces_through_settings(tmp_path: Path) -> None:
    path = _write(tmp_path, "allow: [domain=a.com]\nrequire_enforcment: true\n")
    with pytest.raises(ConfigError, match="require_enforcment") as info:
        settings_from_args(_parse(["--config", str(path), "--", "true"]), environ={})
    assert str(path) in str(info.value)


def test_session_ids_are_fresh_uuid4_or_the_given_uuid() -> None:
    first, second = new_session_id(), new_session_id()
    assert first != second
    assert uuid.UUID(first).version == 4
    chosen = str(uuid.uuid4()).upper()
    given = settings_from_args(_parse(["--session-id", chosen, "x"]), environ={})
    assert given.session_id == chosen.lower()
    with pytest.raises(ConfigError, match="--session-id must be a UUID"):
        settings_from_args(_parse(["--session-id", "ci-job-7", "x"]), environ={})


@pytest.mark.parametrize(
    ("command", "expected"),
    [
        (["/usr/bin/git", "pull"], "git"),
        (["python3", "-c", "pass"], "python3"),
        (["./node_modules/.bin/claude"], "claude"),
        (["/"], "/"),
    ],
)
def test_process_name_is_basename_of_argv0(command: list[str], expected: str) -> None:
    assert process_name_from_command(command) == expected


def test_process_name_override_and_errors() -> None:
    assert process_name_from_command(["/usr/bin/node", "cli.js"], " codex ") == "codex"
    with pytest.raises(ConfigError, match="no command"):
        process_name_from_command([])
    with pytest.raises(ConfigError, match="non-empty"):
        process_name_from_command(["git"], "   ")
    with pytest.raises(ConfigError, match="control characters"):
        process_name_from_command(["git\x1b[31m"])


def test_command_comes_after_the_double_dash() -> None:
    args = _parse(["--allow", "domain=a.com", "--", "/usr/bin/git", "pull", "--allow", "x"])
    assert command_from_args(args) == ["/usr/bin/git", "pull", "--allow", "x"]
    for argv in ([], ["--allow", "domain=a.com"], ["--allow", "domain=a.com", "--"]):
        with pytest.raises(ConfigError, match="no command given"):
            command_from_args(_parse(argv))

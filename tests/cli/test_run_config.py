"""Rule sources and settings of ``boundary-audit run``."""

from __future__ import annotations

import argparse
import os
import uuid
from pathlib import Path

import pytest

from boundary_audit.cli.run_config import (
    ALLOW_ENV_VAR,
    MAX_CONFIG_BYTES,
    ConfigError,
    FileConfig,
    add_run_arguments,
    collect_rules,
    command_from_args,
    load_config_file,
    new_session_id,
    parse_config_text,
    process_name_from_command,
    resolve_run_settings,
    rules_from_env,
    settings_from_args,
)

FULL_CONFIG = """\
allow:
  - domain=github.com
  - method=GET,HEAD domain=*.pythonhosted.org path=/packages/*
session_header_domains: [api.example.com, "*.corp.example"]
log_level: WARNING
socket_path: /run/boundary/audit.sock
disable_audit_socket: true
require_enforcement: false
isolate_network: true
process_name: claude-code
"""


def _write(tmp_path: Path, text: str, name: str = "boundary.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_full_config_file_is_read(tmp_path: Path) -> None:
    config = load_config_file(_write(tmp_path, FULL_CONFIG))
    assert config == FileConfig(
        allow=("domain=github.com", "method=GET,HEAD domain=*.pythonhosted.org path=/packages/*"),
        session_header_domains=("api.example.com", "*.corp.example"),
        log_level="warning",
        socket_path="/run/boundary/audit.sock",
        disable_audit_socket=True,
        require_enforcement=False,
        isolate_network=True,
        process_name="claude-code",
    )


@pytest.mark.parametrize("text", ["", "# only a comment\n", "---\n"])
def test_empty_config_sets_nothing(tmp_path: Path, text: str) -> None:
    assert load_config_file(_write(tmp_path, text)) == FileConfig()


def test_single_rule_string_is_accepted(tmp_path: Path) -> None:
    config = load_config_file(_write(tmp_path, "allow: domain=example.com\n"))
    assert config.allow == ("domain=example.com",)


@pytest.mark.parametrize(
    ("text", "key", "fragment"),
    [
        ("alow: [domain=x.com]\n", "alow", "unknown setting"),
        ("allow: {domain: x}\n", "allow", "expected a list of strings, got dict"),
        ("allow:\n  - domain=a.com\n  - 42\n", "allow[1]", "expected a string, got int"),
        ("allow: ['domain=a.com', '  ']\n", "allow[1]", "empty string"),
        ("session_header_domains: [1]\n", "session_header_domains[0]", "got int"),
        ("log_level: loud\n", "log_level", "expected one of debug, info, warning, error"),
        ("log_level: 3\n", "log_level", "non-empty string"),
        ("disable_audit_socket: 'yes'\n", "disable_audit_socket", "expected true or false"),
        ("require_enforcement: 1\n", "require_enforcement", "expected true or false"),
        ('isolate_network: "true"\n', "isolate_network", "expected true or false"),
        ("socket_path: ''\n", "socket_path", "non-empty string"),
        ('process_name: "a\\tb"\n', "process_name", "control characters"),
        ("process_name: " + "x" * 200 + "\n", "process_name", "longer than"),
    ],
)
def test_invalid_values_name_file_and_key(
    tmp_path: Path, text: str, key: str, fragment: str
) -> None:
    path = _write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config_file(path)
    message = str(info.value)
    assert str(path) in message
    assert f"key {key!r}" in message
    assert fragment in message
    assert info.value.source == str(path)
    assert info.value.key == key


def test_yaml_syntax_error_names_file_and_line(tmp_path: Path) -> None:
    path = _write(tmp_path, "allow:\n  - domain=a.com\n  - [unclosed\n")
    with pytest.raises(ConfigError, match=r"invalid YAML: line \d+, column \d+") as info:
        load_config_file(path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize("text", ["- domain=a.com\n", "just a string\n", "42\n"])
def test_top_level_must_be_a_mapping(tmp_path: Path, text: str) -> None:
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load_config_file(_write(tmp_path, text))


def test_unreadable_and_missing_files(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError, match="cannot read config file") as info:
        load_config_file(missing)
    assert str(missing) in str(info.value)
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_config_file(tmp_path)  # a directory


def test_non_utf8_and_oversized_files(tmp_path: Path) -> None:
    latin = tmp_path / "latin.yaml"
    latin.write_bytes(b"allow: [domain=caf\xe9.com]\n")
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_config_file(latin)
    huge = tmp_path / "huge.yaml"
    huge.write_bytes(b"#" * (MAX_CONFIG_BYTES + 1))
    with pytest.raises(ConfigError, match="larger than"):
        load_config_file(huge)


def test_yaml_tags_cannot_build_objects() -> None:
    # safe_load: a config file is data, never code.
    with pytest.raises(ConfigError, match="invalid YAML"):
        parse_config_text("allow: !!python/object/apply:os.system ['true']\n", "evil.yaml")


def test_env_rules_are_one_per_line() -> None:
    env = {
        ALLOW_ENV_VAR: "domain=a.com\n\n  method=GET domain=b.com path=/x;y,/z  \r\ndomain=c.com"
    }
    assert rules_from_env(env) == [
        "domain=a.com",
        "method=GET domain=b.com path=/x;y,/z",
        "domain=c.com",
    ]
    assert rules_from_env({}) == []
    assert rules_from_env({ALLOW_ENV_VAR: "  \n "}) == []


def test_env_rules_default_to_process_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ALLOW_ENV_VAR, "domain=from-env.example")
    assert rules_from_env() == ["domain=from-env.example"]
    assert os.environ[ALLOW_ENV_VAR] == "domain=from-env.example"


def test_rules_are_collected_in_order_without_duplicates() -> None:
    file_config = FileConfig(allow=("domain=file.example", "domain=shared.example"))
    env = {ALLOW_ENV_VAR: "domain=env.example\ndomain=shared.example"}
    rules = collect_rules(["domain=cli.example", " domain=env.example "], env, file_config)
    assert rules == [
        "domain=file.example",
        "domain=shared.example",
        "domain=env.example",
        "domain=cli.example",
    ]
    assert collect_rules([], {}, None) == []


def test_empty_cli_rule_is_an_error() -> None:
    with pytest.raises(ConfigError, match=r"--allow: empty rule"):
        collect_rules(["domain=a.com", "  "], {})


def test_session_ids_are_fresh_uuid4() -> None:
    first, second = new_session_id(), new_session_id()
    assert first != second
    parsed = uuid.UUID(first)
    assert parsed.version == 4
    assert str(parsed) == first


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
    with pytest.raises(ConfigError, match="empty"):
        process_name_from_command(["git"], "   ")
    with pytest.raises(ConfigError, match="control characters"):
        process_name_from_command(["git\x1b[31m"])


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="boundary-audit run")
    add_run_arguments(parser)
    return parser.parse_args(argv)


def test_flags_override_file_and_rules_combine(tmp_path: Path) -> None:
    path = _write(tmp_path, FULL_CONFIG)
    args = _parse(
        [
            "--config",
            str(path),
            "--allow",
            "domain=cli.example",
            "--session-header",
            "api.example.com",
            "--session-header",
            "extra.example",
            "--audit-socket",
            "/tmp/other.sock",
            "--require-enforcement",
            "--process-name",
            "my-agent",
            "--",
            "/usr/bin/git",
            "pull",
            "--allow",
            "not-a-flag-here",
        ]
    )
    assert command_from_args(args) == ["/usr/bin/git", "pull", "--allow", "not-a-flag-here"]
    settings = settings_from_args(args, environ={ALLOW_ENV_VAR: "domain=env.example"})
    assert settings.rules == (
        "domain=github.com",
        "method=GET,HEAD domain=*.pythonhosted.org path=/packages/*",
        "domain=env.example",
        "domain=cli.example",
    )
    assert settings.session_header_domains == ("api.example.com", "*.corp.example", "extra.example")
    assert settings.socket_path == "/tmp/other.sock"
    assert settings.require_enforcement is True  # flag beats the file's false
    assert settings.disable_audit_socket is True  # from the file
    assert settings.isolate_network is True  # from the file
    assert settings.process_name == "my-agent"
    assert settings.log_level == "warning"
    assert uuid.UUID(settings.session_id).version == 4


def test_defaults_without_file_or_flags() -> None:
    settings = settings_from_args(_parse(["curl", "https://example.com"]), environ={})
    assert settings.rules == ()
    assert settings.process_name == "curl"
    assert settings.socket_path is None
    assert settings.disable_audit_socket is False
    assert settings.require_enforcement is False
    assert settings.isolate_network is False
    assert settings.log_level is None


def test_file_process_name_used_when_no_flag(tmp_path: Path) -> None:
    path = _write(tmp_path, "process_name: codex\n")
    settings = resolve_run_settings(["node", "cli.js"], config_path=path, environ={})
    assert settings.process_name == "codex"


def test_missing_command_is_an_error() -> None:
    for argv in ([], ["--allow", "domain=a.com"], ["--allow", "domain=a.com", "--"]):
        with pytest.raises(ConfigError, match="no command given"):
            command_from_args(_parse(argv))


def test_bad_config_file_surfaces_through_settings(tmp_path: Path) -> None:
    path = _write(tmp_path, "allow: [domain=a.com]\nrequire_enforcment: true\n")
    with pytest.raises(ConfigError, match="require_enforcment") as info:
        settings_from_args(_parse(["--config", str(path), "--", "true"]), environ={})
    assert str(path) in str(info.value)

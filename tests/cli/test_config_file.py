"""Where run's config file is found, and how a bad one is reported."""

from __future__ import annotations

from pathlib import Path

import pytest

from boundary_audit.cli.config_file import (
    CONFIG_ENV_VAR,
    MAX_CONFIG_BYTES,
    find_config_file,
    load_config_file,
    parse_config_text,
)
from boundary_audit.cli.options import ConfigError


def _home_config(home: Path) -> Path:
    path = home / ".config" / "coder_boundary" / "config.yaml"
    path.parent.mkdir(parents=True)
    path.write_text("allowlist: [domain=a.com]\n")
    return path


def test_flag_then_variable_then_the_default_when_present(tmp_path: Path) -> None:
    default = _home_config(tmp_path)
    env = {"HOME": str(tmp_path)}
    assert find_config_file(None, env) == (default, "the default location")
    chosen = {**env, CONFIG_ENV_VAR: "/etc/b.yaml"}
    assert find_config_file(None, chosen) == (
        Path("/etc/b.yaml"),
        f"environment variable {CONFIG_ENV_VAR}",
    )
    assert find_config_file("/etc/c.yaml", chosen) == (Path("/etc/c.yaml"), "--config")


def test_no_default_file_no_config(tmp_path: Path) -> None:
    assert find_config_file(None, {"HOME": str(tmp_path)}) == (None, "none")
    assert find_config_file(None, {}) == (None, "none")  # no HOME at all
    assert find_config_file(None, {"HOME": str(tmp_path), CONFIG_ENV_VAR: " "}) == (None, "none")


@pytest.mark.parametrize("text", ["", "# only a comment\n", "---\n"])
def test_an_empty_config_sets_nothing(text: str) -> None:
    assert parse_config_text(text, "c.yaml") == {}


def test_yaml_syntax_error_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("allow:\n  - domain=a.com\n  - [unclosed\n")
    with pytest.raises(ConfigError, match=r"invalid YAML: line \d+, column \d+") as info:
        load_config_file(path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize("text", ["- domain=a.com\n", "just a string\n", "42\n"])
def test_top_level_must_be_a_mapping(text: str) -> None:
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        parse_config_text(text, "c.yaml")


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

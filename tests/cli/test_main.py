"""The top-level command: global options before or after any subcommand."""

from __future__ import annotations

import argparse

import pytest

from boundary_audit.cli import build_parser


def _subcommands() -> dict[str, argparse.ArgumentParser]:
    action = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


@pytest.mark.parametrize("name", sorted(_subcommands()))
def test_every_subcommand_takes_the_global_options(name: str) -> None:
    options = _subcommands()[name]._option_string_actions
    assert {"--log-level", "--log-format"} <= set(options)


def test_after_the_subcommand_wins_and_absent_keeps_the_global_value() -> None:
    parser = build_parser()
    assert parser.parse_args(["run", "x"]).log_level is None
    assert parser.parse_args(["--log-level", "warn", "run", "x"]).log_level == "warning"
    both = parser.parse_args(["--log-level", "error", "run", "--log-level", "debug", "x"])
    assert both.log_level == "debug"
    fmt = parser.parse_args(["--log-format", "json", "run", "x"])
    assert (fmt.log_format, fmt.default_log_level) == ("json", "warning")


def test_run_defaults_to_warn_and_auto_format_other_commands_to_info_and_json() -> None:
    subcommands = _subcommands()
    assert subcommands["run"].get_default("default_log_level") == "warning"
    assert subcommands["run"].get_default("auto_log_format") is True
    for name, parser in subcommands.items():
        if name != "run":  # main() falls back to info and JSON
            assert parser.get_default("default_log_level") is None, name
            assert parser.get_default("auto_log_format") is None, name

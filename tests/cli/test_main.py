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


def test_run_defaults_to_warn_other_commands_to_info() -> None:
    subcommands = _subcommands()
    assert subcommands["run"].get_default("default_log_level") == "warning"
    others = {n: p.get_default("default_log_level") for n, p in subcommands.items() if n != "run"}
    assert set(others.values()) == {None}  # main() falls back to info

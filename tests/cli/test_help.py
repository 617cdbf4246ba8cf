"""Every command's --help has a description, its defaults and an example; global
flags work after the subcommand (run as a user would, in a subprocess)."""

from __future__ import annotations

import argparse
from collections.abc import Iterator

import pytest

from boundary_audit.cli import build_parser
from boundary_audit.cli.help import EXAMPLE_HEADING
from tests.support.processes import run_cli


def _walk(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield (*path, name)
                yield from _walk(sub, (*path, name))


COMMANDS = sorted(_walk(build_parser()))


def _parser(path: tuple[str, ...]) -> argparse.ArgumentParser:
    parser = build_parser()
    for name in path:
        action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        parser = action.choices[name]
    return parser


def test_the_walk_finds_the_commands_people_use() -> None:
    assert {("logs",), ("sessions",), ("collector",), ("tokens", "list"), ("run",)} <= set(COMMANDS)


@pytest.mark.parametrize("path", COMMANDS, ids=" ".join)
def test_help_has_a_description_defaults_and_an_example(path: tuple[str, ...]) -> None:
    result = run_cli(*path, "--help")
    text = result.stdout
    parser = _parser(path)
    assert parser.description, f"{' '.join(path)} has no description"
    assert parser.description.split()[0] in text
    assert "example" in text.lower(), f"{' '.join(path)} --help shows no example"
    for action in parser._actions:
        shown = action.default not in (None, False, True, argparse.SUPPRESS, "", [])
        if shown and action.help not in (None, argparse.SUPPRESS) and action.option_strings:
            assert "default" in str(action.help), (path, action.option_strings)


def test_examples_are_in_their_own_section() -> None:
    assert EXAMPLE_HEADING in run_cli("logs", "--help").stdout


@pytest.mark.parametrize(
    "argv",
    [
        ["run", "--log-level", "debug", "--help"],
        ["sessions", "--log-level", "debug", "--help"],
        ["logs", "-q", "--help"],
        ["logs", "-v", "--help"],
    ],
)
def test_global_flags_after_the_subcommand(argv: list[str]) -> None:
    result = run_cli(*argv)
    assert f"usage: boundary-audit {argv[0]}" in result.stdout

"""The ``boundary-audit`` console command.

Each component registers its own subcommands from its ``cli`` module, so
this file only knows their names. A module exposes ``register(subparsers)``,
which adds parsers whose ``func`` default takes the parsed namespace and
returns an exit code (and may set ``default_log_level`` and
``auto_log_format``, console output on a terminal). The ``run``
command, the one place the proxy and confinement meet, lives here
(:mod:`.run`; its settings in :mod:`.run_config`, whose API is re-exported
below, from :mod:`.options`, :mod:`.config_file` and :mod:`.correlation`).

The global options (``--log-level``, ``--log-format``, ``-q``, ``-v``) are
accepted before the subcommand and after it (``boundary-audit run --log-level
debug -- cmd``). :mod:`.help` gives every command a description, its
defaults and an example. A closed stdout (``logs --json | head -1``) ends
the command quietly with status 0.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Callable, Sequence

from .. import __version__
from ..logs import (
    LOG_FORMATS,
    LOG_LEVEL_CHOICES,
    LogFormat,
    configure_logging,
    normalize_level,
)
from .config_file import CONFIG_ENV_VAR, find_config_file
from .correlation import SessionCorrelation, default_inject_target
from .help import complete_help
from .options import ENV_VARS, FILE_KEYS
from .run_config import (
    ALLOW_ENV_VAR,
    DEFAULT_LOG_LEVEL,
    ConfigError,
    RunSettings,
    add_run_arguments,
    command_from_args,
    load_config_file,
    new_session_id,
    process_name_from_command,
    resolve_run_settings,
    settings_from_args,
)

#: Modules that contribute subcommands, in the order they appear in --help.
COMMAND_MODULES: tuple[str, ...] = (
    "boundary_audit.quickstart",
    "boundary_audit.cli.run",
    "boundary_audit.cli.rules",
    "boundary_audit.agent.cli",
    "boundary_audit.collector.cli",
    "boundary_audit.collector.verify_cli",
)
#: Level of commands that do not choose their own (``run`` says warn).
FALLBACK_LOG_LEVEL = "info"

Handler = Callable[[argparse.Namespace], int]


def _level(value: str) -> str:
    try:
        return normalize_level(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _add_global_options(parser: argparse.ArgumentParser, default: object) -> None:
    parser.add_argument(
        "--log-level",
        type=_level,
        default=default,
        metavar="|".join(LOG_LEVEL_CHOICES),
        help="minimum level of log lines (run: warn; other commands: info)",
    )
    parser.add_argument(
        "--log-format",
        choices=LOG_FORMATS,
        default=default,
        help="log output on stderr (default: json; for run, console on a terminal)",
    )
    parser.add_argument(
        "-q",
        "--quiet",
        action="store_true",
        default=default,
        help="no notices or hints on stderr (errors are still shown)",
    )
    parser.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        default=default,
        help="debug log lines (the same as --log-level debug)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="boundary-audit",
        description="Audit trail of every network request made by confined processes.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    _add_global_options(parser, None)
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    for subparser in subparsers.choices.values():
        # SUPPRESS: given after the subcommand it wins; not given, the value
        # from before the subcommand (or None) stays.
        _add_global_options(subparser, argparse.SUPPRESS)
    complete_help(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    verbose = "debug" if args.verbose else None
    level = str(args.log_level or verbose or getattr(args, "default_log_level", FALLBACK_LOG_LEVEL))
    # JSON unless chosen; a command that shares a terminal with people (run)
    # asks for console output there instead (auto_log_format).
    fmt: LogFormat | None = args.log_format or (
        None if getattr(args, "auto_log_format", False) else "json"
    )
    configure_logging(level, fmt)
    handler: Handler = args.func
    try:
        return handler(args)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return _pipe_closed()


def _pipe_closed() -> int:
    """The reader of stdout went away (``| head -1``): that is the reader's
    choice, not a failure. Point stdout at /dev/null so the interpreter's
    final flush does not fail again, and exit 0."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
    return 0


__all__ = [
    "ALLOW_ENV_VAR",
    "COMMAND_MODULES",
    "CONFIG_ENV_VAR",
    "DEFAULT_LOG_LEVEL",
    "ENV_VARS",
    "FILE_KEYS",
    "ConfigError",
    "RunSettings",
    "SessionCorrelation",
    "add_run_arguments",
    "build_parser",
    "command_from_args",
    "default_inject_target",
    "find_config_file",
    "load_config_file",
    "main",
    "new_session_id",
    "process_name_from_command",
    "resolve_run_settings",
    "settings_from_args",
]

"""The ``boundary-audit`` console command.

Each component registers its own subcommands from its ``cli`` module, so
this file only knows their names. A module exposes ``register(subparsers)``,
which adds parsers whose ``func`` default takes the parsed namespace and
returns an exit code. The ``run`` command, the one place the proxy and
confinement meet, lives here (:mod:`.run`, its settings in :mod:`.run_config`,
whose API is re-exported below).
"""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Callable, Sequence

from .. import __version__
from ..logs import LOG_LEVELS, configure_logging
from .run_config import (
    ALLOW_ENV_VAR,
    ConfigError,
    FileConfig,
    RunSettings,
    add_run_arguments,
    collect_rules,
    command_from_args,
    load_config_file,
    new_session_id,
    process_name_from_command,
    resolve_run_settings,
    rules_from_env,
    settings_from_args,
)

#: Modules that contribute subcommands, in the order they appear in --help.
COMMAND_MODULES: tuple[str, ...] = (
    "boundary_audit.quickstart",
    "boundary_audit.cli.run",
    "boundary_audit.agent.cli",
    "boundary_audit.collector.cli",
)

Handler = Callable[[argparse.Namespace], int]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="boundary-audit",
        description="Audit trail of every network request made by confined processes.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument(
        "--log-level", choices=LOG_LEVELS, default="info", help="minimum level of log lines"
    )
    parser.add_argument(
        "--log-format",
        choices=("json", "console"),
        default="json",
        help="structured log output on stderr (default: json)",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    configure_logging(args.log_level, args.log_format)
    handler: Handler = args.func
    try:
        return handler(args)
    except KeyboardInterrupt:
        return 130


__all__ = [
    "ALLOW_ENV_VAR",
    "COMMAND_MODULES",
    "ConfigError",
    "FileConfig",
    "RunSettings",
    "add_run_arguments",
    "build_parser",
    "collect_rules",
    "command_from_args",
    "load_config_file",
    "main",
    "new_session_id",
    "process_name_from_command",
    "resolve_run_settings",
    "rules_from_env",
    "settings_from_args",
]

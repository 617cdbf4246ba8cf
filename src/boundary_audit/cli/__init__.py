"""The ``boundary-audit`` console command.

Each component registers its own subcommands from its ``cli`` module (the
``run`` command, which joins the proxy and confinement, lives here in
:mod:`.run`), so this file only knows their names. A module exposes ``register(subparsers)``, which
adds parsers whose ``func`` default takes the parsed namespace and returns an
exit code.
"""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Callable, Sequence

from .. import __version__
from ..logs import LOG_LEVELS, configure_logging

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

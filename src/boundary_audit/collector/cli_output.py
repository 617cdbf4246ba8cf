"""How the read commands (``sessions``, ``logs``, ``tokens list``) print.

For people: a table sized to the terminal where the URL gets the width and
ids/rules are cut with an ellipsis instead of folding into tall cells;
decisions as ``allow``/``deny``; colour only on a terminal and never when
``NO_COLOR`` is set. For scripts: ``--json`` is one JSON document (an array),
``--jsonl`` one object per line. Notices ("showing N of M") go to stderr so
a pipe carries only data. The cell formatting is pure; :func:`print_table`
and :func:`print_rows` are the edge.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, TextIO

from .model import CollectorError

Format = Literal["table", "json", "jsonl"]

#: Characters of a session id shown by default: 8 hex digits (the first
#: group of a UUID) tell apart far more sessions than any table shows, and
#: ``--full-ids`` or ``--json`` give the whole id.
SHORT_ID_CHARS = 8
#: Table width when stdout is not a terminal (a pipe or file): wide enough
#: that URLs stay on one line for grep, where 80 columns would cut them.
PIPE_WIDTH = 240
#: Environment variable that turns colour off whatever its value (no-color.org).
NO_COLOR_ENV = "NO_COLOR"


@dataclass(frozen=True, slots=True)
class Column:
    """A table column: the row key, its heading and how it may shrink."""

    key: str
    heading: str
    #: Takes the width left over (the URL), cut with an ellipsis when too
    #: narrow; the other columns keep their content's width, up to ``cap``.
    wide: bool = False
    #: Widest a narrow column gets (longer cells end in an ellipsis).
    cap: int = 40
    justify: Literal["left", "right"] = "left"


def add_format_flags(parser: Any, what: str) -> None:
    """``--json`` (one document) and ``--jsonl`` (one object per line), mutually exclusive."""
    group = parser.add_mutually_exclusive_group()
    group.add_argument(
        "--json",
        dest="format",
        action="store_const",
        const="json",
        default="table",
        help=f"one JSON array of {what} (default: a table for people)",
    )
    group.add_argument(
        "--jsonl",
        dest="format",
        action="store_const",
        const="jsonl",
        help=f"one JSON object per line ({what}), for streaming",
    )


def short_id(value: object, full: bool) -> str:
    text = "" if value is None else str(value)
    return text if full else text[:SHORT_ID_CHARS]


def decision_word(allowed: object) -> str:
    return "allow" if allowed else "deny"


def colour_wanted(stream: TextIO, environ: Mapping[str, str] = os.environ) -> bool:
    """Colour only for a terminal, and never when ``NO_COLOR`` is set (to anything)."""
    if NO_COLOR_ENV in environ:
        return False
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())


def showing_notice(shown: int, total: int, what: str) -> str:
    """``showing 100 of 4599 events, newest first (use --limit N or --all)``; "" when all."""
    if shown >= total:
        return ""
    return f"showing {shown} of {total} {what}, newest first (use --limit N or --all)"


def print_rows(rows: Sequence[Mapping[str, Any]], fmt: Format, out: TextIO | None = None) -> None:
    """``rows`` as one JSON array (``json``) or one object per line (``jsonl``)."""
    out = out or sys.stdout
    if fmt == "json":
        json.dump(list(rows), out, indent=2)
        out.write("\n")
    else:
        for row in rows:
            out.write(json.dumps(row) + "\n")
    out.flush()


def print_table(
    title: str | None,
    columns: Sequence[Column],
    rows: Iterable[Mapping[str, Any]],
    styles: Mapping[str, str] | None = None,
) -> None:
    """A rich table on stdout; ``styles`` maps a cell text to its style (``deny`` -> red)."""
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    colour = colour_wanted(sys.stdout)
    console = Console(
        no_color=not colour,
        highlight=False,
        # A terminal's width; a pipe gets the wide default whatever COLUMNS
        # says (shells export 80 to scripts, which would cut URLs for grep).
        width=None if sys.stdout.isatty() else PIPE_WIDTH,
        color_system="auto" if colour else None,
    )
    # One space between columns, none at the edges: every column counts at 100.
    table = Table(
        title=title,
        box=None,
        header_style="bold" if colour else "",
        padding=(0, 1, 0, 0),
        pad_edge=False,
    )
    texts = [[_cell(row.get(c.key)) for c in columns] for row in rows]
    for index, column in enumerate(columns):
        natural = max([len(column.heading), *(len(t[index]) for t in texts)])
        table.add_column(
            column.heading,
            # The wide column is the one rich may narrow (a wrappable one);
            # a URL has no spaces, so it is cut with an ellipsis, not wrapped.
            no_wrap=not column.wide,
            overflow="ellipsis",
            # Fixed narrow columns: only the wide one gives way to the terminal.
            width=None if column.wide else min(natural, column.cap),
            justify=column.justify,
        )
    styles = styles or {}
    for cells in texts:
        # Text objects: rich never interprets markup in values from the wire.
        table.add_row(*(Text(t, style=styles.get(t, "") if colour else "") for t in cells))
    console.print(table)


def _cell(value: object) -> str:
    return "" if value is None else str(value)


def notice(text: str, quiet: bool) -> None:
    """A line for people on stderr (so pipes stay clean); nothing with ``-q``."""
    if text and not quiet:
        print(text, file=sys.stderr)


Handler = Callable[[argparse.Namespace], int]


def reports_errors(handler: Handler) -> Handler:
    """A bad URL, a missing database or an unreachable collector is one line on
    stderr naming the cause and what to do, and exit 1; not a traceback."""

    @functools.wraps(handler)
    def run(args: argparse.Namespace) -> int:
        try:
            return handler(args)
        except (ValueError, OSError, CollectorError) as exc:
            if isinstance(exc, BrokenPipeError):
                raise
            command = " ".join(p for p in (args.command, _action(args)) if p)
            print(f"boundary-audit {command}: {exc}", file=sys.stderr)
            return 1

    return run


def _action(args: argparse.Namespace) -> str:
    return str(getattr(args, "tokens_command", "") or "")

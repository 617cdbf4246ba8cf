"""Every command's ``--help`` has a description, its defaults and an example.

Applied once to the finished parser (:func:`complete_help`), so a component
registering a subcommand needs to write only its help line: the description
falls back to it, defaults are appended to each option's help where it does
not already say, and the example comes from :data:`EXAMPLES` unless the
command's own epilog has one.
"""

from __future__ import annotations

import argparse

#: ``boundary-audit`` plus these words, per command path ("tokens create").
EXAMPLES: dict[str, tuple[str, ...]] = {
    "quickstart": ("quickstart", "quickstart -- curl -s https://example.com/"),
    "run": ("run --allow 'domain=pypi.org' -- pip download requests",),
    "agent": ("agent --collector-url http://127.0.0.1:8090",),
    "collector": (
        "collector --db sqlite:///collector.db --listen 127.0.0.1:8090",
        "collector key",
    ),
    "verify": ("verify --db sqlite:///collector.db",),
    "export": ("export --session 3f2a... --out bundle.json",),
    "tokens": ("tokens create --agent ci-runner", "tokens list"),
    "tokens create": ("tokens create --agent ci-runner --workspace repo-1",),
    "tokens list": ("tokens list --json",),
    "tokens revoke": ("tokens revoke 1a2b3c4d",),
    "sessions": ("sessions", "sessions --all --json | jq '.[].session_id'"),
    "logs": (
        "logs --since 1h --denied",
        "logs --session 3f2a6c1e --all --jsonl",
        "logs --follow --since today",
    ),
    "rules": ("rules suggest --since 7d",),
}
#: Marks the example section; tests look for it.
EXAMPLE_HEADING = "examples:"


def complete_help(parser: argparse.ArgumentParser, path: str = "") -> None:
    """Fill in descriptions, defaults and examples of ``parser``'s subcommands, recursively."""
    for action in parser._actions:
        if not isinstance(action, argparse._SubParsersAction):
            continue
        helps = {a.dest: a.help for a in action._choices_actions}
        for name, sub in action.choices.items():
            full = f"{path} {name}".strip()
            if sub.description is None:
                help_line = helps.get(name) or ""
                sub.description = help_line[:1].upper() + help_line[1:] + "." if help_line else None
            _add_example(sub, full)
            _show_defaults(sub)
            complete_help(sub, full)


def _add_example(parser: argparse.ArgumentParser, path: str) -> None:
    lines = EXAMPLES.get(path)
    if not lines or (parser.epilog and "example" in parser.epilog.lower()):
        return
    block = EXAMPLE_HEADING + "\n" + "\n".join(f"  boundary-audit {line}" for line in lines)
    parser.epilog = f"{parser.epilog}\n\n{block}" if parser.epilog else block
    # Keep the example's line breaks (the description still wraps: it is
    # one paragraph in every command).
    if parser.formatter_class is argparse.HelpFormatter:
        parser.formatter_class = argparse.RawDescriptionHelpFormatter


def _show_defaults(parser: argparse.ArgumentParser) -> None:
    for action in parser._actions:
        default = action.default
        if (
            action.help in {None, argparse.SUPPRESS}
            or any(default is v for v in (None, False, True, argparse.SUPPRESS))
            or default == ""
            or isinstance(action, (argparse._SubParsersAction, argparse._StoreConstAction))
            or "default" in str(action.help)
        ):
            continue
        action.help = f"{action.help} (default: %(default)s)"

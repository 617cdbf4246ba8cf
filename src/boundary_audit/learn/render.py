"""Text output of ``rules suggest`` (a config file ``run --config`` reads)
and ``rules replay`` (a report for people). Pure."""

from __future__ import annotations

import json

from .replay import HostChange, ReplayReport
from .suggest import Suggestion

#: The config key the rules go under: Coder boundary's (``allowlist``), so
#: the file also works as a Coder ``config.yaml``; ours (``allow``) means the same.
RULES_KEY = "allowlist"
#: Attempts outside the proxy listed in the header (the rest only counted).
OUTSIDE_LISTED = 5


def _n(count: int, noun: str) -> str:
    """``1 request``, ``2 requests``."""
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def _comment(text: str) -> str:
    """One comment line's text: no control characters from stored URLs."""
    return "".join(c if c.isprintable() else "?" for c in text)


def render_suggestion(suggestion: Suggestion, source: str) -> str:
    """A YAML config file with the rules under :data:`RULES_KEY`, counts as comments;
    ``source`` says which history (``of session ID``, ``since 7d``).

    Each rule is a JSON string, which is a valid YAML double-quoted scalar
    (rules are ASCII: hosts IDNA-encoded, paths percent-encoded).
    """
    lines = [
        f"# boundary-audit rules suggest: {_n(suggestion.requests, 'request')} {_comment(source)}",
        "# use: boundary-audit run --config THIS_FILE -- COMMAND",
        "# check: boundary-audit rules replay THIS_FILE --session ID",
    ]
    if suggestion.learning:
        lines.append(f"# recorded in learn mode: {_n(suggestion.learning, 'request')}")
    if suggestion.outside:
        lines.append(
            f"# outside the proxy, decided by the confinement, no rule changes them: "
            f"{_n(len(suggestion.outside), 'attempt')}"
        )
        lines.extend(
            f"#   {_comment(r.method)} {_comment(r.url)}"
            for r in suggestion.outside[:OUTSIDE_LISTED]
        )
    if suggestion.unexpressible:
        lines.append(
            f"# not covered, no rule can name them: {_n(len(suggestion.unexpressible), 'request')}"
        )
        lines.extend(
            f"#   {_comment(u.method)} {_comment(u.url)}: {_comment(u.reason)}"
            for u in suggestion.unexpressible
        )
    if not suggestion.rules:
        lines.append(f"{RULES_KEY}: []")
        return "\n".join(lines) + "\n"
    lines.append(f"{RULES_KEY}:")
    for rule in suggestion.rules:
        methods = _comment(", ".join(f"{m} {n}" for m, n in rule.methods))
        count = _n(rule.requests, "request")
        lines.append(f"  # {count} ({methods}), e.g. {_comment(rule.example)}")
        lines.append(f"  - {json.dumps(rule.text)}")
    return "\n".join(lines) + "\n"


def _section(title: str, changes: dict[str, HostChange]) -> list[str]:
    total = sum(c.count for c in changes.values())
    lines = [f"{title}: {_n(total, 'request')} to {_n(len(changes), 'host')}"]
    for host, change in sorted(changes.items(), key=lambda kv: (-kv[1].count, kv[0])):
        lines.append(f"  {host}  {change.count}")
        lines.extend(f"    {_comment(example)}" for example in change.examples)
    return lines


def render_replay(report: ReplayReport, baseline: str) -> str:
    """What changes, newly denied first (what would break), then newly allowed."""
    lines = [
        f"replayed {_n(report.requests, 'request')} against the {baseline} decisions: "
        f"{report.unchanged} unchanged, {report.denied_count} newly denied, "
        f"{report.allowed_count} newly allowed"
    ]
    if report.outside:
        lines.append(
            f"not replayed: {_n(report.outside, 'attempt')} outside the proxy "
            "(the confinement decides them)"
        )
    if report.newly_denied:
        lines.extend(_section("newly denied", report.newly_denied))
    if report.newly_allowed:
        lines.extend(_section("newly allowed", report.newly_allowed))
    return "\n".join(lines) + "\n"

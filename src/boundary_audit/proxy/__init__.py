"""The enforcement point: allow rules, a local CA and the HTTP/HTTPS proxy."""

from __future__ import annotations

from .rules import (
    Decision,
    Rule,
    RuleParseError,
    RuleSet,
    normalize_path,
    parse_rule,
    parse_rules,
    suggest_rule,
)

__all__ = [
    "Decision",
    "Rule",
    "RuleParseError",
    "RuleSet",
    "normalize_path",
    "parse_rule",
    "parse_rules",
    "suggest_rule",
]

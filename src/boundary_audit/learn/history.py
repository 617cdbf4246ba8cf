"""What the learn logic reads: one stored request and what was decided on it.

Learn mode (``run --learn``) allows every request but records, in the
event's ``matched_rule``, what the session's rules would have decided:

- ``learn:allow <rule text>``: the rules would have allowed it, by that rule;
- ``learn:deny``: the rules would have denied it.

A real rule never starts with ``learn:`` (every rule starts with a key,
``method=``, ``domain=`` or ``path=``), so a marker cannot be mistaken for a
rule, and it travels in a field Coder's agent and control plane carry as an
opaque string (docs/wire.md).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..proxy.rules import Decision, RuleSet

#: Prefix of every learn-mode ``matched_rule``.
LEARN_PREFIX = "learn:"
#: The rules would have allowed the request (followed by a space and the rule).
LEARN_ALLOW = LEARN_PREFIX + "allow"
#: The rules would have denied the request.
LEARN_DENY = LEARN_PREFIX + "deny"
#: Schemes of the requests the proxy decides by the rules. Other events
#: (``tcp://``, ``udp://``, ``dns://``...) are connection attempts that went
#: around the proxy, recorded by the confinement, which no rule changes.
PROXIED_SCHEMES = frozenset({"http", "https"})


def learn_marker(would: Decision) -> str:
    """The ``matched_rule`` a learn-mode event carries for the rules' verdict ``would``."""
    if would.allowed:
        return f"{LEARN_ALLOW} {would.rule}" if would.rule else LEARN_ALLOW
    return LEARN_DENY


def is_learn_marker(matched_rule: str | None) -> bool:
    """Was this event recorded in learn mode?"""
    return bool(matched_rule) and str(matched_rule).startswith(LEARN_PREFIX)


class LearnRuleSet(RuleSet):
    """The proxy's rules in learn mode: every request is allowed, and the
    decision's rule says what the wrapped rules would have decided."""

    def evaluate(self, method: str, url: str) -> Decision:
        return Decision(True, learn_marker(super().evaluate(method, url)))


@dataclass(frozen=True, slots=True)
class Request:
    """One stored request: ``allowed`` is what the proxy did, ``matched_rule`` as stored."""

    method: str
    url: str
    allowed: bool
    matched_rule: str | None = None
    session_id: str = ""

    @property
    def proxied(self) -> bool:
        """Decided by the proxy's rules (not a confinement observation)."""
        scheme, sep, _ = self.url.partition("://")
        return bool(sep) and scheme.lower() in PROXIED_SCHEMES

    @property
    def learning(self) -> bool:
        """Recorded in learn mode (allowed whatever the rules said)."""
        return is_learn_marker(self.matched_rule)

    @property
    def rules_allowed(self) -> bool:
        """What the session's rules decided: for a learn-mode event, what they
        would have decided; otherwise what the proxy did."""
        if self.learning:
            return str(self.matched_rule).startswith(LEARN_ALLOW)
        return self.allowed

    @classmethod
    def from_json(cls, event: Mapping[str, Any]) -> Request:
        """From an event of the collector's query API (``Event`` JSON)."""
        return cls(
            method=str(event["method"]),
            url=str(event["url"]),
            allowed=bool(event["allowed"]),
            matched_rule=event.get("matched_rule") or None,
            session_id=str(event.get("session_id") or ""),
        )

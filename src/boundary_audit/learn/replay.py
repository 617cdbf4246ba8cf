"""``rules replay``: what a candidate rule set would change on stored history.

Pure. Each request is evaluated with the proxy's
:class:`~boundary_audit.proxy.rules.RuleSet` and compared with a baseline:

- ``recorded`` (the default): what the proxy did. A learn-mode request was
  allowed, so a candidate that misses something the agent needed shows as
  *newly denied*.
- ``rules``: what the session's own rules decided; for a learn-mode request
  the verdict recorded in its marker (:mod:`.history`). This compares a
  candidate with the rules the session ran with.

Events outside the proxy (:attr:`.history.Request.proxied`) are counted, not
replayed: the confinement decides them, whatever the rules say.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal
from urllib.parse import urlsplit

from ..proxy.rules import RuleSet, normalize_host
from .history import Request

Baseline = Literal["recorded", "rules"]
BASELINES: tuple[Baseline, ...] = ("recorded", "rules")
#: Example URLs kept per host and direction: enough to see the pattern of
#: what changed without flooding the report.
EXAMPLES_PER_HOST = 3


@dataclass
class HostChange:
    """Requests to one host whose decision changes, with a few examples."""

    count: int = 0
    examples: list[str] = field(default_factory=list)

    def add(self, method: str, url: str) -> None:
        self.count += 1
        example = f"{method} {url}"
        if len(self.examples) < EXAMPLES_PER_HOST and example not in self.examples:
            self.examples.append(example)


@dataclass
class ReplayReport:
    requests: int = 0
    unchanged: int = 0
    #: Events outside the proxy (confinement observations): not replayed.
    outside: int = 0
    newly_allowed: dict[str, HostChange] = field(default_factory=dict)
    newly_denied: dict[str, HostChange] = field(default_factory=dict)

    @property
    def allowed_count(self) -> int:
        return sum(c.count for c in self.newly_allowed.values())

    @property
    def denied_count(self) -> int:
        return sum(c.count for c in self.newly_denied.values())

    @property
    def changed(self) -> bool:
        return bool(self.newly_allowed or self.newly_denied)


def _host(url: str) -> str:
    try:
        return normalize_host(urlsplit(url).hostname or "") or "(no host)"
    except ValueError:
        return "(unparseable URL)"


def baseline_allowed(request: Request, baseline: Baseline) -> bool:
    """The decision ``request`` is compared with."""
    return request.allowed if baseline == "recorded" else request.rules_allowed


def replay(
    rules: RuleSet, requests: Iterable[Request], *, baseline: Baseline = "recorded"
) -> ReplayReport:
    """Evaluate every request with ``rules`` and collect what changes."""
    report = ReplayReport()
    # Histories repeat themselves: each distinct request is evaluated once.
    decided: dict[tuple[str, str], bool] = {}
    for request in requests:
        if not request.proxied:
            report.outside += 1
            continue
        report.requests += 1
        before = baseline_allowed(request, baseline)
        key = (request.method, request.url)
        after = decided.get(key)
        if after is None:
            after = decided[key] = rules.evaluate(request.method, request.url).allowed
        if before == after:
            report.unchanged += 1
            continue
        changes = report.newly_allowed if after else report.newly_denied
        changes.setdefault(_host(request.url), HostChange()).add(request.method, request.url)
    return report

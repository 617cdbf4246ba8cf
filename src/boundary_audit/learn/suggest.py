"""``rules suggest``: allow rules that permit every request of a history.

Pure. Each request first gets the proxy's own narrow rule
(:func:`boundary_audit.proxy.rules.suggest_rule`, the one a 403 page shows),
so paths that servers may read differently are already widened to what
every reading matches. Those rules are then generalised:

1. **Subdomains** (only with ``merge_subdomains``): hosts with at least
   :data:`SUBDOMAIN_MERGE_MIN` distinct names under one parent (its last two
   labels) become ``*.parent``; the parent itself stays its own host, as
   ``*.x.com`` does not match ``x.com``.
2. **Paths**, per host: where one prefix has more than ``path_threshold``
   distinct next segments, everything below it becomes ``prefix/*`` (the
   prefix itself, if requested, stays listed: ``/*`` needs one more segment).
3. **Methods**: paths used with the same set of methods share one rule,
   ``method=GET,HEAD domain=h path=/a,/b``.

Events that are not proxy requests (``tcp://``, ``dns://``... attempts the
confinement recorded, which no rule changes) are left out and reported.
Finally every request is evaluated against the result with the proxy's
:class:`~boundary_audit.proxy.rules.RuleSet`, which gives the counts per rule
(the first matching rule, as the proxy decides) and proves coverage: a
request the rules do not allow (none is known) gets its narrow rule added.
"""

from __future__ import annotations

import dataclasses
import ipaddress
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from ..proxy.rules import RuleSet, parse_rule, parse_rules, path_readings, suggest_rule
from .history import Request

#: Distinct next segments under one path prefix beyond which the prefix is
#: merged into ``prefix/*``: a handful of named endpoints stay listed (easy
#: to review), while ids, hashes or file names (dozens under one prefix)
#: collapse to one line.
DEFAULT_PATH_THRESHOLD = 5
#: Distinct subdomains of one parent that make ``*.parent`` (with the flag):
#: two already show the service spreads over names (CDN shards, regions).
SUBDOMAIN_MERGE_MIN = 2
#: Labels of a parent domain for subdomain merging (``x.com``); a public
#: suffix of two labels (``co.uk``) is not recognised, so the flag is opt-in.
PARENT_LABELS = 2
#: Example URLs kept per rule for the comment above it.
EXAMPLES_PER_RULE = 1
#: Text path segment standing for "one or more segments".
_REST = "*"

TextPath = tuple[str, ...]


@dataclass(frozen=True, slots=True)
class SuggestedRule:
    """One rule with the requests it allows first (as the proxy evaluates in order)."""

    text: str
    requests: int
    methods: tuple[tuple[str, int], ...]
    example: str


@dataclass(frozen=True, slots=True)
class Unexpressible:
    """A request no rule can name (an IPv6 literal host, say), and why."""

    method: str
    url: str
    reason: str


@dataclass(frozen=True, slots=True)
class Suggestion:
    rules: tuple[SuggestedRule, ...]
    unexpressible: tuple[Unexpressible, ...]
    requests: int
    #: Events outside the proxy (confinement observations), not covered.
    outside: tuple[Request, ...] = ()
    #: Requests recorded in learn mode.
    learning: int = 0
    #: Requests the generalised rules missed, covered by their narrow rule
    #: instead (a bug in the generalisation if ever non-zero).
    fallbacks: int = 0

    @property
    def texts(self) -> tuple[str, ...]:
        return tuple(r.text for r in self.rules)


@dataclass
class _Node:
    children: dict[str, _Node] = field(default_factory=dict)
    #: Methods of requests whose path ends at this node ("*": any method).
    methods: set[str] = field(default_factory=set)
    terminal: bool = False


@dataclass(frozen=True, slots=True)
class _Narrow:
    """A request's narrow rule, split into what generalisation works on."""

    method: str  # "*" when the method cannot be named
    domain: str
    path: TextPath


#: Why a request whose own narrow rule does not match it is not covered.
_NOT_AS_WRITTEN = "the proxy compares the host as written and a rule can name it only IDNA-encoded"


@dataclass(frozen=True, slots=True)
class _Distinct:
    """One distinct (method, URL) of the history, made ``times`` times."""

    method: str
    url: str
    times: int
    narrow: _Narrow


def _narrow(method: str, url: str) -> _Narrow:
    """The proxy's narrow rule for one request, as (method, domain, text segments);
    ``ValueError`` when no rule can allow the request."""
    rule = parse_rule(suggest_rule(method, url))
    if not RuleSet((rule,)).evaluate(method, url).allowed:
        raise ValueError(_NOT_AS_WRITTEN)
    assert rule.domain is not None  # suggest_rule always names the domain
    words = dict(word.split("=", 1) for word in rule.text.split())
    path_text = words.get("path")
    if path_text is None:
        # suggest_rule leaves out the root and a path no segment of which is
        # common to all readings: the root exactly, or anything.
        path_text = "/" if _is_root(url) else "/" + _REST
    return _Narrow(words.get("method", "*"), ".".join(rule.domain), tuple(path_text[1:].split("/")))


def _is_root(url: str) -> bool:
    """The root path under every reading (``/``, or no path at all)."""
    return path_readings(urlsplit(url).path) == [[""]]


def _merge_domains(domains: Iterable[str]) -> dict[str, str]:
    """Each domain's pattern: itself, or ``*.parent`` when enough siblings share it."""
    by_parent: dict[str, set[str]] = {}
    for domain in domains:
        labels = domain.split(".")
        if len(labels) <= PARENT_LABELS or _is_ip(domain):
            continue
        by_parent.setdefault(".".join(labels[-PARENT_LABELS:]), set()).add(domain)
    out = {d: d for d in domains}
    for parent, members in by_parent.items():
        if len(members) >= SUBDOMAIN_MERGE_MIN:
            for member in members:
                out[member] = f"*.{parent}"
    return out


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _insert(root: _Node, path: TextPath, method: str) -> None:
    node = root
    for segment in path:
        node = node.children.setdefault(segment, _Node())
    node.terminal = True
    node.methods.add(method)


def _subtree_methods(node: _Node) -> set[str]:
    out = set(node.methods)
    for child in node.children.values():
        out |= _subtree_methods(child)
    return out


def _patterns(node: _Node, prefix: TextPath, threshold: int, out: dict[TextPath, set[str]]) -> None:
    """Path patterns (text segments) with their methods, prefixes merged past ``threshold``."""
    if node.terminal:
        out.setdefault(prefix, set()).update(node.methods)
    if len(node.children) > threshold or _REST in node.children:
        # Merged: ``prefix/*`` covers every path below (and a request already
        # widened to ``prefix/*`` makes listing its siblings pointless).
        below: set[str] = set()
        for child in node.children.values():
            below |= _subtree_methods(child)
        out.setdefault((*prefix, _REST), set()).update(below)
        return
    for segment, child in node.children.items():
        _patterns(child, (*prefix, segment), threshold, out)


def _method_key(methods: set[str]) -> tuple[str, ...]:
    return ("*",) if "*" in methods else tuple(sorted(methods))


def _rule_text(methods: tuple[str, ...], domain: str, paths: Iterable[TextPath]) -> str:
    method = "" if methods == ("*",) else f"method={','.join(methods)} "
    path_list = ",".join("/" + "/".join(p) for p in sorted(paths))
    return f"{method}domain={domain} path={path_list}"


def suggest(
    requests: Iterable[Request],
    *,
    path_threshold: int = DEFAULT_PATH_THRESHOLD,
    merge_subdomains: bool = False,
) -> Suggestion:
    """Rules that allow every request (except the unexpressible ones), generalised."""
    history = list(requests)
    # Histories repeat themselves (polling, retries): each distinct request
    # is generalised and evaluated once, counted as often as it was made.
    distinct: Counter[tuple[str, str]] = Counter()
    unexpressible: list[Unexpressible] = []
    outside: list[Request] = []
    for request in history:
        if request.proxied:
            distinct[(request.method, request.url)] += 1
        else:
            outside.append(request)
    narrow: list[_Distinct] = []
    for (method, url), times in distinct.items():
        try:
            narrow.append(_Distinct(method, url, times, _narrow(method, url)))
        except ValueError as exc:
            unexpressible.append(Unexpressible(method, url, str(exc)))
    domains = sorted({d.narrow.domain for d in narrow})
    pattern_of = _merge_domains(domains) if merge_subdomains else {d: d for d in domains}
    tries: dict[str, _Node] = {}
    for d in narrow:
        n = d.narrow
        _insert(tries.setdefault(pattern_of[n.domain], _Node()), n.path, n.method)
    texts: list[str] = []
    for domain in sorted(tries, key=_domain_order):
        patterns: dict[TextPath, set[str]] = {}
        _patterns(tries[domain], (), path_threshold, patterns)
        grouped: dict[tuple[str, ...], list[TextPath]] = {}
        for path, methods in patterns.items():
            grouped.setdefault(_method_key(methods), []).append(path)
        for methods_key in sorted(grouped):
            texts.append(_rule_text(methods_key, domain, grouped[methods_key]))
    counted = _count(texts, narrow, unexpressible, len(history))
    return dataclasses.replace(
        counted, outside=tuple(outside), learning=sum(r.learning for r in history)
    )


def _domain_order(domain: str) -> tuple[str, ...]:
    """Sort by registrable parts first, so a service's hosts stay together."""
    return tuple(reversed(domain.split(".")))


def _count(
    texts: list[str],
    narrow: list[_Distinct],
    unexpressible: list[Unexpressible],
    total: int,
) -> Suggestion:
    """Evaluate every request with the proxy's engine: counts per rule, and
    a narrow rule for any request the generalised rules would miss."""
    rules = parse_rules(texts)
    hits: dict[str, Counter[str]] = {}
    examples: dict[str, str] = {}
    fallbacks = 0
    for d in narrow:
        decision = rules.evaluate(d.method, d.url)
        if not decision.allowed or decision.rule is None:
            fallbacks += d.times
            fallback = suggest_rule(d.method, d.url)
            texts.append(fallback)
            rules = RuleSet((*rules.rules, parse_rule(fallback)))
            decision = rules.evaluate(d.method, d.url)
        assert decision.rule is not None
        hits.setdefault(decision.rule, Counter())[d.method] += d.times
        examples.setdefault(decision.rule, d.url)
    suggested = tuple(
        SuggestedRule(
            text=text,
            requests=sum(hits.get(text, Counter()).values()),
            methods=tuple(sorted(hits.get(text, Counter()).items())),
            example=examples.get(text, ""),
        )
        for text in dict.fromkeys(texts)
    )
    return Suggestion(suggested, tuple(unexpressible), total, fallbacks=fallbacks)

"""Allow rules with the grammar and meaning of Coder's boundary.

A rule is whitespace-separated ``key=value`` pairs, keys ``method``
(comma-separated tokens, ``*`` for any), ``domain`` (one host pattern) and
``path`` (comma-separated patterns). A request is allowed when at least one rule
matches every key it names; an omitted key matches anything; no match denies.

Paths are compared as decoded segments after dot-segment removal (RFC 3986
5.2.4), and a pattern has to match under every reading an origin server may
apply (``%2F`` and ``\\`` as data or as separators, ``;`` parameters kept or
cut, empty segments kept or merged), so neither ``/api/../admin``, ``%2e%2e``,
``..%2F``, ``/api//../admin``, ``/api/..;/admin`` nor ``/api/..\\admin`` can
slip a request past a rule.
"""

from __future__ import annotations

import ipaddress
import string
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from urllib.parse import quote, unquote, urlsplit

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

WILDCARD = "*"
#: How a ``*`` path segment is stored: a decoded pattern segment may be the
#: literal text ``*`` (written ``%2A``), which must not act as a wildcard.
ANY_SEGMENT = None
KEYS = ("method", "domain", "path")

#: RFC 9110 5.6.2 token characters, the alphabet of an HTTP method.
_TOKEN_CHARS = frozenset(string.ascii_letters + string.digits + "!#$%&'*+-.^_`|~")
#: Host label characters (RFC 1123 letters, digits, hyphen; underscore because
#: real service names such as ``_acme-challenge`` use it).
_LABEL_CHARS = frozenset(string.ascii_letters + string.digits + "-_")
#: RFC 3986 pchar minus the comma, which separates path patterns in a rule.
_PCHAR = frozenset(string.ascii_letters + string.digits + "-._~!$&'()*+;=:@")
_HEX = frozenset(string.hexdigits)
_SEPARATORS = " \t\n"
#: What may follow a path pattern or one of its segments ("" is end of rule).
_END_OF_PATH = frozenset(("", ",", *_SEPARATORS))
_END_OF_SEGMENT = _END_OF_PATH | {"/"}
#: Characters ``quote`` may leave alone in a suggested path: pchar minus the
#: comma (rule separator) and ``*`` (wildcard).
_SAFE_SUGGEST = "-._~!$&'()+;=:@"


class RuleParseError(ValueError):
    """A rule did not follow the grammar; says which rule, where and what was expected."""

    def __init__(self, rule: str, position: int, expected: str) -> None:
        self.rule = rule
        self.position = position
        self.expected = expected
        pointer = " " * position + "^"
        super().__init__(
            f"invalid allow rule {rule!r} at position {position}: expected {expected}\n"
            f"  {rule}\n  {pointer}"
        )


@dataclass(frozen=True, slots=True)
class Decision:
    """Outcome of evaluating one request: ``rule`` is the matching rule's text."""

    allowed: bool
    rule: str | None = None


PathPattern = tuple[str | None, ...]


@dataclass(frozen=True, slots=True)
class Rule:
    """One parsed allow rule; ``None`` for a key means the rule did not name it."""

    text: str
    methods: frozenset[str] | None = None
    domain: tuple[str, ...] | None = None
    paths: tuple[PathPattern, ...] | None = None

    def matches(self, method: str, host: str, path_readings: Sequence[Sequence[str]]) -> bool:
        """Match a request already split into a normalised host and path readings."""
        if self.methods is not None and WILDCARD not in self.methods and method not in self.methods:
            return False
        if self.domain is not None and not _host_matches(self.domain, host):
            return False
        if self.paths is None:
            return True
        return any(
            all(_path_matches(pattern, reading) for reading in path_readings)
            for pattern in self.paths
        )


class RuleSet:
    """An ordered list of allow rules; default deny."""

    def __init__(self, rules: Iterable[Rule] = ()) -> None:
        self.rules: tuple[Rule, ...] = tuple(rules)

    def __len__(self) -> int:
        return len(self.rules)

    def __repr__(self) -> str:
        return f"RuleSet({[r.text for r in self.rules]!r})"

    def evaluate(self, method: str, url: str) -> Decision:
        """Decide on ``method`` ``url`` (absolute URL); unparseable URLs are denied."""
        try:
            parts = urlsplit(url)
            host = normalize_host(parts.hostname or "")
        except ValueError:
            return Decision(False)
        if not host:
            return Decision(False)
        readings = path_readings(parts.path)
        for rule in self.rules:
            if rule.matches(method, host, readings):
                return Decision(True, rule.text)
        return Decision(False)


def normalize_host(host: str) -> str:
    """Lower-case, without the trailing dot of a fully qualified name."""
    host = host.lower()
    return host[:-1] if host.endswith(".") else host


def _host_matches(pattern: tuple[str, ...], host: str) -> bool:
    if pattern == (WILDCARD,):
        return True
    labels = host.split(".")
    if pattern[0] == WILDCARD:
        # A leading ``*`` stands for one or more whole labels, never zero: the
        # apex is not its own subdomain.
        tail = pattern[1:]
        if len(labels) <= len(tail):
            return False
        labels = labels[len(labels) - len(tail) :]
        pattern = tail
    if len(labels) != len(pattern):
        return False
    return all(p in (WILDCARD, label) for p, label in zip(pattern, labels, strict=True))


def _path_matches(pattern: PathPattern, segments: Sequence[str]) -> bool:
    if pattern and pattern[-1] is ANY_SEGMENT:
        # A trailing ``*`` is the rest of the path: one or more segments.
        head = pattern[:-1]
        if len(segments) <= len(head):
            return False
        segments = segments[: len(head)]
        pattern = head
    if len(segments) != len(pattern):
        return False
    return all(p is ANY_SEGMENT or p == s for p, s in zip(pattern, segments, strict=True))


def remove_dot_segments(segments: Iterable[str]) -> list[str]:
    """RFC 3986 5.2.4 over decoded segments: ``.`` vanishes, ``..`` pops one.

    A trailing ``.`` or ``..`` leaves an empty last segment (``/a/b/..`` is
    ``/a/``), and ``..`` never climbs above the root.
    """
    out: list[str] = []
    items = list(segments)
    for index, segment in enumerate(items):
        last = index == len(items) - 1
        if segment in (".", ".."):
            if segment == ".." and out:
                out.pop()
            if last:
                out.append("")
        else:
            out.append(segment)
    return out or [""]


def _split(path: str) -> list[str]:
    if path.startswith("/"):
        path = path[1:]
    return path.split("/")


def normalize_path(path: str) -> str:
    """The path an origin server that decodes ``%2F`` sees: decoded, dots removed."""
    return "/" + "/".join(remove_dot_segments(_split(unquote(path))))


#: Characters after which a path may read differently to different servers;
#: a path without any (and without ``//``) has one reading, computed cheaply.
_AMBIGUOUS_CHARS = ("%", ";", "\\")


def _strip_params(segment: str) -> str:
    """A segment without its ``;`` parameters (Tomcat's and RFC 2396's reading)."""
    cut = segment.find(";")
    return segment if cut < 0 else segment[:cut]


def _merge_empty(segments: list[str]) -> list[str]:
    """Drop empty segments except a trailing one: nginx's ``merge_slashes``
    (``/a//b`` is ``/a/b``, ``/a//`` is ``/a/``)."""
    last = len(segments) - 1
    return [s for i, s in enumerate(segments) if s or i == last]


def _reading(
    path: str, decode_first: bool, backslash: bool, params: bool, merge: bool
) -> list[str]:
    """One server's reading of ``path`` as decoded segments, dots removed.

    ``decode_first``: percent-decode before splitting, so ``%2F`` (and
    ``%5C`` with ``backslash``) separate segments; ``backslash``: ``\\``
    separates segments (IIS); ``params``: ``;...`` is cut from each segment
    (Tomcat); ``merge``: empty segments vanish before dot removal (nginx).
    """
    text = unquote(path) if decode_first else path
    if backslash:
        text = text.replace("\\", "/")
    raw = _split(text)
    if params:
        raw = [_strip_params(s) for s in raw]
    segments = raw if decode_first else [unquote(s) for s in raw]
    if merge:
        segments = _merge_empty(segments)
    return remove_dot_segments(segments)


def path_readings(path: str) -> list[list[str]]:
    """Every segment list an origin server may derive from ``path``, first the
    literal one (split on ``/``, then decode each segment).

    Servers differ in whether ``%2F`` is data or a separator, whether ``\\``
    is a separator (IIS), whether ``;`` starts parameters that are dropped
    (Tomcat's ``/a/..;/b``), and whether empty segments are merged before
    ``..`` is applied (nginx's ``merge_slashes``: ``/a//../b`` is ``/b``
    there, ``/a/b`` elsewhere). Every combination is one reading; a pattern
    must match them all, so whichever the server does, it serves what the
    rule allows.
    """
    if "//" not in path and not any(c in path for c in _AMBIGUOUS_CHARS):
        return [remove_dot_segments(_split(path))]
    readings: list[list[str]] = []
    for decode_first in (False, True):
        for backslash in (False, True):
            for params in (False, True):
                for merge in (False, True):
                    reading = _reading(path, decode_first, backslash, params, merge)
                    if reading not in readings:
                        readings.append(reading)
    return readings


class _Parser:
    """Recursive-descent parser over one rule's text."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0

    def error(self, expected: str, position: int | None = None) -> RuleParseError:
        return RuleParseError(self.text, self.pos if position is None else position, expected)

    def peek(self) -> str:
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def skip_space(self) -> None:
        while self.peek() and self.peek() in _SEPARATORS:
            self.pos += 1

    def parse(self) -> Rule:
        methods: frozenset[str] | None = None
        domain: tuple[str, ...] | None = None
        paths: tuple[PathPattern, ...] | None = None
        seen: set[str] = set()
        self.skip_space()
        if not self.peek():
            raise self.error("a key=value pair (keys: method, domain, path)")
        while self.peek():
            start = self.pos
            key = self.key()
            if key in seen:
                raise self.error(f"each key at most once ({key!r} repeated)", start)
            seen.add(key)
            if key == "method":
                methods = self.methods()
            elif key == "domain":
                domain = self.domain()
            else:
                paths = self.paths()
            if self.peek() and self.peek() not in _SEPARATORS:
                raise self.error("whitespace between key=value pairs")
            self.skip_space()
        return Rule(self.text, methods, domain, paths)

    def key(self) -> str:
        for key in KEYS:
            if self.text.startswith(key + "=", self.pos):
                self.pos += len(key) + 1
                return key
        raise self.error("a key: method=, domain= or path=")

    def methods(self) -> frozenset[str]:
        out: set[str] = set()
        while True:
            start = self.pos
            while self.peek() and self.peek() in _TOKEN_CHARS:
                self.pos += 1
            token = self.text[start : self.pos]
            if not token:
                raise self.error("an HTTP method token or *")
            out.add(token)
            if self.peek() != ",":
                return frozenset(out)
            self.pos += 1

    def domain(self) -> tuple[str, ...]:
        labels: list[str] = []
        while True:
            start = self.pos
            if self.peek() == WILDCARD:
                self.pos += 1
            else:
                while self.peek() and self.peek() in _LABEL_CHARS:
                    self.pos += 1
            label = self.text[start : self.pos]
            if not label:
                raise self.error("a domain label (letters, digits, hyphen) or *")
            if label != WILDCARD and (label[0] == "-" or label[-1] == "-"):
                raise self.error("a label that neither starts nor ends with '-'", start)
            labels.append(label.lower())
            if self.peek() != ".":
                break
            self.pos += 1
        if len(labels) > 1 and labels[-1] == WILDCARD:
            raise self.error(
                "a domain that does not end with '*' (write '*' alone for any)", self.pos - 1
            )
        return tuple(labels)

    def paths(self) -> tuple[PathPattern, ...]:
        out: list[PathPattern] = []
        while True:
            out.append(self.path())
            if self.peek() != ",":
                return tuple(out)
            self.pos += 1

    def path(self) -> PathPattern:
        if self.peek() == WILDCARD and self.text[self.pos + 1 : self.pos + 2] in _END_OF_PATH:
            self.pos += 1
            return (ANY_SEGMENT,)
        if self.peek() != "/":
            raise self.error("a path starting with '/' (or * for any)")
        segments: list[str | None] = []
        while self.peek() == "/":
            self.pos += 1
            segments.append(self.segment())
        return tuple(segments)

    def segment(self) -> str | None:
        start = self.pos
        if self.peek() == WILDCARD:
            self.pos += 1
            if self.peek() not in _END_OF_SEGMENT:
                raise self.error("'*' to be a whole path segment")
            return ANY_SEGMENT
        while self.peek() not in _END_OF_SEGMENT:
            char = self.peek()
            if char == "%":
                digits = self.text[self.pos + 1 : self.pos + 3]
                if len(digits) != 2 or not set(digits) <= _HEX:
                    raise self.error("two hex digits after '%'")
                self.pos += 3
            elif char in _PCHAR and char != WILDCARD:
                self.pos += 1
            else:
                raise self.error("a path character (RFC 3986 pchar) or %XX")
        decoded = unquote(self.text[start : self.pos])
        if decoded in (".", ".."):
            raise self.error("a path segment other than '.' or '..'", start)
        if "/" in decoded:
            raise self.error("a segment without an encoded '/' (%2F)", start)
        return decoded


def parse_rule(text: str) -> Rule:
    """Parse one allow rule, e.g. ``method=GET,HEAD domain=*.github.com path=/api/*``."""
    return _Parser(text).parse()


def parse_rules(texts: Iterable[str]) -> RuleSet:
    """Parse every rule; the first bad one raises :class:`RuleParseError`."""
    return RuleSet(parse_rule(text) for text in texts)


def suggest_rule(method: str, url: str) -> str:
    """An ``--allow`` rule that permits ``method`` ``url`` and little else.

    Raises ``ValueError`` when the URL's host cannot be written in the grammar
    (an IPv6 literal, say).
    """
    parts = urlsplit(url)
    raw_host = normalize_host(parts.hostname or "")
    if not raw_host:
        raise ValueError(f"URL {url!r} has no host")
    try:
        ipaddress.IPv6Address(raw_host)
    except ValueError:
        pass
    else:
        raise ValueError(f"host {raw_host!r} is an IPv6 address, which rules cannot name")
    host = raw_host
    if not set(host) <= _LABEL_CHARS | {"."}:
        try:
            host = raw_host.encode("idna").decode("ascii")
        except UnicodeError as exc:
            raise ValueError(f"host {raw_host!r} cannot be written as a domain rule") from exc
    labels = host.split(".")
    if any(not label or label[0] == "-" or label[-1] == "-" for label in labels):
        raise ValueError(f"host {host!r} cannot be written as a domain rule")
    pieces = []
    if set(method) <= _TOKEN_CHARS and method:
        pieces.append(f"method={method}")
    pieces.append(f"domain={host}")
    readings = path_readings(parts.path)
    segments = readings[0]
    wildcard = False
    if len(readings) > 1:
        # The readings split the path differently: allow their common prefix
        # and whatever follows it, which every reading then matches.
        shortest = min(len(r) for r in readings)
        common = 0
        # Leave at least one segment of the shortest reading for the ``*``
        # (dot removal can make one reading a prefix of another).
        while common < shortest - 1 and all(r[common] == segments[common] for r in readings):
            common += 1
        segments, wildcard = segments[:common], True
    if segments and segments != [""]:
        text = "/".join(quote(s, safe=_SAFE_SUGGEST) for s in segments)
        pieces.append(f"path=/{text}/*" if wildcard else f"path=/{text}")
    return " ".join(pieces)

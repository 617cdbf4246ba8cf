"""Allow-rule grammar and matching: tables for the documented cases, hypothesis for the rest."""

from __future__ import annotations

import re
import string
from urllib.parse import quote, unquote

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from boundary_audit.proxy.rules import (
    RuleParseError,
    normalize_path,
    parse_rule,
    parse_rules,
    path_readings,
    remove_dot_segments,
    suggest_rule,
)

MATCH_TABLE = [
    # (rule, method, url, allowed)
    ("domain=github.com", "GET", "https://github.com/", True),
    ("domain=github.com", "GET", "https://GitHub.COM./x", True),
    ("domain=github.com", "GET", "https://github.com:8443/x", True),
    ("domain=github.com", "GET", "https://api.github.com/", False),
    ("domain=github.com", "GET", "https://github.io/", False),
    ("domain=github.com", "GET", "https://notgithub.com/", False),
    ("domain=*.github.com", "GET", "https://api.github.com/", True),
    ("domain=*.github.com", "GET", "https://v1.api.github.com/", True),
    ("domain=*.github.com", "GET", "https://github.com/", False),
    ("domain=*.github.com", "GET", "https://evilgithub.com/", False),
    ("domain=api.*.com", "GET", "https://api.google.com/", True),
    ("domain=api.*.com", "GET", "https://api.v1.google.com/", False),
    ("domain=*", "PATCH", "http://anything.example/x", True),
    ("domain=127.0.0.1", "GET", "http://127.0.0.1:8080/", True),
    ("domain=127.0.0.1", "GET", "http://127.0.0.2:8080/", False),
    ("method=GET,HEAD domain=github.com", "HEAD", "https://github.com/", True),
    ("method=GET,HEAD domain=github.com", "POST", "https://github.com/", False),
    ("method=GET", "get", "https://github.com/", False),
    ("method=*", "DELETE", "https://github.com/", True),
    ("path=/api/*", "GET", "https://x.org/api/v1/users", True),
    ("path=/api/*", "GET", "https://x.org/api/", True),
    ("path=/api/*", "GET", "https://x.org/api", False),
    ("path=/api/*", "GET", "https://x.org/apix/v1", False),
    ("path=/api/*/users", "GET", "https://x.org/api/v1/users", True),
    ("path=/api/*/users", "GET", "https://x.org/api/v1/v2/users", False),
    ("path=/api/*/users", "GET", "https://x.org/api/v1/users/1", False),
    ("path=/users,/posts", "GET", "https://x.org/posts", True),
    ("path=/users,/posts", "GET", "https://x.org/posts/1", False),
    ("path=/users,/posts", "GET", "https://x.org/users?all=1", True),
    ("path=/", "GET", "https://x.org/", True),
    ("path=/", "GET", "https://x.org", True),
    ("path=/", "GET", "https://x.org/a", False),
    ("path=*", "GET", "https://x.org/", True),
    ("path=*", "GET", "https://x.org/a/b", True),
    ("path=/a%20b", "GET", "https://x.org/a b", True),
    ("path=/a%20b", "GET", "https://x.org/a%20b", True),
    ("path=/%2A", "GET", "https://x.org/*", True),
    ("path=/%2A", "GET", "https://x.org/other", False),
    # Bypass attempts against a rule that allows only /public/...
    ("path=/public/*", "GET", "https://x.org/public/../admin", False),
    ("path=/public/*", "GET", "https://x.org/public/%2e%2e/admin", False),
    ("path=/public/*", "GET", "https://x.org/public/%2E%2E/admin", False),
    ("path=/public/*", "GET", "https://x.org/public/.%2e/admin", False),
    ("path=/public/*", "GET", "https://x.org/public/..%2Fadmin", False),
    ("path=/public/*", "GET", "https://x.org/public/..%2fadmin", False),
    ("path=/public/*", "GET", "https://x.org/admin%2F..%2Fpublic/x", False),
    # Empty segments, ';' parameters and backslashes (issue 10 item 7): nginx
    # merges '//' before applying '..', Tomcat drops ';...' from a segment,
    # IIS splits on '\\' (and a decoded %5C).
    ("path=/public/*", "GET", "https://x.org/public//../admin/secret", False),
    ("path=/public/*", "GET", "https://x.org/public/%2F../admin/secret", False),
    ("path=/public/*", "GET", "https://x.org/public/%2f%2F../admin", False),
    ("path=/public/*", "GET", "https://x.org/public/..;/admin", False),
    ("path=/public/*", "GET", "https://x.org/public/..;x=1/admin", False),
    ("path=/public/*", "GET", "https://x.org/public/..%3B/admin", False),
    ("path=/public/*", "GET", "https://x.org/public/..\\admin", False),
    ("path=/public/*", "GET", "https://x.org/public/..%5Cadmin", False),
    ("path=/public/*", "GET", "https://x.org/public\\..\\admin", False),
    ("path=/public/*", "GET", "https://x.org//public/../admin", False),
    ("path=/public/*", "GET", "https://x.org/public//x", True),
    ("path=/public/*", "GET", "https://x.org/public/x;jsessionid=1", True),
    ("path=/public/*", "GET", "https://x.org/public/a\\b", True),
    # A parameter on a segment the rule names reads as another segment to a
    # server that keeps it: denied, rather than allowed under one reading only.
    ("path=/admin/*", "GET", "https://x.org/admin;x/secret", False),
    ("path=/public/*", "GET", "https://x.org/public/./a/../b", True),
    ("path=/public/*", "GET", "https://x.org/x/../public/b", True),
    ("path=/admin", "GET", "https://x.org/public/../admin", True),
    ("path=/admin", "GET", "https://x.org/../../admin", True),
    ("method=GET domain=github.com path=/api/*", "GET", "https://github.com/api/x", True),
    ("method=GET domain=github.com path=/api/*", "GET", "https://gitlab.com/api/x", False),
]


@pytest.mark.parametrize(("rule", "method", "url", "allowed"), MATCH_TABLE)
def test_rule_table(rule: str, method: str, url: str, allowed: bool) -> None:
    decision = parse_rules([rule]).evaluate(method, url)
    assert decision.allowed is allowed
    assert decision.rule == (rule if allowed else None)


def test_first_matching_rule_is_reported_and_default_is_deny() -> None:
    rules = parse_rules(["domain=a.example", "domain=*.example", "method=GET domain=*"])
    assert rules.evaluate("POST", "http://a.example/").rule == "domain=a.example"
    assert rules.evaluate("POST", "http://b.example/").rule == "domain=*.example"
    assert rules.evaluate("GET", "http://c.test/").rule == "method=GET domain=*"
    assert not rules.evaluate("POST", "http://c.test/").allowed
    assert not parse_rules([]).evaluate("GET", "http://a.example/").allowed


@pytest.mark.parametrize("url", ["not a url", "http:///nohost", "http://[::1/"])
def test_unparseable_urls_are_denied(url: str) -> None:
    assert not parse_rules(["domain=*"]).evaluate("GET", url).allowed


ERROR_TABLE = [
    # (rule, position, fragment of what was expected)
    ("", 0, "key=value"),
    ("   ", 3, "key=value"),
    ("host=github.com", 0, "a key"),
    ("domain=", 7, "domain label"),
    ("domain=github.com path", 18, "a key"),
    ("domain=a.*", 9, "does not end with '*'"),
    ("domain=-a.com", 7, "neither starts nor ends"),
    ("domain=a..com", 9, "domain label"),
    ("domain=a.com,b.com", 12, "whitespace"),
    ("method=", 7, "HTTP method"),
    ("method=GET,", 11, "HTTP method"),
    ("method=GET domain=x method=POST", 20, "at most once"),
    ("path=api", 5, "starting with '/'"),
    ("path=/a*b", 7, "pchar"),
    ("path=/*x", 7, "whole path segment"),
    ("path=/a/%zz", 8, "hex digits"),
    ("path=/a/%2", 8, "hex digits"),
    ("path=/../x", 6, "other than '.' or '..'"),
    ("path=/a/%2e", 8, "other than '.' or '..'"),
    ("path=/a%2Fb", 6, "encoded '/'"),
    ("path=/a\\b", 7, "pchar"),
]


@pytest.mark.parametrize(("text", "position", "expected"), ERROR_TABLE)
def test_parse_errors_name_rule_position_and_expectation(
    text: str, position: int, expected: str
) -> None:
    with pytest.raises(RuleParseError) as info:
        parse_rule(text)
    assert info.value.rule == text
    assert info.value.position == position
    assert expected in info.value.expected
    assert repr(text) in str(info.value)


def test_parse_rules_stops_at_the_bad_rule() -> None:
    with pytest.raises(RuleParseError) as info:
        parse_rules(["domain=ok.example", "domian=typo.example"])
    assert info.value.rule == "domian=typo.example"


def test_whitespace_between_pairs_is_flexible() -> None:
    rule = parse_rule("  method=GET\tdomain=x.org \n path=/a  ")
    assert rule.methods == frozenset({"GET"})
    assert rule.domain == ("x", "org")
    assert rule.paths == (("a",),)


DOT_TABLE = [
    ("/", "/"),
    ("", "/"),
    ("/a/b/../c", "/a/c"),
    ("/a/./b", "/a/b"),
    ("/a/b/..", "/a/"),
    ("/a/b/.", "/a/b/"),
    ("/../../x", "/x"),
    ("/a/%2e%2e/b", "/b"),
    ("/a%2Fb/..", "/a/"),
    ("//a/../b", "//b"),
]


@pytest.mark.parametrize(("raw", "normal"), DOT_TABLE)
def test_normalize_path_table(raw: str, normal: str) -> None:
    assert normalize_path(raw) == normal


# -- properties -----------------------------------------------------------------------

SEGMENT_ALPHABET = string.ascii_letters + string.digits + "-._~%/*;\\"
segments = st.lists(
    st.one_of(
        st.sampled_from(
            [
                *(".", "..", "", "%2e%2e", "%2E.", "..%2F", "%2f", "a", "*"),
                *("..;", "..;x", ";", "..\\", "\\", "%5C", "..%5C", "%3B", "%2F..", "/"),
            ]
        ),
        st.text(SEGMENT_ALPHABET, max_size=6),
    ),
    max_size=8,
)
paths = segments.map(lambda parts: "/" + "/".join(parts))
labels = st.text(string.ascii_lowercase + string.digits, min_size=1, max_size=6)
hosts = st.lists(labels, min_size=1, max_size=4).map(".".join)
methods = st.sampled_from(["GET", "POST", "HEAD", "PUT", "DELETE", "PATCH", "X-CUSTOM"])
pattern_segments = st.lists(
    st.one_of(st.just("*"), st.text(string.ascii_lowercase, min_size=1, max_size=3)),
    min_size=1,
    max_size=4,
)
path_rules = pattern_segments.map(lambda parts: "path=/" + "/".join(parts))


@given(paths)
def test_normalisation_is_idempotent(path: str) -> None:
    parts = path.split("/")[1:]
    assert remove_dot_segments(remove_dot_segments(parts)) == remove_dot_segments(parts)
    for reading in path_readings(path):
        # Re-encoding a normalised reading and normalising again changes nothing.
        canonical = "/" + "/".join(quote(s, safe="") for s in reading)
        again = path_readings(canonical)
        assert again[0] == reading
        plain = not any(c in s for s in reading for c in "/;\\")
        if plain and "" not in reading[:-1]:
            assert again == [reading]


@given(paths)
def test_normalised_readings_contain_no_dot_segments(path: str) -> None:
    for reading in path_readings(path):
        assert "." not in reading
        assert ".." not in reading


@given(path_rules, paths, hosts)
@settings(max_examples=300)
def test_dot_segments_never_widen_a_rule(rule: str, path: str, host: str) -> None:
    """A raw path is allowed only if its server-side meaning is allowed too."""
    rules = parse_rules([rule])
    raw = rules.evaluate("GET", f"http://{host}{path}")
    if raw.allowed:
        for reading in path_readings(path):
            literal = "/" + "/".join(quote(s, safe="") for s in reading)
            assert rules.evaluate("GET", f"http://{host}{literal}").allowed


def _dots(path: str) -> list[str]:
    return remove_dot_segments(path.split("/")[1:])


def nginx_view(path: str) -> list[str]:
    """nginx (merge_slashes on): decode, merge runs of '/', then apply dots."""
    return _dots(re.sub("/+", "/", "/" + unquote(path).lstrip("/")))


def tomcat_view(path: str) -> list[str]:
    """Tomcat: cut ';' parameters from each raw segment, decode, merge '//', apply dots."""
    segments = [unquote(s.split(";", 1)[0]) for s in path.split("/")[1:]]
    last = len(segments) - 1
    return remove_dot_segments(s for i, s in enumerate(segments) if s or i == last)


def iis_view(path: str) -> list[str]:
    """IIS: decode, '\\' is a separator too, then apply dots."""
    return _dots(unquote(path).replace("\\", "/"))


def literal_view(path: str) -> list[str]:
    """A server that splits on '/' first and decodes each segment."""
    return remove_dot_segments(unquote(s) for s in path.split("/")[1:])


SERVER_VIEWS = (nginx_view, tomcat_view, iis_view, literal_view)


@given(path_rules, paths, hosts)
@settings(max_examples=500)
def test_no_common_server_reading_widens_a_rule(rule: str, path: str, host: str) -> None:
    """Allowed means allowed as nginx, Tomcat, IIS and a literal server read it."""
    rules = parse_rules([rule])
    if rules.evaluate("GET", f"http://{host}{path}").allowed:
        for view in SERVER_VIEWS:
            assert rules.rules[0].matches("GET", host, [view(path)]), view.__name__


@pytest.mark.parametrize(
    "path",
    [
        *("/public//../admin/secret", "/public/%2F../admin/secret", "/public/..;/admin/secret"),
        *("/public/..\\admin/secret", "/public/..%5Cadmin/secret", "//public/../admin/secret"),
    ],
)
def test_each_server_reading_is_among_the_readings(path: str) -> None:
    readings = path_readings(path)
    for view in SERVER_VIEWS:
        assert view(path) in readings, view.__name__
    assert ["admin", "secret"] in readings


@given(methods, hosts, paths)
def test_suggested_rule_parses_and_allows_the_request(method: str, host: str, path: str) -> None:
    url = f"https://{host}:8443{path}?q=1"
    suggestion = suggest_rule(method, url)
    decision = parse_rules([suggestion]).evaluate(method, url)
    assert decision.allowed, suggestion
    assert not parse_rules([suggestion]).evaluate(method, f"https://other-{host}{path}").allowed


def test_suggest_rule_shapes() -> None:
    assert suggest_rule("GET", "https://API.github.com/") == "method=GET domain=api.github.com"
    assert (
        suggest_rule("POST", "http://x.org/repos/a b/issues")
        == "method=POST domain=x.org path=/repos/a%20b/issues"
    )
    assert suggest_rule("GET", "http://x.org/a/b%2Fc") == "method=GET domain=x.org path=/a/*"
    with pytest.raises(ValueError, match="IPv6"):
        suggest_rule("GET", "http://[::1]:80/")


@given(st.text(string.printable + "*%/,=", max_size=40))
def test_parser_either_parses_or_raises_rule_parse_error(text: str) -> None:
    error: RuleParseError | None = None
    try:
        rule = parse_rule(text)
    except RuleParseError as exc:
        error = exc
    if error is not None:
        assert 0 <= error.position <= len(text)
        assert error.rule == text
    else:
        assert rule.text == text
        assert rule.methods is not None or rule.domain is not None or rule.paths is not None


@given(
    st.sampled_from(["method=", "domain=", "path="]).flatmap(
        lambda key: st.text(string.ascii_letters + string.digits + "*.-/%,", max_size=20).map(
            lambda value: key + value
        )
    )
)
def test_single_key_rules_never_crash(text: str) -> None:
    try:
        rules = parse_rules([text])
    except RuleParseError:
        return
    decision = rules.evaluate("GET", "https://example.com/a/b")
    assert decision.rule in (None, text)

"""For any history, ``replay(suggest(history), history)`` denies nothing newly."""

from __future__ import annotations

from urllib.parse import urlsplit

from hypothesis import given, settings
from hypothesis import strategies as st

from boundary_audit.learn import Request, replay, suggest
from boundary_audit.proxy import parse_rules

#: Segments that exercise the proxy's path readings: dots, encoded slashes
#: and backslashes, parameters, empty segments, the rule grammar's own
#: separators and wildcard, non-ASCII.
_SEGMENTS = st.one_of(
    st.sampled_from(
        [
            "a",
            "b",
            "api",
            "v1",
            "",
            ".",
            "..",
            "%2e%2e",
            "..%2F",
            "%2F",
            "a;x=1",
            "..;",
            "\\",
            "%5C",
            "*",
            "%2A",
            ",",
            "a,b",
            "%",
            "%zz",
            "é",
            "x y",
            "~u",
            "@",
        ]
    ),
    st.text(alphabet="abc019-._~%;,*", min_size=1, max_size=4),
)
_PATHS = st.lists(_SEGMENTS, max_size=5).map(lambda s: "/" + "/".join(s))
_HOSTS = st.one_of(
    st.lists(st.sampled_from(["a", "b", "cdn", "x", "api"]), min_size=1, max_size=4).map(
        lambda labels: ".".join([*labels, "com"])
    ),
    st.sampled_from(["127.0.0.1", "10.0.0.2", "EXAMPLE.org", "xn--bcher-kva.de", "bücher.de"]),
)
_METHODS = st.sampled_from(["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "PROPFIND"])
_PROXIED = st.builds(
    lambda method, scheme, host, path, allowed: Request(
        method, f"{scheme}://{host}{path}", allowed
    ),
    _METHODS,
    st.sampled_from(["http", "https"]),
    _HOSTS,
    _PATHS,
    st.booleans(),
)

#: Attempts the confinement recorded around the proxy: never covered, never replayed.
_OUTSIDE = st.builds(
    lambda method, url: Request(method, url, allowed=False),
    st.sampled_from(["CONNECT", "DNS", "UDP"]),
    st.sampled_from(["tcp://10.0.0.1:22", "dns://a.com?type=1", "udp://[::1]:9"]),
)
_REQUESTS = st.one_of(_PROXIED, _PROXIED, _PROXIED, _OUTSIDE)

#: Enough histories to meet the odd paths together; each is a few ms.
EXAMPLES = 300


@settings(max_examples=EXAMPLES, deadline=None)
@given(
    history=st.lists(_REQUESTS, max_size=30),
    threshold=st.integers(min_value=1, max_value=6),
    merge_subdomains=st.booleans(),
)
def test_a_suggestion_denies_nothing_its_history_did(
    history: list[Request], threshold: int, merge_subdomains: bool
) -> None:
    got = suggest(history, path_threshold=threshold, merge_subdomains=merge_subdomains)
    left_out = {u.url for u in got.unexpressible}
    named = [r for r in history if r.proxied and r.url not in left_out]
    report = replay(parse_rules(got.texts), named)
    assert report.denied_count == 0, report.newly_denied
    # The generalised rules cover everything themselves, no narrow fallback.
    assert got.fallbacks == 0
    # Only a host the proxy compares un-encoded is left out (see test_suggest).
    assert all(not urlsplit(url).netloc.isascii() for url in left_out)
    assert sum(rule.requests for rule in got.rules) == len(named)
    assert len(got.outside) == sum(not r.proxied for r in history)

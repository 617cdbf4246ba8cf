"""``learn.suggest``: generalised rules that allow every request of a history."""

from __future__ import annotations

from boundary_audit.cli.config_file import parse_config_text
from boundary_audit.learn import Request, render_suggestion, replay, suggest
from boundary_audit.proxy import parse_rules


def _history(*pairs: tuple[str, str]) -> list[Request]:
    return [Request(method, url, allowed=True) for method, url in pairs]


def test_methods_of_one_path_share_a_rule() -> None:
    got = suggest(_history(("GET", "https://h.com/a"), ("HEAD", "https://h.com/a")))
    assert got.texts == ("method=GET,HEAD domain=h.com path=/a",)
    assert got.rules[0].requests == 2
    assert got.rules[0].methods == (("GET", 1), ("HEAD", 1))


def test_paths_with_the_same_methods_share_a_rule() -> None:
    got = suggest(_history(("GET", "https://h.com/a"), ("GET", "https://h.com/b")))
    assert got.texts == ("method=GET domain=h.com path=/a,/b",)


def test_a_prefix_is_merged_only_past_the_threshold() -> None:
    at = _history(*(("GET", f"https://h.com/files/{i}") for i in range(3)))
    assert suggest(at, path_threshold=3).texts == (
        "method=GET domain=h.com path=/files/0,/files/1,/files/2",
    )
    past = _history(*(("GET", f"https://h.com/files/{i}") for i in range(4)))
    merged = suggest(past, path_threshold=3)
    assert merged.texts == ("method=GET domain=h.com path=/files/*",)
    assert merged.rules[0].requests == 4


def test_a_requested_prefix_stays_listed_beside_its_merge() -> None:
    history = _history(
        ("GET", "https://h.com/files"), *(("GET", f"https://h.com/files/{i}") for i in range(3))
    )
    got = suggest(history, path_threshold=2)
    assert got.texts == ("method=GET domain=h.com path=/files,/files/*",)
    assert not replay(parse_rules(got.texts), history).changed


def test_the_root_is_the_root_only() -> None:
    got = suggest(_history(("GET", "https://h.com/"), ("GET", "https://h.com")))
    assert got.texts == ("method=GET domain=h.com path=/",)
    assert not parse_rules(got.texts).evaluate("GET", "https://h.com/other").allowed


def test_subdomains_merge_only_when_asked() -> None:
    history = _history(("GET", "https://a.x.com/"), ("GET", "https://b.x.com/"))
    assert suggest(history).texts == (
        "method=GET domain=a.x.com path=/",
        "method=GET domain=b.x.com path=/",
    )
    assert suggest(history, merge_subdomains=True).texts == ("method=GET domain=*.x.com path=/",)


def test_a_single_subdomain_and_addresses_are_not_merged() -> None:
    history = _history(
        ("GET", "https://a.x.com/"), ("GET", "http://10.0.0.1/"), ("GET", "http://10.0.0.2/")
    )
    assert suggest(history, merge_subdomains=True).texts == (
        "method=GET domain=10.0.0.1 path=/",
        "method=GET domain=10.0.0.2 path=/",
        "method=GET domain=a.x.com path=/",
    )


def test_an_ambiguous_path_is_widened_as_the_proxy_reads_it() -> None:
    # /p/..%2Fadmin is /admin to a server that decodes %2F first.
    history = _history(("GET", "https://h.com/p/..%2Fadmin"))
    got = suggest(history)
    assert got.fallbacks == 0
    assert not replay(parse_rules(got.texts), history).changed


def test_an_ipv6_host_is_reported_not_covered() -> None:
    got = suggest(_history(("GET", "http://[::1]:8080/a"), ("GET", "https://h.com/a")))
    assert got.texts == ("method=GET domain=h.com path=/a",)
    assert [u.url for u in got.unexpressible] == ["http://[::1]:8080/a"]
    assert "IPv6" in render_suggestion(got, "test")


def test_the_output_is_a_config_file_run_reads() -> None:
    history = _history(("GET", "https://h.com/a,b"), ("POST", "https://h.com/x y"))
    got = suggest(history)
    layer = parse_config_text(render_suggestion(got, "session x"))
    assert layer["rules"].value == got.texts
    assert not replay(parse_rules(got.texts), history).changed


def test_an_empty_history_is_an_empty_list() -> None:
    text = render_suggestion(suggest([]), "nothing")
    assert parse_config_text(text)["rules"].value == ()


def test_a_non_ascii_host_is_reported_not_covered() -> None:
    # The proxy compares "bücher.de" as written while a rule can only name
    # its IDNA form, so no rule allows it (clients send the IDNA form).
    got = suggest(_history(("GET", "http://bücher.de/"), ("GET", "http://xn--bcher-kva.de/")))
    assert got.texts == ("method=GET domain=xn--bcher-kva.de path=/",)
    assert [u.url for u in got.unexpressible] == ["http://bücher.de/"]


def test_attempts_outside_the_proxy_get_no_rule() -> None:
    history = [
        Request("CONNECT", "tcp://10.0.0.1:22", allowed=False),
        Request("GET", "https://a.com/", True, matched_rule="learn:deny"),
    ]
    got = suggest(history)
    assert got.texts == ("method=GET domain=a.com path=/",)
    assert [r.url for r in got.outside] == ["tcp://10.0.0.1:22"]
    text = render_suggestion(got, "s")
    assert "recorded in learn mode: 1 request" in text
    assert "#   CONNECT tcp://10.0.0.1:22" in text

"""``learn.replay`` and the learn-mode markers."""

from __future__ import annotations

from boundary_audit.learn import (
    EXAMPLES_PER_HOST,
    LEARN_DENY,
    LearnRuleSet,
    Request,
    is_learn_marker,
    render_replay,
    replay,
)
from boundary_audit.proxy import parse_rule, parse_rules


def test_learn_mode_allows_everything_and_records_the_verdict() -> None:
    rules = LearnRuleSet([parse_rule("domain=a.com")])
    allowed = rules.evaluate("GET", "https://a.com/x")
    denied = rules.evaluate("GET", "https://b.com/x")
    assert allowed.allowed
    assert allowed.rule == "learn:allow domain=a.com"
    assert denied.allowed
    assert denied.rule == LEARN_DENY
    assert is_learn_marker(allowed.rule)
    assert not is_learn_marker("domain=a.com")


def test_a_learn_event_keeps_both_decisions() -> None:
    would_deny = Request("GET", "https://b.com/", allowed=True, matched_rule=LEARN_DENY)
    would_allow = Request("GET", "https://a.com/", True, "learn:allow domain=a.com")
    enforced = Request("GET", "https://c.com/", allowed=False)
    assert would_deny.learning
    assert would_deny.allowed
    assert not would_deny.rules_allowed
    assert would_allow.rules_allowed
    assert not enforced.learning
    assert not enforced.rules_allowed


def test_nothing_changes_when_the_rules_decide_as_recorded() -> None:
    history = [Request("GET", "https://a.com/x", True), Request("GET", "https://b.com/", False)]
    report = replay(parse_rules(["domain=a.com"]), history)
    assert not report.changed
    assert report.unchanged == 2


def test_changes_are_counted_per_host_with_a_few_examples() -> None:
    history = [Request("GET", f"https://a.com/{i}", True) for i in range(5)]
    history.append(Request("GET", "https://b.com/", False))
    report = replay(parse_rules(["domain=b.com"]), history)
    assert report.changed
    assert report.newly_denied["a.com"].count == 5
    assert len(report.newly_denied["a.com"].examples) == EXAMPLES_PER_HOST
    assert report.newly_allowed["b.com"].count == 1
    text = render_replay(report, "recorded")
    assert "5 newly denied, 1 newly allowed" in text
    assert text.index("newly denied:") < text.index("newly allowed:")


def test_the_rules_baseline_compares_with_the_learn_verdict() -> None:
    history = [Request("GET", "https://b.com/", True, LEARN_DENY)]
    rules = parse_rules(["domain=b.com"])
    assert not replay(rules, history, baseline="recorded").changed
    assert replay(rules, history, baseline="rules").newly_allowed["b.com"].count == 1


def test_attempts_outside_the_proxy_are_counted_not_replayed() -> None:
    history = [
        Request("CONNECT", "tcp://10.0.0.1:22", allowed=False),
        Request("DNS", "dns://example.com?type=1", allowed=False),
        Request("GET", "https://a.com/", allowed=True),
    ]
    report = replay(parse_rules(["domain=*"]), history)
    assert report.outside == 2
    assert report.requests == 1
    assert not report.changed
    assert "not replayed: 2 attempts outside the proxy" in render_replay(report, "recorded")

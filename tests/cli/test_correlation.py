"""Session correlation: Coder's switch and inject targets, our session headers."""

from __future__ import annotations

import pytest

from boundary_audit.cli.correlation import (
    CODER_AGENT_URL_ENV,
    SessionCorrelation,
    default_inject_target,
    resolve_correlation,
)
from boundary_audit.cli.options import ConfigError, Given
from boundary_audit.proxy import SEQUENCE_NUMBER_HEADER, SESSION_ID_HEADER

AIBRIDGE = "path=/api/v2/aibridge/*"


@pytest.mark.parametrize(
    ("url", "target"),
    [
        ("https://dev.coder.com", f"domain=dev.coder.com {AIBRIDGE}"),
        ("https://dev.coder.com:8443/some/path", f"domain=dev.coder.com {AIBRIDGE}"),
        ("http://Coder.Internal/", f"domain=coder.internal {AIBRIDGE}"),
        ("", None),
        ("not a url", None),
        ("https://[::1]:3000/", None),  # rules cannot name IPv6 literals
        ("http://[bad", None),
    ],
)
def test_default_target_from_coder_agent_url(url: str, target: str | None) -> None:
    assert default_inject_target({CODER_AGENT_URL_ENV: url}) == target


def _g(value: object, origin: str = "origin") -> Given:
    return Given(value, origin, value)


def _resolve(
    environ: dict[str, str] | None = None, **given: Given
) -> tuple[SessionCorrelation, tuple[str, ...]]:
    args: dict[str, Given | None] = {
        "enabled": None,
        "session_headers": None,
        "inject_targets": None,
        "session_id_header": None,
        "sequence_number_header": None,
    }
    args.update(given)
    return resolve_correlation(environ=environ or {}, **args)


def test_nothing_given_nothing_injected() -> None:
    assert _resolve() == (SessionCorrelation(), ())
    assert not SessionCorrelation().enabled
    assert (
        SessionCorrelation().session_id_header,
        SessionCorrelation().sequence_number_header,
    ) == (
        SESSION_ID_HEADER,
        SEQUENCE_NUMBER_HEADER,
    )


def test_enabled_without_targets_derives_coders_default() -> None:
    env = {CODER_AGENT_URL_ENV: "https://dev.coder.com/"}
    correlation, notices = _resolve(env, enabled=_g(True))
    assert correlation.targets == (f"domain=dev.coder.com {AIBRIDGE}",)
    assert notices == ()


def test_enabled_with_targets_uses_them_not_the_default() -> None:
    env = {CODER_AGENT_URL_ENV: "https://dev.coder.com/"}
    correlation, _ = _resolve(env, enabled=_g(True), inject_targets=_g(("domain=a.com",)))
    assert correlation.targets == ("domain=a.com",)


def test_enabled_with_no_target_at_all_is_an_error() -> None:
    with pytest.raises(ConfigError, match=r"^--enable-session-correlation: .*no inject targets"):
        _resolve(enabled=_g(True, "--enable-session-correlation"))


def test_our_session_headers_switch_injection_on() -> None:
    correlation, _ = _resolve(session_headers=_g(("domain=a.com", "domain=*.a.com")))
    assert correlation.targets == ("domain=a.com", "domain=*.a.com")
    assert correlation.enabled


def test_targets_without_the_switch_do_nothing_and_say_so() -> None:
    correlation, notices = _resolve(inject_targets=_g(("domain=a.com",), "c.yaml: key 'x'"))
    assert not correlation.enabled
    assert len(notices) == 1
    assert "c.yaml: key 'x'" in notices[0]
    assert "not enabled" in notices[0]


def test_switched_off_targets_are_quietly_off_as_in_coder() -> None:
    assert _resolve(enabled=_g(False), inject_targets=_g(("domain=a.com",))) == (
        SessionCorrelation(),
        (),
    )


def test_switch_off_with_our_session_headers_is_a_contradiction() -> None:
    with pytest.raises(ConfigError, match="--session-header asks for session headers but env X"):
        _resolve(
            enabled=_g(False, "env X"),
            session_headers=_g(("domain=a.com",), "--session-header"),
        )


def test_header_names_can_be_chosen_but_must_differ() -> None:
    correlation, _ = _resolve(
        session_id_header=_g("X-Coder-Agent-Firewall-Session-Id"),
        sequence_number_header=_g("X-Coder-Agent-Firewall-Sequence-Number"),
    )
    assert correlation.session_id_header == "X-Coder-Agent-Firewall-Session-Id"
    assert correlation.sequence_number_header == "X-Coder-Agent-Firewall-Sequence-Number"
    with pytest.raises(ConfigError, match="different names"):
        _resolve(session_id_header=_g("X-A"), sequence_number_header=_g("x-a"))


def test_duplicate_targets_are_dropped() -> None:
    correlation, _ = _resolve(
        session_headers=_g(("domain=a.com", "domain=*.a.com")),
        inject_targets=_g(("domain=a.com",)),
    )
    assert correlation.targets == ("domain=a.com", "domain=*.a.com")

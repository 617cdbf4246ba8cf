"""Session correlation: which allowed requests carry the run's session id and
sequence number, and under which header names.

Two vocabularies meet here. Coder boundary's: a switch
(``session_correlation_enabled``, ``--enable-session-correlation``) and
*inject targets* in the allow-rule format (``domain=api.example.com
path=/v1/*``; a domain is required), with a default target derived from
``CODER_AGENT_URL`` (``domain=<its host> path=/api/v2/aibridge/*``) when the
switch is on and no target is given. Ours: ``--session-header`` /
``session_header_domains``, which switch injection on by themselves; a bare
``DOMAIN`` covers the domain and its subdomains (the targets ``domain=DOMAIN``
and ``domain=*.DOMAIN``), and a value in rule format is a target as it
stands, so Coder's format is never taken for a literal domain name.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

from ..proxy import SEQUENCE_NUMBER_HEADER, SESSION_ID_HEADER
from .options import ConfigError, Given

#: Set by the Coder workspace agent to the control plane's URL.
CODER_AGENT_URL_ENV = "CODER_AGENT_URL"
#: Path of the default target derived from ``CODER_AGENT_URL`` (Coder's AI
#: gateway, config.DefaultAIBridgePath in Coder boundary).
DEFAULT_AIBRIDGE_PATH = "/api/v2/aibridge/*"


@dataclass(frozen=True, slots=True)
class SessionCorrelation:
    """The inject targets (rule strings; none = no headers) and header names."""

    targets: tuple[str, ...] = ()
    session_id_header: str = SESSION_ID_HEADER
    sequence_number_header: str = SEQUENCE_NUMBER_HEADER

    @property
    def enabled(self) -> bool:
        return bool(self.targets)


def default_inject_target(environ: Mapping[str, str]) -> str | None:
    """``domain=<host> path=/api/v2/aibridge/*`` from ``CODER_AGENT_URL``, or
    None when it is unset or has no host (as Coder boundary derives it)."""
    raw = environ.get(CODER_AGENT_URL_ENV, "").strip()
    if not raw:
        return None
    try:
        host = urlsplit(raw).hostname
    except ValueError:
        return None
    if not host or ":" in host:  # no host, or an IPv6 literal rules cannot name
        return None
    return f"domain={host} path={DEFAULT_AIBRIDGE_PATH}"


def resolve_correlation(
    *,
    enabled: Given | None,
    session_headers: Given | None,
    inject_targets: Given | None,
    session_id_header: Given | None,
    sequence_number_header: Given | None,
    environ: Mapping[str, str],
) -> tuple[SessionCorrelation, tuple[str, ...]]:
    """The correlation settings and notices to log (a target that does nothing).

    Raises :class:`ConfigError` when the switch is off but our own
    session-header option asks for headers, or when it is on with no target.
    """
    ours = _targets(session_headers)
    coders = _targets(inject_targets)
    notices: list[str] = []
    if enabled is not None and enabled.value is False:
        if ours:
            raise ConfigError(
                f"{session_headers.origin if session_headers else ''} asks for session headers "
                f"but {enabled.origin} turns session correlation off; remove one of them"
            )
        targets: tuple[str, ...] = ()
    elif enabled is not None or ours:
        targets = (*ours, *coders)
        if not targets:
            default = default_inject_target(environ)
            if default is None:
                origin = enabled.origin if enabled is not None else "session correlation"
                raise ConfigError(
                    f"{origin}: session correlation is enabled but no inject targets are "
                    "configured; set session_id_inject_targets (--session-id-inject-target), "
                    f"or {CODER_AGENT_URL_ENV} (set inside Coder workspaces) to derive one"
                )
            targets = (default,)
    else:
        targets = ()
        if coders and inject_targets is not None:
            notices.append(
                f"inject targets from {inject_targets.origin} do nothing: session correlation "
                "is not enabled (session_correlation_enabled: true, "
                "--enable-session-correlation)"
            )
    correlation = SessionCorrelation(
        targets=tuple(dict.fromkeys(targets)),
        session_id_header=_text(session_id_header, SESSION_ID_HEADER),
        sequence_number_header=_text(sequence_number_header, SEQUENCE_NUMBER_HEADER),
    )
    if correlation.session_id_header.lower() == correlation.sequence_number_header.lower():
        raise ConfigError(
            "the session id and sequence number headers must have different names, "
            f"both are {correlation.session_id_header!r}"
        )
    return correlation, tuple(notices)


def _targets(given: Given | None) -> tuple[str, ...]:
    if given is None:
        return ()
    assert isinstance(given.value, tuple)
    return tuple(str(item) for item in given.value)


def _text(given: Given | None, default: str) -> str:
    return default if given is None else str(given.value)


__all__ = [
    "CODER_AGENT_URL_ENV",
    "DEFAULT_AIBRIDGE_PATH",
    "SessionCorrelation",
    "default_inject_target",
    "resolve_correlation",
]

"""The enforcement point: allow rules, a local CA and the HTTP/HTTPS proxy."""

from __future__ import annotations

from .ca import CAError, CertificateAuthority, default_ca_directory
from .rules import (
    Decision,
    Rule,
    RuleParseError,
    RuleSet,
    normalize_path,
    parse_rule,
    parse_rules,
    suggest_rule,
)
from .server import (
    SEQUENCE_NUMBER_HEADER,
    SESSION_ID_HEADER,
    ProxyMetrics,
    ProxyServer,
    ProxyTimeouts,
)

__all__ = [
    "SEQUENCE_NUMBER_HEADER",
    "SESSION_ID_HEADER",
    "CAError",
    "CertificateAuthority",
    "Decision",
    "ProxyMetrics",
    "ProxyServer",
    "ProxyTimeouts",
    "Rule",
    "RuleParseError",
    "RuleSet",
    "default_ca_directory",
    "normalize_path",
    "parse_rule",
    "parse_rules",
    "suggest_rule",
]

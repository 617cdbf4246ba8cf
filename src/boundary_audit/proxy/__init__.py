"""The enforcement point: allow rules, a local CA and the HTTP/HTTPS proxy.

Knows nothing of how the confined command is started (``boundary_audit.confine``);
``boundary_audit.cli.run`` joins the two.
"""

from __future__ import annotations

from .ca import CAError, CertificateAuthority, default_ca_directory
from .config import SEQUENCE_NUMBER_HEADER, SESSION_ID_HEADER, ProxyTimeouts, SessionHeaders
from .errors import FaultKind, ProxyFault, Side
from .metrics import ProxyMetrics
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
from .server import ProxyServer

__all__ = [
    "SEQUENCE_NUMBER_HEADER",
    "SESSION_ID_HEADER",
    "CAError",
    "CertificateAuthority",
    "Decision",
    "FaultKind",
    "ProxyFault",
    "ProxyMetrics",
    "ProxyServer",
    "ProxyTimeouts",
    "Rule",
    "RuleParseError",
    "RuleSet",
    "SessionHeaders",
    "Side",
    "default_ca_directory",
    "normalize_path",
    "parse_rule",
    "parse_rules",
    "suggest_rule",
]

"""Learn mode: allow rules written from what an agent actually did.

``run --learn`` allows every request and records in each event what the
rules would have decided (:mod:`.history`); :func:`suggest` writes rules that
allow a history's requests, generalised; :func:`replay` says what a rule set
would change on a history. Pure functions over the proxy's own rule engine
(``boundary_audit.proxy.rules``), so a suggestion is what the proxy will do.
Reference: docs/learn.md.
"""

from __future__ import annotations

from .history import (
    LEARN_ALLOW,
    LEARN_DENY,
    LEARN_PREFIX,
    LearnRuleSet,
    Request,
    is_learn_marker,
    learn_marker,
)
from .render import render_replay, render_suggestion
from .replay import BASELINES, EXAMPLES_PER_HOST, Baseline, HostChange, ReplayReport, replay
from .suggest import (
    DEFAULT_PATH_THRESHOLD,
    SUBDOMAIN_MERGE_MIN,
    SuggestedRule,
    Suggestion,
    Unexpressible,
    suggest,
)

__all__ = [
    "BASELINES",
    "DEFAULT_PATH_THRESHOLD",
    "EXAMPLES_PER_HOST",
    "LEARN_ALLOW",
    "LEARN_DENY",
    "LEARN_PREFIX",
    "SUBDOMAIN_MERGE_MIN",
    "Baseline",
    "HostChange",
    "LearnRuleSet",
    "ReplayReport",
    "Request",
    "SuggestedRule",
    "Suggestion",
    "Unexpressible",
    "is_learn_marker",
    "learn_marker",
    "render_replay",
    "render_suggestion",
    "replay",
    "suggest",
]

"""Shared test support: polling, ports, processes, doubles.

Every test that waits for something polls through :func:`eventually` (or
its async twin), takes ports from :func:`free_port` and stops what it
started with :func:`stop_process`: one definition of each, so a fix to any
of them (a longer CI timeout, a better failure message) reaches every test.
"""

from boundary_audit._process import stop_process

from .eventually import EVENTUALLY_TIMEOUT_S, POLL_INTERVAL_S, aeventually, eventually
from .ports import free_port

__all__ = [
    "EVENTUALLY_TIMEOUT_S",
    "POLL_INTERVAL_S",
    "aeventually",
    "eventually",
    "free_port",
    "stop_process",
]

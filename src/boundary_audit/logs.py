"""Structured logging shared by every component.

One JSON object per line on stderr by default (machine-readable, safe for log
aggregators: every value is JSON-escaped, so a hostile URL cannot forge a
line), or ``key=value`` console output for people at a terminal.
"""

from __future__ import annotations

import logging
import sys
from typing import Any, Literal, TextIO

import structlog

LogFormat = Literal["json", "console"]
LOG_LEVELS = ("debug", "info", "warning", "error")


def configure_logging(
    level: str = "info", fmt: LogFormat = "json", stream: TextIO | None = None
) -> None:
    """Route structlog (and stdlib logging) to ``stream`` at ``level``."""
    numeric = logging.getLevelNamesMapping()[level.upper()]
    renderer: Any = (
        structlog.processors.JSONRenderer(sort_keys=False)
        if fmt == "json"
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(stream or sys.stderr),
        cache_logger_on_first_use=False,
    )
    logging.basicConfig(level=numeric, stream=stream or sys.stderr, force=True)


def get_logger(component: str, **context: Any) -> Any:
    """A structlog logger bound to ``component`` (``auditor``, ``agent``, ...)."""
    return structlog.get_logger(component=component, **context)

"""Structured logging shared by every component.

Loggers are structlog front-ends over stdlib ``logging`` (logger names
``boundary_audit.<component>``), so an application embedding the auditor
keeps control of where our lines go. The CLI calls :func:`configure_logging`,
which renders every line, ours and our libraries', as one JSON object on
stderr (machine-readable; JSON escaping means a hostile URL cannot forge a
line) or as ``key=value`` console output for people at a terminal.
"""

from __future__ import annotations

import logging
import sys
from typing import Any, Literal, TextIO

import structlog

LogFormat = Literal["json", "console"]
LOG_LEVELS = ("debug", "info", "warning", "error")
ROOT_LOGGER = "boundary_audit"
CHATTY_LIBRARIES = ("httpx", "httpcore")

_PRE_CHAIN: list[Any] = [
    structlog.contextvars.merge_contextvars,
    structlog.stdlib.add_log_level,
    structlog.processors.TimeStamper(fmt="iso", utc=True),
]


def configure_logging(
    level: str = "info", fmt: LogFormat = "json", stream: TextIO | None = None
) -> None:
    """Send every log line of this process to ``stream`` (stderr) at ``level``."""
    numeric = logging.getLevelNamesMapping()[level.upper()]
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if fmt == "json"
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.format_exc_info,
                renderer,
            ],
            foreign_pre_chain=[*_PRE_CHAIN, structlog.stdlib.ExtraAdder()],
        )
    )
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(numeric)
    logging.getLogger(ROOT_LOGGER).setLevel(numeric)
    # HTTP client libraries log every request at info; our own lines already
    # say what matters, so theirs show only warnings and above.
    for chatty in CHATTY_LIBRARIES:
        logging.getLogger(chatty).setLevel(max(numeric, logging.WARNING))


def get_logger(component: str, **context: Any) -> Any:
    """A structured logger for ``component`` (``auditor``, ``agent``, ...)."""
    return structlog.wrap_logger(
        logging.getLogger(f"{ROOT_LOGGER}.{component}"),
        processors=[*_PRE_CHAIN, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        wrapper_class=structlog.stdlib.BoundLogger,
        component=component,
        **context,
    )

"""Structured logging shared by every component.

Loggers are structlog front-ends over stdlib ``logging`` (logger names
``boundary_audit.<component>``), so an application embedding the auditor
keeps control of where our lines go. The CLI calls :func:`configure_logging`,
which renders every line, ours and our libraries', as one JSON object
(machine-readable; JSON escaping means a hostile URL cannot forge a line) or
as ``key=value`` console output for people at a terminal, and optionally
copies the full log as JSON lines to a file (``run --log-dir``).
"""

from __future__ import annotations

import logging
import sys
import threading
from typing import IO, Any, Literal, TextIO

import structlog

LogFormat = Literal["json", "console"]
#: Canonical level names (Python's), the ones every API here takes.
LOG_LEVELS = ("debug", "info", "warning", "error")
#: What ``--log-level`` offers, in Coder boundary's spelling; ``warning`` is
#: accepted too (see :func:`normalize_level`).
LOG_LEVEL_CHOICES = ("error", "warn", "info", "debug")
#: Other spellings people type for a level, mapped to the canonical name.
LEVEL_ALIASES = {"warn": "warning"}
LOG_FORMATS: tuple[LogFormat, ...] = ("json", "console")
ROOT_LOGGER = "boundary_audit"
CHATTY_LIBRARIES = ("httpx", "httpcore")
#: A log file keeps at least this much detail, whatever the terminal shows:
#: it is where one looks after the fact, so it has every request.
FILE_LOG_LEVEL = "info"

_PRE_CHAIN: list[Any] = [
    structlog.contextvars.merge_contextvars,
    structlog.stdlib.add_log_level,
    structlog.processors.TimeStamper(fmt="iso", utc=True),
]


def normalize_level(name: str) -> str:
    """``WARN``/``warn``/``Warning`` -> ``warning``; ValueError naming the choices."""
    level = name.strip().lower()
    level = LEVEL_ALIASES.get(level, level)
    if level not in LOG_LEVELS:
        raise ValueError(f"expected one of {', '.join(LOG_LEVEL_CHOICES)}, got {name!r}")
    return level


def level_number(name: str) -> int:
    """The stdlib number of a level name (any accepted spelling)."""
    return logging.getLevelNamesMapping()[normalize_level(name).upper()]


def is_terminal(stream: IO[Any]) -> bool:
    """Whether ``stream`` is a terminal (a closed or odd stream counts as not)."""
    try:
        return stream.isatty()
    except (AttributeError, ValueError, OSError):
        return False


def auto_format(fmt: LogFormat | None, stream: IO[Any] | None = None) -> LogFormat:
    """``fmt`` if chosen, else console on a terminal and JSON otherwise."""
    if fmt is not None:
        return fmt
    return "console" if is_terminal(stream or sys.stderr) else "json"


class LineWriter:
    """A text stream whose every ``write`` lands whole, for several writers.

    The run's log file gets lines from the logging handler and from the
    per-request auditor, on different threads; each writes one line per call,
    and the lock keeps two lines from interleaving inside one another.
    """

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self._lock = threading.Lock()

    def write(self, text: str) -> int:
        with self._lock:
            written = self._stream.write(text)
            self._stream.flush()
            return written

    def flush(self) -> None:
        with self._lock:
            self._stream.flush()

    def close(self) -> None:
        with self._lock:
            self._stream.close()

    def isatty(self) -> bool:
        return False


def _handler(stream: Any, fmt: LogFormat, level: int) -> logging.Handler:
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if fmt == "json"
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    handler = logging.StreamHandler(stream)
    handler.setLevel(level)
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
    return handler


def configure_logging(
    level: str = "info",
    fmt: LogFormat | None = "json",
    stream: TextIO | None = None,
    *,
    file: TextIO | LineWriter | None = None,
) -> None:
    """Send every log line of this process to ``stream`` (stderr) at ``level``
    (``fmt`` None: console on a terminal, else JSON), and, when ``file`` is
    given, JSON lines there at ``level`` or :data:`FILE_LOG_LEVEL`, whichever
    shows more."""
    out = stream or sys.stderr
    numeric = level_number(level)
    handlers = [_handler(out, auto_format(fmt, out), numeric)]
    if file is not None:
        handlers.append(_handler(file, "json", min(numeric, level_number(FILE_LOG_LEVEL))))
    lowest = min(h.level for h in handlers)
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    for handler in handlers:
        root.addHandler(handler)
    root.setLevel(lowest)
    logging.getLogger(ROOT_LOGGER).setLevel(lowest)
    # HTTP client libraries log every request at info; our own lines already
    # say what matters, so theirs show only warnings and above.
    for chatty in CHATTY_LIBRARIES:
        logging.getLogger(chatty).setLevel(max(lowest, logging.WARNING))


def get_logger(component: str, **context: Any) -> Any:
    """A structured logger for ``component`` (``auditor``, ``agent``, ...)."""
    return structlog.wrap_logger(
        logging.getLogger(f"{ROOT_LOGGER}.{component}"),
        processors=[*_PRE_CHAIN, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        wrapper_class=structlog.stdlib.BoundLogger,
        component=component,
        **context,
    )

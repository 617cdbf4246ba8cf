"""The boundary side: record audit events without ever slowing the caller.

``SocketAuditor`` batches events to the agent's Unix socket, ``LogAuditor``
writes them as structured lines, ``MultiAuditor`` fans out to several.
"""

from .encoding import TRUNCATION_MARKER
from .event import AuditEvent, Auditor
from .log import LogAuditor
from .metrics import AuditorCollector, register_auditor_metrics
from .multi import MultiAuditor
from .socket import (
    DEFAULT_BATCH_INTERVAL,
    DEFAULT_BATCH_SIZE,
    DEFAULT_CLOSE_TIMEOUT,
    DEFAULT_QUEUE_SIZE,
    DEFAULT_REPLAY_WINDOW_BYTES,
    DISABLE_ENV,
    AuditorStats,
    DropReason,
    SocketAuditor,
)

__all__ = [
    "DEFAULT_BATCH_INTERVAL",
    "DEFAULT_BATCH_SIZE",
    "DEFAULT_CLOSE_TIMEOUT",
    "DEFAULT_QUEUE_SIZE",
    "DEFAULT_REPLAY_WINDOW_BYTES",
    "DISABLE_ENV",
    "TRUNCATION_MARKER",
    "AuditEvent",
    "Auditor",
    "AuditorCollector",
    "AuditorStats",
    "DropReason",
    "LogAuditor",
    "MultiAuditor",
    "SocketAuditor",
    "register_auditor_metrics",
]

"""The boundary side: record audit events without ever slowing the caller.

``SocketAuditor`` batches events to the agent's Unix socket, ``LogAuditor``
writes them as structured lines, ``MultiAuditor`` fans out to several and
``MemoryAuditor`` keeps them in a list (for tests of what audits). All number
events with a ``SequenceCounter``.

Inside ``SocketAuditor``: ``sender``, ``delivery`` and ``closing`` decide
(pure state, given the time), ``encoding`` packs frames, ``transport`` and
``trust`` do the socket I/O and the listener checks, ``link`` holds the
connection, ``worker`` is the thread that joins them, ``finish`` and
``spill`` end a session and deliver others' spills, ``socket`` is the
callers' side, ``handoff``, ``handover`` and ``stats`` what both sides
share.
"""

from ..wire import DropReason
from .encoding import TRUNCATION_MARKER
from .event import AuditEvent, Auditor, HandsOver
from .handover import HANDOVER_TIMEOUT
from .log import LogAuditor
from .memory import MemoryAuditor
from .metrics import AuditorCollector, register_auditor_metrics
from .multi import MultiAuditor
from .sender import DEFAULT_BATCH_INTERVAL, DEFAULT_BATCH_SIZE, DEFAULT_REPLAY_WINDOW_BYTES
from .sequence import MAX_SEQUENCE_NUMBER, SequenceCounter
from .socket import (
    DEFAULT_CLOSE_TIMEOUT,
    DEFAULT_QUEUE_SIZE,
    DISABLE_ENV,
    OpenResult,
    SocketAuditor,
)
from .stats import SENDER_DROP_REASONS, AuditorStats
from .trust import LISTENER_UIDS_ENV, UntrustedListenerError

__all__ = [
    "DEFAULT_BATCH_INTERVAL",
    "DEFAULT_BATCH_SIZE",
    "DEFAULT_CLOSE_TIMEOUT",
    "DEFAULT_QUEUE_SIZE",
    "DEFAULT_REPLAY_WINDOW_BYTES",
    "DISABLE_ENV",
    "HANDOVER_TIMEOUT",
    "LISTENER_UIDS_ENV",
    "MAX_SEQUENCE_NUMBER",
    "SENDER_DROP_REASONS",
    "TRUNCATION_MARKER",
    "AuditEvent",
    "Auditor",
    "AuditorCollector",
    "AuditorStats",
    # boundary_audit.wire.DropReason, re-exported: the keys of AuditorStats.dropped.
    "DropReason",
    "HandsOver",
    "LogAuditor",
    "MemoryAuditor",
    "MultiAuditor",
    "OpenResult",
    "SequenceCounter",
    "SocketAuditor",
    "UntrustedListenerError",
    "register_auditor_metrics",
]

"""MemoryAuditor: keeps every event in a list, numbered as the wire would number it.

For tests of the components that audit (the proxy, the CLI): they check what
was recorded without a socket, and the numbers they see are the ones
SocketAuditor would have sent, because both draw from a SequenceCounter.
"""

from __future__ import annotations

import dataclasses
import threading
import time
import uuid

from .event import AuditEvent, CloseOnExit
from .sequence import SequenceCounter


class MemoryAuditor(CloseOnExit):
    """Records a stamped copy of each event (its number and time filled in).

    The caller's event is not changed, as with SocketAuditor. Thread-safe:
    ``events`` is in the order numbers were assigned.
    """

    def __init__(self, session_id: uuid.UUID | str | None = None) -> None:
        self._numbers = SequenceCounter(session_id)
        self._lock = threading.Lock()
        self.events: list[AuditEvent] = []
        self.closed = False

    @property
    def session_id(self) -> str:
        return self._numbers.session_id

    def audit(self, event: AuditEvent) -> int:
        with self._lock:
            seq = self._numbers.assign(event)
            stamped = dataclasses.replace(
                event,
                sequence_number=seq,
                time_ns=event.time_ns if event.time_ns is not None else time.time_ns(),
            )
            self.events.append(stamped)
        return seq

    def sequence_numbers(self) -> list[int]:
        with self._lock:
            return [e.sequence_number for e in self.events if e.sequence_number is not None]

    def close(self, timeout: float | None = None) -> None:
        self.closed = True

"""MultiAuditor: one event, several destinations, one sequence number."""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Sequence
from types import TracebackType

from ..logs import get_logger
from .event import AuditEvent, Auditor


class MultiAuditor:
    """Fans each event out to several auditors.

    The sequence number and time are fixed here, once, so every destination
    records the same event identity. A destination that raises is logged and
    counted, and the others still get the event.
    """

    def __init__(self, auditors: Sequence[Auditor]) -> None:
        self.auditors = list(auditors)
        self._lock = threading.Lock()
        self._next_seq = 0
        self.errors = [0] * len(self.auditors)
        self._log = get_logger("auditor")

    def audit(self, event: AuditEvent) -> int:
        with self._lock:
            seq = event.sequence_number
            if seq is None:
                seq = self._next_seq
                self._next_seq += 1
        stamped = dataclasses.replace(
            event,
            sequence_number=seq,
            time_ns=event.time_ns if event.time_ns is not None else time.time_ns(),
        )
        for i, auditor in enumerate(self.auditors):
            try:
                auditor.audit(stamped)
            except Exception as exc:
                self.errors[i] += 1
                if self.errors[i] == 1:
                    self._log.error(
                        "auditor raised; event not recorded there (further errors counted)",
                        auditor=type(auditor).__name__,
                        error=repr(exc),
                        sequence_number=seq,
                    )
        return seq

    def close(self, timeout: float | None = None) -> None:
        for auditor in self.auditors:
            try:
                auditor.close(timeout)
            except Exception as exc:
                self._log.error(
                    "auditor failed to close", auditor=type(auditor).__name__, error=repr(exc)
                )

    def __enter__(self) -> MultiAuditor:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

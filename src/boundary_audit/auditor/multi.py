"""MultiAuditor: one event, several destinations, one sequence number."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence

from ..logs import get_logger
from .event import AuditEvent, Auditor, CloseOnExit, HandsOver
from .sequence import SequenceCounter


class MultiAuditor(CloseOnExit):
    """Fans each event out to several auditors.

    The sequence number and time are fixed here, once, so every destination
    records the same event identity. A destination that raises is logged and
    counted, and the others still get the event.
    """

    def __init__(self, auditors: Sequence[Auditor]) -> None:
        self.auditors = list(auditors)
        # Numbers here are not tied to a session of their own: never rotated.
        self._sequence = SequenceCounter(limit=None)
        self.errors = [0] * len(self.auditors)
        self._log = get_logger("auditor")
        #: The destinations that can be waited for (HandsOver), checked once.
        self._handing = [a for a in self.auditors if isinstance(a, HandsOver)]

    def handover_mark(self) -> tuple[object, ...]:
        """The marks of every destination that hands over (empty: nothing to wait for)."""
        return tuple(a.handover_mark() for a in self._handing)

    async def handed_over(self, mark: tuple[object, ...]) -> bool:
        """Wait for each destination that hands over, in turn (their bounds overlap)."""
        if not self._handing or len(mark) != len(self._handing):
            return True
        results = [await a.handed_over(m) for a, m in zip(self._handing, mark, strict=True)]
        return all(results)

    def audit(self, event: AuditEvent) -> int:
        seq = self._sequence.assign(event)
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

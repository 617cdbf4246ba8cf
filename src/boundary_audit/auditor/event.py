"""The audit event: one HTTP request that the enforcement point decided on."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from types import TracebackType
from typing import Protocol, Self, runtime_checkable


@dataclass(slots=True)
class AuditEvent:
    """What the proxy knows about one request when it decides.

    ``rule`` is the allow rule that matched (``None`` when denied); it is put
    on the wire only for allowed events. ``time_ns`` (Unix epoch nanoseconds)
    and ``sequence_number`` are filled in by the auditor when left ``None``.
    """

    method: str
    url: str
    host: str
    allowed: bool
    rule: str | None = None
    time_ns: int | None = None
    sequence_number: int | None = None


@runtime_checkable
class Auditor(Protocol):
    """Anything that accepts audit events. ``audit`` must never block or raise."""

    def audit(self, event: AuditEvent) -> int:
        """Record ``event``; return the sequence number it was given."""
        ...

    def close(self, timeout: float | None = None) -> None:
        """Deliver what is pending (within ``timeout`` seconds), then stop."""
        ...


class SequenceCounter:
    """Per-session sequence numbers 0, 1, 2, ...; an event may carry its own.

    Thread-safe. (SocketAuditor numbers under its queue lock instead, so that
    queue order and sequence order agree.)
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._next = 0

    def assign(self, event: AuditEvent) -> int:
        if event.sequence_number is not None:
            return event.sequence_number
        with self._lock:
            seq = self._next
            self._next = seq + 1
        return seq


class CloseOnExit:
    """``with auditor:`` closes it on the way out."""

    def close(self, timeout: float | None = None) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

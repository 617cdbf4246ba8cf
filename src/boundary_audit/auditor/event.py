"""The audit event: one HTTP request that the enforcement point decided on."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol, Self, runtime_checkable


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


@runtime_checkable
class HandsOver(Protocol):
    """An Auditor that can say when an event has been handed over to its destination.

    Optional: the proxy checks for it once (``isinstance``) and waits for
    nothing with auditors that lack it (MemoryAuditor, LogAuditor: their
    audit() is done when it returns). A mark is opaque: take it right after
    audit(), pass it back to handed_over().
    """

    def handover_mark(self) -> object:
        """A mark covering every event audited so far (and: a wait will follow)."""
        ...

    async def handed_over(self, mark: Any) -> bool:
        """Wait (boundedly) until the events up to ``mark`` are handed over; True if they are."""
        ...


class CloseOnExit:
    """``with auditor:`` closes it on the way out."""

    def close(self, timeout: float | None = None) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

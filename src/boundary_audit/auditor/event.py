"""The audit event: one HTTP request that the enforcement point decided on."""

from __future__ import annotations

from dataclasses import dataclass
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


class CloseOnExit:
    """``with auditor:`` closes it on the way out."""

    def close(self, timeout: float | None = None) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

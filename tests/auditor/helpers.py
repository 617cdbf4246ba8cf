"""Helpers shared by the auditor's test modules."""

from __future__ import annotations

from pathlib import Path

from boundary_audit.auditor import AuditEvent
from boundary_audit.wire import BoundaryMessage, SessionSeal, as_envelope, decode_payload
from boundary_audit.wire.spill import list_spills, read_spill


def ev(i: int, allowed: bool = True, url: str | None = None) -> AuditEvent:
    return AuditEvent(
        method="GET",
        url=url or f"https://github.com/coder/{i}",
        host="github.com",
        allowed=allowed,
        rule="domain=github.com" if allowed else None,
    )


def spilled(spill_dir: Path) -> list[list[BoundaryMessage]]:
    """The messages of every spill file in ``spill_dir``, oldest file first."""
    return [
        [as_envelope(decode_payload(f.tag, f.payload)) for f in read_spill(path)]
        for path in list_spills(spill_dir)
    ]


def spilled_sequence_numbers(messages: list[BoundaryMessage]) -> list[int]:
    return [
        log.sequence_number
        for m in messages
        if m.WhichOneof("msg") == "logs"
        for log in m.logs.logs
    ]


def last_seal(messages: list[BoundaryMessage]) -> SessionSeal:
    """The seal that ends ``messages`` (a spill file's, or a receiver's)."""
    assert messages, "no messages"
    last = messages[-1]
    assert last.status.HasField("seal"), f"last message is not a seal: {last}"
    return last.status.seal

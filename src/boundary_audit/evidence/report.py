"""The outcome of a verification: ok, and every finding with where it is."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any


class FindingKind(enum.StrEnum):
    """What a finding says. Most fail the verification; a few only inform."""

    #: A stored event differs from the one the log committed to.
    ALTERED = "altered"
    #: The log committed to an event that is not stored.
    DELETED = "deleted"
    #: A stored event the log never committed to.
    INSERTED = "inserted"
    #: The log has a session the store has nothing of (its events are DELETED too).
    SESSION_DELETED = "session_deleted"
    SEAL_ALTERED = "seal_altered"
    SEAL_DELETED = "seal_deleted"
    SEAL_INSERTED = "seal_inserted"
    DROP_ALTERED = "drop_altered"
    DROP_DELETED = "drop_deleted"
    DROP_INSERTED = "drop_inserted"
    #: A session's summary counters (events, numbers, seal columns) disagree
    #: with its stored events and logged seal: edited in place.
    COUNTERS_ALTERED = "counters_altered"
    #: The session's hash chain does not match its seal: changed between the
    #: sender and the store (or in the store together with the log).
    CHAIN_BROKEN = "chain_broken"
    #: The stored log does not match the signed checkpoint (rewritten).
    LOG_MISMATCH = "log_mismatch"
    #: The stored log has fewer leaves than the checkpoint signed.
    LOG_TRUNCATED = "log_truncated"
    LEAF_MALFORMED = "leaf_malformed"
    #: A bundled leaf's inclusion proof does not lead to the checkpoint's head.
    PROOF_INVALID = "proof_invalid"
    CHECKPOINT_INVALID = "checkpoint_invalid"
    CHECKPOINT_MISSING = "checkpoint_missing"
    BUNDLE_MALFORMED = "bundle_malformed"
    # -- informational: they do not fail a verification ---------------------------
    #: The session's events carry no chain (a sender that does not chain).
    UNVERIFIED = "unverified"
    #: No seal: the chain cannot be checked (yet).
    UNSEALED = "unsealed"
    #: Leaves appended after the checkpoint: in the log, not yet signed.
    NOT_CHECKPOINTED = "not_checkpointed"
    #: The chain ends short by no more than the seal says went undelivered.
    CHAIN_SHORT = "chain_short"

    @property
    def fails(self) -> bool:
        return self not in _INFORMATIONAL


_INFORMATIONAL = frozenset(
    {
        FindingKind.UNVERIFIED,
        FindingKind.UNSEALED,
        FindingKind.NOT_CHECKPOINTED,
        FindingKind.CHAIN_SHORT,
    }
)


@dataclass(frozen=True, slots=True)
class Finding:
    kind: FindingKind
    #: The session concerned (None for the log and the checkpoint).
    session: str | None
    #: The event concerned (None for a seal, a session, the log).
    sequence_number: int | None
    detail: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": str(self.kind),
            "session": self.session,
            "sequence_number": self.sequence_number,
            "detail": self.detail,
        }


@dataclass(slots=True)
class VerifyReport:
    findings: list[Finding] = field(default_factory=list)
    sessions_checked: int = 0
    events_checked: int = 0
    leaves_checked: int = 0
    #: Tree size and head of the checkpoint verified against (None: none usable).
    checkpoint_size: int | None = None
    checkpoint_time_ns: int | None = None

    @property
    def ok(self) -> bool:
        """True when no finding fails the verification."""
        return not any(f.kind.fails for f in self.findings)

    def failures(self) -> list[Finding]:
        return [f for f in self.findings if f.kind.fails]

    def add(
        self,
        kind: FindingKind,
        session: str | None = None,
        sequence_number: int | None = None,
        detail: str = "",
    ) -> None:
        self.findings.append(Finding(kind, session, sequence_number, detail))

    def of_kind(self, kind: FindingKind) -> list[Finding]:
        return [f for f in self.findings if f.kind is kind]

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "sessions_checked": self.sessions_checked,
            "events_checked": self.events_checked,
            "leaves_checked": self.leaves_checked,
            "checkpoint_size": self.checkpoint_size,
            "checkpoint_time_ns": self.checkpoint_time_ns,
            "findings": [f.to_dict() for f in self.findings],
        }


__all__ = ["Finding", "FindingKind", "VerifyReport"]

"""Helpers shared by the auditor's test modules."""

from __future__ import annotations

import sys
from pathlib import Path

from boundary_audit.auditor import AuditEvent
from boundary_audit.wire import BoundaryMessage, SessionSeal, as_envelope, chain, decode_payload
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


# -- throwaway users (tests run as root; the attacks need a second user) -----------

REPO = Path(__file__).resolve().parents[2]


def project_python_env() -> dict[str, str]:
    """PYTHONPATH for SYSTEM_PYTHON to import this checkout and its dependencies."""
    site = REPO / ".venv" / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}"
    return {"PYTHONPATH": f"{REPO / 'src'}:{site / 'site-packages'}", "PATH": "/usr/bin:/bin"}


# -- hash chains: what a receiver can recompute from what it got ---------------------

_NANOS = 1_000_000_000


def chained_events(
    messages: list[BoundaryMessage], session_id: str
) -> list[tuple[chain.ChainedEvent, bytes]]:
    """``session_id``'s events as a collector would store them: once per number, in order.

    A re-sent event must carry the same digest every time it arrives.
    """
    seen: dict[int, tuple[chain.ChainedEvent, bytes]] = {}
    for m in messages:
        if m.WhichOneof("msg") != "logs" or m.logs.session_id != session_id:
            continue
        for log in m.logs.logs:
            event = chain.ChainedEvent(
                log.sequence_number,
                log.time.seconds * _NANOS + log.time.nanos,
                log.allowed,
                log.http_request.method,
                log.http_request.url,
                log.http_request.matched_rule,
                m.logs.confined_process_name,
            )
            before = seen.setdefault(log.sequence_number, (event, log.chain_digest))
            assert before == (event, log.chain_digest), f"{log.sequence_number} re-sent changed"
    return [seen[n] for n in sorted(seen)]


def check_chain(
    messages: list[BoundaryMessage], session_id: str, seal: SessionSeal | None = None
) -> chain.ChainCheck:
    """Recompute ``session_id``'s chain over ``messages`` against its (last) seal."""
    if seal is None:
        seals = [
            m.status.seal
            for m in messages
            if m.WhichOneof("msg") == "status"
            and m.status.HasField("seal")
            and m.status.session_id == session_id
        ]
        assert seals, "no seal for the session"
        seal = seals[-1]
    events = chained_events(messages, session_id)
    return chain.check(session_id, events, seal.chain_head, seal.chain_count)

"""Sequence numbers: an event's identity is (session, number).

One counter for every auditor, so that a test double (:class:`MemoryAuditor`)
numbers events exactly as :class:`SocketAuditor` puts them on the wire.
"""

from __future__ import annotations

import itertools
import operator
import uuid
from collections.abc import Iterator
from typing import Any

from ..logs import get_logger
from .event import AuditEvent

#: ``sequence_number`` is an int32 on the wire: the last number a session may use.
MAX_SEQUENCE_NUMBER = 2**31 - 1


def session_str(session_id: uuid.UUID | str | None) -> str:
    """``session_id`` as a canonical UUID string; a fresh one for ``None``."""
    if session_id is None:
        return str(uuid.uuid4())
    if isinstance(session_id, uuid.UUID):
        return str(session_id)
    try:
        return str(uuid.UUID(session_id))
    except ValueError:
        raise ValueError(f"session_id must be a UUID, got {session_id!r}") from None


class SequenceCounter:
    """Numbers 0, 1, 2, ... per session; an event may carry its own number.

    Past ``limit`` (the wire's int32 by default) the counter moves on to a new
    session (a fresh UUID) and starts from 0 again, so (session, number) stays
    unique: the collector stores each such pair once. ``limit=None`` never
    rotates, for numbering that is not tied to a session of its own
    (LogAuditor, MultiAuditor: their numbers belong to whoever reads them).

    ``next(counter.numbers)`` draws a number in C, without a Python frame:
    it is on SocketAuditor.audit()'s hot path (:meth:`take` is the same,
    spelled as a method). Each auditor owns its counter. Without a limit
    drawing is atomic; with one, draw under the owner's lock (the rotation
    runs Python code), as SocketAuditor does anyway so that queue order and
    number order agree.
    """

    __slots__ = ("_current", "_limit", "_log", "numbers", "rotations", "session_id")

    def __init__(
        self,
        session_id: uuid.UUID | str | None = None,
        *,
        start: int = 0,
        limit: int | None = MAX_SEQUENCE_NUMBER,
        log: Any = None,
    ) -> None:
        self.session_id = session_str(session_id)
        #: Sessions started because the previous one ran out of numbers.
        self.rotations = 0
        self._log = log if log is not None else get_logger("auditor")
        self._limit = limit
        #: The current session's numbers (a range iterator: its length hint
        #: says how many are left, so next_number() can peek without drawing).
        self._current: Iterator[int] = iter(range(start, (limit or 0) + 1))
        #: The numbers of the current session, then of the next, and so on.
        self.numbers: Iterator[int] = (
            itertools.count(start)
            if limit is None
            else itertools.chain.from_iterable(self._sessions(start, limit))
        )

    def take(self) -> int:
        """The next number of the current session (rotating when it runs out)."""
        return next(self.numbers)

    def next_number(self) -> int:
        """The number take() would return next, without drawing it.

        For a counter with a limit (SocketAuditor's): read from the current
        range's remaining length, so the C-level drawing stays untouched.
        Call it under the owner's lock, like drawing.
        """
        if self._limit is None:
            raise TypeError("next_number() needs a counter with a limit")
        return self._limit + 1 - operator.length_hint(self._current)

    def assign(self, event: AuditEvent) -> int:
        """``event``'s own number if it has one, else the next."""
        own = event.sequence_number
        return own if own is not None else next(self.numbers)

    def _sessions(self, start: int, limit: int) -> Iterator[Iterator[int]]:
        """The numbers of each session in turn, rotating between them."""
        yield self._current
        while True:
            old = self.session_id
            self.session_id = str(uuid.uuid4())
            self.rotations += 1
            self._log.warning(
                "sequence numbers exhausted the wire's int32; continuing in a new session",
                old_session_id=old,
                session_id=self.session_id,
            )
            self._current = iter(range(limit + 1))
            yield self._current

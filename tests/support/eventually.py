"""Poll until a condition holds: the one way tests wait for something to happen.

A fixed sleep either wastes time or flakes on a loaded machine; polling a
condition does neither. Only a sleep that proves something did *not* happen
may stay in a test, with a comment saying so.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar, overload

T = TypeVar("T")

#: Default bound on a wait. Generous: CI machines are shared and a wait
#: that succeeds returns as soon as its condition holds, so only a failing
#: test pays this much.
EVENTUALLY_TIMEOUT_S = 30.0
#: Between checks: short next to the waits tests make (tens of ms and more),
#: long enough that polling does not compete with the code under test.
POLL_INTERVAL_S = 0.02


class _Attempts:
    """What one wait has seen so far; fails with the last value or assertion."""

    def __init__(self, what: str | None, check: object, timeout: float) -> None:
        self.what = what or getattr(check, "__name__", repr(check))
        self.timeout = timeout
        self.deadline = time.monotonic() + timeout
        self.last: object = None
        self.last_exc: AssertionError | None = None

    def saw(self, result: object) -> bool:
        self.last, self.last_exc = result, None
        return bool(result)

    def failed(self, exc: AssertionError) -> None:
        self.last_exc = exc

    def give_up_if_late(self) -> None:
        if time.monotonic() < self.deadline:
            return
        message = f"timed out after {self.timeout} s waiting for {self.what}"
        if self.last_exc is not None:
            raise AssertionError(f"{message}: {self.last_exc}") from self.last_exc
        raise AssertionError(f"{message} (last value: {self.last!r})")


def eventually(
    check: Callable[[], T],
    what: str | None = None,
    *,
    within: float = EVENTUALLY_TIMEOUT_S,
    interval: float = POLL_INTERVAL_S,
) -> T:
    """Call ``check`` until it returns something truthy; return that value.

    An ``AssertionError`` from ``check`` counts as "not yet"; at the deadline
    the last one is re-raised (chained) so the failure shows its cause.
    """
    attempts = _Attempts(what, check, within)
    while True:
        try:
            result = check()
            if attempts.saw(result):
                return result
        except AssertionError as exc:
            attempts.failed(exc)
        attempts.give_up_if_late()
        time.sleep(interval)


@overload
async def aeventually(
    check: Callable[[], Awaitable[T]],
    what: str | None = None,
    *,
    within: float = ...,
    interval: float = ...,
) -> T: ...
@overload
async def aeventually(
    check: Callable[[], T],
    what: str | None = None,
    *,
    within: float = ...,
    interval: float = ...,
) -> T: ...
async def aeventually(
    check: Callable[[], Any],
    what: str | None = None,
    *,
    within: float = EVENTUALLY_TIMEOUT_S,
    interval: float = POLL_INTERVAL_S,
) -> Any:
    """:func:`eventually` for asyncio tests: ``check`` may be sync or async."""
    attempts = _Attempts(what, check, within)
    while True:
        try:
            result: Any = check()
            if inspect.isawaitable(result):
                result = await result
            if attempts.saw(result):
                return result
        except AssertionError as exc:
            attempts.failed(exc)
        attempts.give_up_if_late()
        await asyncio.sleep(interval)


__all__ = ["EVENTUALLY_TIMEOUT_S", "POLL_INTERVAL_S", "aeventually", "eventually"]

"""One retry policy for every component that reconnects or re-sends.

:class:`Backoff` is pure state (no clock, no sleep): the caller asks it for
the next delay and decides when to act. The sender (socket reconnects) and
the agent's forwarder (collector requests) both use it, with their own
bounds and jitter floors.
"""

from __future__ import annotations

import random
from collections.abc import Callable

#: Fraction of a ``Retry-After`` wait added as random jitter, so many clients
#: told to wait the same time do not return in lockstep.
RETRY_AFTER_JITTER = 0.1
#: 2**n overflows a float long before n matters; the exponent stops here.
MAX_EXPONENT = 62

#: Jitter floor meaning "full jitter": a delay anywhere in [0, cap]. Best at
#: spreading many clients restarted together (AWS's analysis of backoff).
FULL_JITTER = 0.0
#: Jitter floor meaning "equal jitter": a delay in [cap/2, cap], so retries
#: never collapse to zero while a server stays down.
EQUAL_JITTER = 0.5


class Backoff:
    """Capped exponential backoff with jitter.

    The n-th consecutive failure (n from 0) waits a random time in
    ``[cap * floor, cap]`` with ``cap = min(maximum, initial * 2**n)``:
    exponential growth so a peer that is down is not hammered, jitter so a
    fleet does not retry in lockstep.
    """

    __slots__ = ("_rand", "failures", "floor", "initial", "maximum")

    def __init__(
        self,
        initial: float,
        maximum: float,
        *,
        floor: float = EQUAL_JITTER,
        rand: Callable[[], float] = random.random,
    ) -> None:
        if initial <= 0 or maximum <= 0:
            raise ValueError(f"backoff bounds must be positive, got {initial} and {maximum}")
        if not 0.0 <= floor <= 1.0:
            raise ValueError(f"jitter floor must be within [0, 1], got {floor}")
        self.initial = initial
        self.maximum = maximum
        self.floor = floor
        self.failures = 0
        self._rand = rand

    @property
    def cap(self) -> float:
        """Upper bound of the next delay."""
        return min(self.maximum, self.initial * (1 << min(self.failures, MAX_EXPONENT)))

    def next_delay(self) -> float:
        """Count a failure; the delay before the next attempt."""
        cap = self.cap
        self.failures += 1
        return cap * self.floor + self._rand() * cap * (1.0 - self.floor)

    def after_retry_after(self, wait: float) -> float:
        """``wait`` as the server asked, plus up to 10% jitter; counts as a failure."""
        self.failures += 1
        return wait + self._rand() * wait * RETRY_AFTER_JITTER

    def reset(self) -> None:
        """A success: the next failure starts from ``initial`` again."""
        self.failures = 0

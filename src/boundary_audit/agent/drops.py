"""Counting lost events until they can be reported to the collector.

Counts accumulate in memory, keyed by ``(source, session_id)``, and are
turned into :class:`~boundary_audit.wire.DropReport` messages (each with a
fresh ``report_id``, so re-sending one is idempotent) when the agent stores
them in the spool. The number of keys is capped; beyond the cap counts go to
the unattributed key, so memory stays flat however many sessions drop.

Pure state: the clock and the report ids are injected (tests pass their own).
"""

from __future__ import annotations

import time
import uuid
from collections import Counter
from collections.abc import Callable

from ..wire import DropReason, DropReport, DropSource

#: Distinct sessions tracked before drops are recorded as unattributed: far
#: above the sessions one workspace runs at once, small in memory (~1 MiB).
MAX_DROP_KEYS = 4096
#: Largest count one report carries per reason: the collector's own cap
#: (2^40, more events than one process can make), far below int64, so sums
#: of hostile counts neither overflow the protobuf field nor get the report
#: refused. Counts beyond it are clamped (and the clamping counted).
MAX_REPORT_COUNT = 1 << 40


def _new_report_id() -> str:
    return str(uuid.uuid4())


class DropLedger:
    def __init__(
        self,
        max_keys: int = MAX_DROP_KEYS,
        *,
        clock_ns: Callable[[], int] = time.time_ns,
        new_id: Callable[[], str] = _new_report_id,
    ) -> None:
        self._max_keys = max_keys
        self._clock_ns = clock_ns
        self._new_id = new_id
        self._counts: dict[tuple[DropSource, str], Counter[DropReason]] = {}
        self.overflowed = 0
        #: Additions cut at MAX_REPORT_COUNT.
        self.clamped = 0

    def __bool__(self) -> bool:
        return bool(self._counts)

    def add(self, source: DropSource, session_id: str, reason: DropReason, events: int) -> None:
        if events <= 0:
            return
        key = (source, session_id)
        if key not in self._counts and len(self._counts) >= self._max_keys:
            self.overflowed += 1
            key = (source, "")
        counts = self._counts.setdefault(key, Counter())
        total = counts[reason] + events
        if total > MAX_REPORT_COUNT:
            self.clamped += 1
            total = MAX_REPORT_COUNT
        counts[reason] = total

    def totals(self) -> dict[str, int]:
        """Events counted so far by ``source:reason`` (for logs)."""
        out: Counter[str] = Counter()
        for (source, _), reasons in self._counts.items():
            for reason, n in reasons.items():
                out[f"{source}:{reason}"] += n
        return dict(out)

    def take_reports(self) -> list[tuple[str, bytes]]:
        """Serialized reports for everything counted so far, as ``(report_id, payload)``.

        The counts leave the ledger; :meth:`restore` puts back those of
        reports that could not be stored.
        """
        now = self._clock_ns()
        out: list[tuple[str, bytes]] = []
        for (source, session_id), reasons in self._counts.items():
            report = DropReport(report_id=self._new_id(), session_id=session_id, source=source)
            for reason, n in reasons.items():
                report.dropped[reason] = n
            report.time.FromNanoseconds(now)
            out.append((report.report_id, report.SerializeToString()))
        self._counts = {}
        return out

    def restore(self, payloads: list[bytes]) -> None:
        """Put counts of reports that could not be stored back into the ledger."""
        for payload in payloads:
            report = DropReport()
            report.ParseFromString(payload)
            for reason, n in report.dropped.items():
                self.add(DropSource(report.source), report.session_id, DropReason(reason), n)


__all__ = ["MAX_DROP_KEYS", "MAX_REPORT_COUNT", "DropLedger"]

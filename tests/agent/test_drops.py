"""The drop ledger never loses a count, whatever the sessions and the key cap."""

from __future__ import annotations

from collections import Counter

from hypothesis import given
from hypothesis import strategies as st

from boundary_audit.agent.drops import DropLedger
from boundary_audit.wire import DropReport

drops = st.lists(
    st.tuples(
        st.sampled_from(["boundary", "agent"]),
        st.sampled_from(["", "s1", "s2", "s3", "s4", "s5"]),
        st.sampled_from(["boundary_channel_full", "boundary_batch_full", "spool_full"]),
        st.integers(min_value=0, max_value=10_000),
    ),
    max_size=60,
)


def totals(payloads: list[bytes]) -> Counter[tuple[str, str]]:
    out: Counter[tuple[str, str]] = Counter()
    for payload in payloads:
        report = DropReport()
        report.ParseFromString(payload)
        assert report.report_id
        for reason, n in report.dropped.items():
            out[(report.source, reason)] += n
    return out


@given(drops, st.integers(min_value=1, max_value=4), st.integers(min_value=0, max_value=3))
def test_counts_are_conserved_through_cap_take_and_restore(
    entries: list[tuple[str, str, str, int]], max_keys: int, unstored: int
) -> None:
    ledger = DropLedger(max_keys=max_keys)
    expected: Counter[tuple[str, str]] = Counter()
    for source, session, reason, n in entries:
        ledger.add(source, session, reason, n)
        expected[(source, reason)] += n
    reports = ledger.take_reports()
    # Keys stay bounded: the cap, plus at most one unattributed key per source.
    assert len(reports) <= max_keys + 2
    assert not ledger
    # Some reports could not be stored: their counts go back to the ledger.
    stored, back = reports[unstored:], reports[:unstored]
    ledger.restore([p for _, p in back])
    again = ledger.take_reports()
    got = totals([p for _, p in stored]) + totals([p for _, p in again])
    assert got == +expected
    assert len({rid for rid, _ in reports} | {rid for rid, _ in again}) == len(reports) + len(again)


def test_sessions_beyond_the_cap_become_unattributed() -> None:
    ledger = DropLedger(max_keys=2)
    ledger.add("agent", "a", "spool_full", 1)
    ledger.add("agent", "b", "spool_full", 2)
    ledger.add("agent", "c", "spool_full", 4)
    ledger.add("agent", "a", "spool_full", 8)
    sessions = {}
    for _, payload in ledger.take_reports():
        report = DropReport()
        report.ParseFromString(payload)
        sessions[report.session_id] = report.dropped["spool_full"]
    assert sessions == {"a": 9, "b": 2, "": 4}
    assert ledger.overflowed == 1

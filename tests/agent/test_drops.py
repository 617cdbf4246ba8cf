"""The drop ledger never loses a count, whatever the sessions and the key cap."""

from __future__ import annotations

from collections import Counter

from hypothesis import given
from hypothesis import strategies as st

from boundary_audit.agent.drops import DropLedger
from boundary_audit.wire import DropReason, DropReport, DropSource

drops = st.lists(
    st.tuples(
        st.sampled_from(DropSource),
        st.sampled_from(["", "s1", "s2", "s3", "s4", "s5"]),
        st.sampled_from(
            [
                DropReason.BOUNDARY_CHANNEL_FULL,
                DropReason.BOUNDARY_BATCH_FULL,
                DropReason.SPOOL_FULL,
            ]
        ),
        st.integers(min_value=0, max_value=10_000),
    ),
    max_size=60,
)


def parse(payload: bytes) -> DropReport:
    report = DropReport()
    report.ParseFromString(payload)
    return report


def totals(payloads: list[bytes]) -> Counter[tuple[str, str]]:
    out: Counter[tuple[str, str]] = Counter()
    for payload in payloads:
        report = parse(payload)
        assert report.report_id
        for reason, n in report.dropped.items():
            out[(report.source, reason)] += n
    return out


@given(drops, st.integers(min_value=1, max_value=4), st.integers(min_value=0, max_value=3))
def test_counts_are_conserved_through_cap_take_and_restore(
    entries: list[tuple[DropSource, str, DropReason, int]], max_keys: int, unstored: int
) -> None:
    ledger = DropLedger(max_keys=max_keys)
    expected: Counter[tuple[str, str]] = Counter()
    for source, session, reason, n in entries:
        ledger.add(source, session, reason, n)
        expected[(source, reason)] += n
    reports = ledger.take_reports()
    # Keys stay bounded: the cap, plus at most one unattributed key per source.
    assert len(reports) <= max_keys + len(DropSource)
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
    full = DropReason.SPOOL_FULL
    ledger.add(DropSource.AGENT, "a", full, 1)
    ledger.add(DropSource.AGENT, "b", full, 2)
    ledger.add(DropSource.AGENT, "c", full, 4)
    ledger.add(DropSource.AGENT, "a", full, 8)
    sessions = {}
    for _, payload in ledger.take_reports():
        report = parse(payload)
        sessions[report.session_id] = report.dropped["spool_full"]
    assert sessions == {"a": 9, "b": 2, "": 4}
    assert ledger.overflowed == 1


def test_reports_carry_the_injected_time_and_ids_and_the_wire_names() -> None:
    ids = iter(["r1", "r2"])
    ledger = DropLedger(clock_ns=lambda: 1_700_000_000_123_456_789, new_id=lambda: next(ids))
    ledger.add(DropSource.BOUNDARY, "s", DropReason.BOUNDARY_CHANNEL_FULL, 5)
    ledger.add(DropSource.AGENT, "s", DropReason.SPOOL_FULL, 2)
    reports = {rid: parse(payload) for rid, payload in ledger.take_reports()}
    assert set(reports) == {"r1", "r2"}
    assert (reports["r1"].source, dict(reports["r1"].dropped)) == (
        "boundary",
        {"boundary_channel_full": 5},
    )
    assert (reports["r2"].source, dict(reports["r2"].dropped)) == ("agent", {"spool_full": 2})
    assert all(r.time.ToNanoseconds() == 1_700_000_000_123_456_789 for r in reports.values())


def test_nothing_is_counted_for_no_events_and_totals_name_source_and_reason() -> None:
    ledger = DropLedger()
    ledger.add(DropSource.AGENT, "s", DropReason.SPOOL_FULL, 0)
    ledger.add(DropSource.AGENT, "s", DropReason.SPOOL_FULL, -3)
    assert not ledger
    ledger.add(DropSource.AGENT, "s", DropReason.SPOOL_FULL, 2)
    ledger.add(DropSource.AGENT, "t", DropReason.SPOOL_FULL, 3)
    ledger.add(DropSource.BOUNDARY, "s", DropReason.BOUNDARY_BATCH_FULL, 1)
    assert ledger.totals() == {"agent:spool_full": 5, "boundary:boundary_batch_full": 1}


def test_restored_counts_keep_their_session() -> None:
    ledger = DropLedger()
    ledger.add(DropSource.BOUNDARY, "s1", DropReason.BOUNDARY_CHANNEL_FULL, 4)
    ledger.restore([payload for _, payload in ledger.take_reports()])
    (_, payload), *rest = ledger.take_reports()
    assert rest == []
    report = parse(payload)
    assert (report.source, report.session_id, dict(report.dropped)) == (
        "boundary",
        "s1",
        {"boundary_channel_full": 4},
    )

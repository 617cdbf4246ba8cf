"""The completeness verdict, a pure function: properties over wide inputs."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from boundary_audit.collector.completeness import (
    GAPS,
    UNDELIVERED,
    Completeness,
    Facts,
    Seal,
    State,
    assess,
)
from boundary_audit.wire import DropReason, DropSource

_COUNT = st.integers(min_value=0, max_value=10_000)
_REASONS = st.sampled_from([str(r) for r in DropReason])
_COUNTS = st.dictionaries(_REASONS, _COUNT, max_size=4)
_SOURCES = st.dictionaries(st.sampled_from([str(s) for s in DropSource]), _COUNTS, max_size=3)


def _seal(made: int, *, undelivered: int = 0, spilled: int = 0, **dropped: int) -> Seal:
    return Seal(made, made, dropped, undelivered, spilled, 1)


@st.composite
def facts(draw: st.DrawFn, sealed: bool | None = None) -> Facts:
    stored = draw(_COUNT)
    pruned = draw(_COUNT)
    max_seq = draw(st.integers(min_value=-1, max_value=30_000))
    seal = None
    if sealed if sealed is not None else draw(st.booleans()):
        seal = Seal(
            draw(_COUNT), draw(_COUNT), draw(_COUNTS), draw(_COUNT), draw(_COUNT), draw(_COUNT)
        )
    return Facts(
        stored=stored,
        pruned=pruned,
        max_sequence=max_seq,
        reported=draw(_SOURCES),
        opened=draw(st.booleans()),
        seal=seal,
        beyond_seal=draw(_COUNT) if seal else 0,
        idle_ns=draw(_COUNT),
    )


def _lost_expected(f: Facts) -> int:
    total = sum(f.seal.dropped.values()) if f.seal else 0
    for source, counts in f.reported.items():
        if f.seal is None or source != DropSource.BOUNDARY:
            total += sum(counts.values())
    return total


@given(facts())
def test_the_ledger_always_balances(f: Facts) -> None:
    c = assess(f)
    assert c.lost_total == _lost_expected(f)
    assert c.unaccounted == max(0, c.events_made - f.stored - f.pruned - c.lost_total)
    assert sum(c.why.values()) == c.unaccounted + f.beyond_seal
    assert all(n > 0 for n in c.why.values())


@given(facts())
def test_complete_only_when_sealed_and_every_number_is_accounted_for(f: Facts) -> None:
    c = assess(f)
    if c.state is State.COMPLETE:
        assert f.seal is not None
        assert c.unaccounted == 0
        assert f.stored + f.pruned + c.lost_total >= f.seal.events_made
    if f.seal is None:
        assert c.state is (State.OPEN if f.opened else State.UNSEALED)
    elif c.unaccounted or f.beyond_seal:
        assert c.state is State.INCOMPLETE


@given(facts())
def test_the_summary_never_says_nothing_was_lost_when_something_was(f: Facts) -> None:
    c = assess(f)
    text = c.summary()
    assert text.startswith(str(c.state))
    if c.lost_total or c.unaccounted:
        assert "none lost" not in text
    assert c.to_json()["summary"] == text


def test_the_frozen_agent_case_reads_as_incomplete() -> None:
    """The issue's case: 300 made, 240 stored, 34 dropped, 26 undelivered."""
    f = Facts(
        stored=240,
        pruned=0,
        max_sequence=273,
        reported={"boundary": {"boundary_channel_full": 34}},
        opened=True,
        seal=_seal(300, undelivered=26, channel_full=34),
    )
    c = assess(f)
    assert c.state is State.INCOMPLETE
    assert (c.unaccounted, dict(c.why), dict(c.lost)) == (
        26,
        {UNDELIVERED: 26},
        {"channel_full": 34},
    )
    assert c.summary() == (
        "incomplete: 26 of 300 unaccounted for (undelivered 26), 240 stored,"
        " 34 lost (channel_full 34)"
    )


def test_a_sealed_session_with_drops_is_complete_and_says_what_was_lost() -> None:
    c = assess(Facts(8, 0, 9, {"agent": {"spool_full": 2}}, opened=True, seal=_seal(10)))
    assert c.state is State.COMPLETE
    assert c.summary() == "complete: 8 of 10 stored, 2 lost (spool_full 2)"


def test_gaps_without_a_known_reason_and_open_sessions() -> None:
    c = assess(Facts(5, 0, 9, {}, opened=True, seal=_seal(10, spilled=2)))
    assert (c.state, dict(c.why)) == (State.INCOMPLETE, {"spilled": 2, GAPS: 3})
    opened = assess(Facts(5, 0, 9, {}, opened=True, seal=None, idle_ns=3_000_000_000))
    assert (opened.state, opened.unaccounted, opened.idle_seconds) == (State.OPEN, 5, 3.0)
    unsealed: Completeness = assess(Facts(10, 0, 9, {}, opened=False, seal=None))
    assert unsealed.state is State.UNSEALED
    assert "complete" not in unsealed.summary().replace("incomplete", "")

"""Chained entries (flag 2): ingest commits an intact chain's events through the chain,
verify checks them with one SHA-256 each, and every edit is still named by number."""

from __future__ import annotations

import dataclasses
import hashlib
import uuid
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from boundary_audit.evidence import (
    FindingKind,
    StoredEvent,
    VerifyReport,
    batch_leaf,
    compare,
    parse_leaf,
    running,
    verify_bundle,
)
from boundary_audit.evidence.leaves import (
    DIGEST_AT,
    FLAG_AT,
    FLAG_CHAINED,
    FLAG_DIGEST,
    LeafError,
    LeafKind,
    entry_digest,
    entry_sequence,
    event_body,
    event_entry,
)
from boundary_audit.evidence.running import BROKEN, ChainRun, batch_and_run
from boundary_audit.wire import chain
from tests.evidence.helpers import (
    KEY,
    T0,
    Store,
    build_store,
    export,
    seal_of,
    session_events,
)

K = FindingKind
SID = str(uuid.UUID(int=21))
#: The finding kinds that name a single stored event.
EVENT_KINDS = {K.ALTERED, K.DELETED, K.INSERTED}


def flags(leaf: bytes) -> list[int]:
    return [e[FLAG_AT] for e in parse_leaf(leaf).entries]


def batches(store: Store) -> list[bytes]:
    return [leaf for leaf in store.leaves if parse_leaf(leaf).kind is LeafKind.BATCH]


def named(report: VerifyReport) -> set[tuple[FindingKind, int | None]]:
    return {(f.kind, f.sequence_number) for f in report.findings if f.kind in EVENT_KINDS}


# -- at ingest ---------------------------------------------------------------------------------


def test_an_intact_run_logs_every_event_chained_onto_the_head_before_it() -> None:
    events = session_events(SID, 12)
    run = ChainRun()
    entries: list[bytes] = []
    for i in range(0, 12, 5):
        leaf, run = batch_and_run(SID, events[i : i + 5], run)
        assert flags(leaf) == [FLAG_CHAINED] * len(events[i : i + 5])
        entries += parse_leaf(leaf).entries
    before = [chain.genesis(SID)] + [e.chain_digest for e in events[:-1]]
    for entry, e, p in zip(entries, events, before, strict=True):
        assert entry == e.sequence_number.to_bytes(8, "big") + p + b"\x02" + e.chain_digest
        assert hashlib.sha256(p + event_body(e)).digest() == entry_digest(entry)
    assert run == ChainRun(12, 11, events[-1].chain_digest, None)


def test_a_bad_digest_ends_the_chained_entries_at_that_event() -> None:
    events = session_events(SID, 10)
    events[6] = dataclasses.replace(events[6], chain_digest=bytes(32))
    leaf, run = batch_and_run(SID, events[:8], ChainRun())
    assert flags(leaf) == [2] * 6 + [1, 1]
    assert parse_leaf(leaf).entries[6:] == [event_entry(e) for e in events[6:8]]
    later, run = batch_and_run(SID, events[8:], run)  # right digests, after the bad one
    assert later == batch_leaf(SID, events[8:])
    assert (run.bad, run.count) == (6, 7)


def test_a_late_gap_filling_batch_is_logged_by_content_and_so_is_what_follows() -> None:
    events = session_events(SID, 10)
    first, run = batch_and_run(SID, events[:4], ChainRun())
    gapped, run = batch_and_run(SID, events[6:8], run)  # 4 and 5 not yet here
    assert flags(first) == [2] * 4
    assert flags(gapped) == [1, 1]  # 6's digest chains over 4 and 5: not the head
    late, run = batch_and_run(SID, events[4:6], run)
    assert late == batch_leaf(SID, events[4:6])
    assert run.count == BROKEN
    rest, _ = batch_and_run(SID, events[8:], run)
    assert rest == batch_leaf(SID, events[8:])


def test_a_run_head_that_is_not_a_digest_breaks_the_run_and_logs_by_content() -> None:
    # A hand-edited session row: its stored head cannot be what this code chained.
    events = session_events(SID, 6)
    _, run = batch_and_run(SID, events[:3], ChainRun())
    edited = dataclasses.replace(run, head=run.head[:31])
    leaf, after = batch_and_run(SID, events[3:], edited)
    assert leaf == batch_leaf(SID, events[3:])
    assert after.count == BROKEN
    with pytest.raises(LeafError):  # a stored digest of another length is never logged
        batch_and_run(SID, [dataclasses.replace(events[0], chain_digest=b"\x01" * 33)], ChainRun())


def test_an_event_without_a_digest_is_logged_by_content_and_the_chain_goes_on() -> None:
    events = session_events(SID, 6)
    events[2] = dataclasses.replace(events[2], chain_digest=b"")
    leaf, run = batch_and_run(SID, events[:4], ChainRun())
    assert flags(leaf) == [2, 2, 0, 2]
    # 3 is chained onto the head over 2, whose entry holds no digest.
    assert parse_leaf(leaf).entries[3][8:FLAG_AT] == chain.head(
        SID, [e.chained() for e in events[:3]]
    )
    more, run = batch_and_run(SID, events[4:], run)
    assert flags(more) == [2, 2]
    store = Store(events={SID: events}, leaves=[leaf, more])
    store.seal(SID, seal_of(events, SID))
    store.sign()
    assert store.verify().ok, store.verify().findings


def test_an_intact_session_is_hashed_once_per_event_at_ingest_and_at_verify(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls = [0]

    def counted(data: bytes = b"") -> hashlib._Hash:
        calls[0] += 1
        return hashlib.sha256(data)

    monkeypatch.setattr(running, "_sha256", counted)
    monkeypatch.setattr(compare, "_sha256", counted)
    store = Store()
    events = session_events(SID, 40)
    for i in range(0, 40, 10):
        store.collect(SID, events[i : i + 10])
    assert calls[0] == 40
    store.seal(SID, seal_of(events, SID))
    store.sign()
    calls[0] = 0
    report = store.verify()
    assert report.ok, report.findings
    assert calls[0] == 40


# -- at verify: a single edit in a chained-entry session is named, and only it ------------------


def _edit_url(evs: list[StoredEvent]) -> None:
    evs[9] = dataclasses.replace(evs[9], url="https://evil.example/")


def _edit_digest(evs: list[StoredEvent]) -> None:
    evs[9] = dataclasses.replace(evs[9], chain_digest=bytes(32))


def _delete(evs: list[StoredEvent]) -> None:
    del evs[9]


def _insert(evs: list[StoredEvent]) -> None:
    evs.insert(9, StoredEvent(90, T0, True, "GET", "https://fake.example/", "r", "codex"))


@pytest.mark.parametrize(
    ("edit", "finding", "detail", "chain_at"),
    [
        (_edit_url, (K.ALTERED, 9), "content differs", 9),
        (_edit_digest, (K.ALTERED, 9), "chain digest differs", 9),
        (_delete, (K.DELETED, 9), "in the log, not in the store", 10),
        (_insert, (K.INSERTED, 90), "never in the log", None),
    ],
    ids=["url", "digest", "deleted", "inserted"],
)
def test_a_single_edit_is_named_by_number_and_only_it(
    edit: Callable[[list[StoredEvent]], None],
    finding: tuple[FindingKind, int],
    detail: str,
    chain_at: int | None,
) -> None:
    store, ids = build_store(events=25, batch=7, running=True)
    assert {f for leaf in batches(store) for f in flags(leaf)} == {FLAG_CHAINED}
    sid = ids[1]
    edit(store.events[sid])
    report = store.verify()
    assert named(report) == {finding}, report.findings
    assert detail in next(f.detail for f in report.findings if f.kind is finding[0])
    broken = report.of_kind(K.CHAIN_BROKEN)
    assert [f.sequence_number for f in broken] == ([chain_at] if chain_at is not None else [90])
    assert {f.session for f in report.failures()} == {sid}


def test_a_digest_rechained_by_an_attacker_is_named_from_the_edit_on() -> None:
    store, ids = build_store(running=True)
    sid = ids[0]
    evs = list(store.events[sid])
    evs[10] = dataclasses.replace(evs[10], time_ns=evs[10].time_ns + 1)
    digests = chain.digests(sid, [e.chained() for e in evs])
    store.events[sid] = [
        dataclasses.replace(e, chain_digest=d) for e, d in zip(evs, digests, strict=True)
    ]
    store.seals[sid] = [seal_of(store.events[sid], sid)]
    report = store.verify()
    details = {f.sequence_number: f.detail for f in report.of_kind(K.ALTERED)}
    assert list(details) == list(range(10, 25))  # (reported in sequence order)
    assert "content differs" in details[10]
    # Each later event's content still hashes onto its logged P: only its digest changed.
    assert all("chain digest differs" in details[n] for n in range(11, 25))


def test_leaves_of_the_old_form_and_the_new_one_verify_side_by_side() -> None:
    """A store written before chained entries (all content form) still verifies, and so
    does a session whose first batches were logged the old way and the rest the new."""
    old, _ = build_store(running=False)
    assert {f for leaf in batches(old) for f in flags(leaf)} == {FLAG_DIGEST}
    assert old.verify().ok
    mixed = Store()
    events = session_events(SID, 20)
    mixed.ingest(SID, events[:8], 4)  # the old code path
    run = ChainRun(8, 7, events[7].chain_digest, None)  # the run the old collector kept
    leaf, _ = batch_and_run(SID, events[8:], run)
    assert flags(leaf) == [2] * 12
    mixed.events[SID].extend(events[8:])
    mixed.leaves.append(leaf)
    mixed.seal(SID, seal_of(events, SID))
    mixed.sign()
    assert mixed.verify().ok, mixed.verify().findings
    mixed.events[SID][3] = dataclasses.replace(mixed.events[SID][3], method="PUT")
    mixed.events[SID][15] = dataclasses.replace(mixed.events[SID][15], method="PUT")
    assert named(mixed.verify()) == {(K.ALTERED, 3), (K.ALTERED, 15)}


def test_a_bundle_of_chained_entries_verifies_and_names_an_edit() -> None:
    store, ids = build_store(sessions=2, events=9, batch=4, running=True)
    sid = ids[0]
    assert verify_bundle(export(store, sid), KEY.public_key()).ok
    evs = store.events[sid]
    evs[5] = dataclasses.replace(evs[5], matched_rule="*")
    assert named(verify_bundle(export(store, sid), KEY.public_key())) == {(K.ALTERED, 5)}


# -- any batching, any single edit -------------------------------------------------------------

FIELDS = ["sequence_number", "time_ns", "allowed", "method", "url", "rule", "name", "digest"]


def _changed(e: StoredEvent, field: str) -> StoredEvent:
    r = dataclasses.replace
    return {
        "sequence_number": lambda: r(e, sequence_number=e.sequence_number + 1000),
        "time_ns": lambda: r(e, time_ns=e.time_ns - 1),
        "allowed": lambda: r(e, allowed=not e.allowed),
        "method": lambda: r(e, method=e.method + "X"),
        "url": lambda: r(e, url=e.url[:-1]),
        "rule": lambda: r(e, matched_rule=e.matched_rule + "*"),
        "name": lambda: r(e, confined_process_name=""),
        "digest": lambda: r(e, chain_digest=b"" if e.chain_digest else bytes(32)),
    }[field]()


@st.composite
def ingested(draw: st.DrawFn) -> tuple[Store, str, list[StoredEvent]]:
    """A session of up to 16 events, some with no digest or a wrong one, stored in
    random batches in a random order (late batches fill gaps), sealed and signed."""
    n = draw(st.integers(1, 16))
    events = session_events(SID, n)
    for k in draw(st.sets(st.integers(0, n - 1), max_size=2)):
        odd = draw(st.sampled_from([b"", bytes(32)]))
        events[k] = dataclasses.replace(events[k], chain_digest=odd)
    order = draw(st.permutations(range(n)))
    store = Store()
    at = 0
    while at < n:
        size = draw(st.integers(1, 5))
        store.collect(SID, [events[i] for i in order[at : at + size]])
        at += size
    store.seal(SID, seal_of(events, SID))
    store.sign()
    return store, SID, events


@given(
    case=ingested(),
    what=st.sampled_from(["event", "remove", "insert", "duplicate", "none"]),
    data=st.data(),
)
@settings(max_examples=250, deadline=None)
def test_any_batching_verifies_untouched_and_fails_on_any_single_edit(
    case: tuple[Store, str, list[StoredEvent]], what: str, data: st.DataObject
) -> None:
    store, sid, events = case
    stored = store.events[sid]
    if what == "none":
        report = store.verify()
        assert named(report) == set(), report.findings
        truth = _true_digests(events)
        bad_claims = any(e.chain_digest not in (b"", d) for e, d in zip(events, truth, strict=True))
        assert report.ok != bad_claims, report.findings
        assert chain_findings(report) == chain_findings(reference_chain(store, sid))
        return
    k = data.draw(st.integers(0, len(stored) - 1))
    seq = stored[k].sequence_number
    if what == "event":
        field = data.draw(st.sampled_from(FIELDS))
        stored[k] = _changed(stored[k], field)
        expected = (
            {(K.DELETED, seq), (K.INSERTED, seq + 1000)}
            if field == "sequence_number"
            else {(K.ALTERED, seq)}
        )
    elif what == "remove":
        del stored[k]
        expected = {(K.DELETED, seq)}
    elif what == "insert":
        stored.append(StoredEvent(500, T0, True, "GET", "https://fake/", "", "codex"))
        expected = {(K.INSERTED, 500)}
    else:
        stored.append(stored[k])
        expected = {(K.INSERTED, seq)}
    report = store.verify()
    assert not report.ok
    assert named(report) == expected, report.findings
    assert chain_findings(report) == chain_findings(reference_chain(store, sid))


CHAIN_KINDS = {K.CHAIN_BROKEN, K.CHAIN_SHORT}


def chain_findings(report: VerifyReport) -> list[tuple[FindingKind, int | None]]:
    return [(f.kind, f.sequence_number) for f in report.findings if f.kind in CHAIN_KINDS]


def reference_chain(store: Store, sid: str) -> VerifyReport:
    """The chain findings of a full scan of the stored events, no log involved."""
    report = VerifyReport()
    seal = store.seals[sid][0]
    stored = sorted(store.events[sid], key=lambda e: e.sequence_number)
    verdict = compare.scan(sid, stored, seal.chain_head, seal.chain_count).chain
    assert verdict is not None
    compare._report_chain(report, sid, verdict, seal)
    return report


def _true_digests(events: list[StoredEvent]) -> list[bytes]:
    return list(chain.digests(SID, [e.chained() for e in events]))


def test_the_logged_entries_name_their_numbers() -> None:
    store, _ = build_store(sessions=1, events=5, batch=5, running=True)
    entries = parse_leaf(store.leaves[0]).entries
    assert [entry_sequence(e) for e in entries] == list(range(5))
    assert all(e[FLAG_AT] == FLAG_CHAINED and len(e[DIGEST_AT:]) == 32 for e in entries)

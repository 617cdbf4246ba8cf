"""verify_store: every way to edit a store is caught and placed; an untouched one passes."""

from __future__ import annotations

import dataclasses
import hashlib
import uuid

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from boundary_audit.evidence import (
    FindingKind,
    StoredEvent,
    StoredSeal,
    VerifyReport,
    batch_leaf,
    seal_leaf,
    sign,
    verify_store,
)
from boundary_audit.evidence.compare import check_session, scan, scan_rows
from boundary_audit.evidence.leaves import (
    DIGEST_AT,
    ENTRY_SIZE,
    FLAG_AT,
    FLAG_CHAINED,
    LeafError,
    LeafKind,
    entry_digest,
    entry_sequence,
    event_body,
    event_entry,
    parse_leaf,
)
from boundary_audit.evidence.running import ChainRun, batch_and_run, run_verdict
from boundary_audit.wire import chain
from tests.evidence.helpers import KEY, T0, Store, build_store, rechain, seal_of, session_events

K = FindingKind


def kinds(report: VerifyReport) -> set[FindingKind]:
    return {f.kind for f in report.failures()}


def where(report: VerifyReport, kind: FindingKind) -> list[tuple[str | None, int | None]]:
    return [(f.session, f.sequence_number) for f in report.of_kind(kind)]


@pytest.mark.parametrize("running", [False, True], ids=["content-entries", "chained-entries"])
def test_an_untouched_store_passes(running: bool) -> None:
    store, _ = build_store(running=running)
    report = store.verify()
    assert report.ok, report.findings
    assert report.findings == []
    assert (report.sessions_checked, report.events_checked) == (3, 75)
    assert report.checkpoint_size == len(store.leaves)


def test_an_updated_url_is_named_and_breaks_the_chain() -> None:
    store, ids = build_store()
    evs = store.events[ids[1]]
    evs[4] = dataclasses.replace(evs[4], url="https://evil.example/")
    report = store.verify()
    assert not report.ok
    assert where(report, K.ALTERED) == [(ids[1], 4)]
    assert where(report, K.CHAIN_BROKEN) == [(ids[1], 4)]
    assert "content differs" in report.of_kind(K.ALTERED)[0].detail


def test_an_edit_with_the_chain_and_seal_recomputed_is_still_named_by_the_log() -> None:
    store, ids = build_store()
    sid = ids[0]
    evs = list(store.events[sid])
    evs[10] = dataclasses.replace(evs[10], allowed=not evs[10].allowed)
    store.events[sid] = rechain(sid, evs)
    store.seals[sid] = [seal_of(store.events[sid], sid)]
    report = store.verify()
    assert report.of_kind(K.CHAIN_BROKEN) == []  # consistent forgery: the chain alone passes
    altered = where(report, K.ALTERED)
    assert altered[0] == (sid, 10)  # the edit itself, then every re-chained digest after it
    assert {seq for _, seq in altered} == set(range(10, 25))
    # The recomputed seal has a new head: not the logged seal.
    assert kinds(report) == {K.ALTERED, K.SEAL_ALTERED}


def test_a_deleted_event_is_named() -> None:
    store, ids = build_store()
    del store.events[ids[2]][7]
    report = store.verify()
    assert where(report, K.DELETED) == [(ids[2], 7)]
    assert where(report, K.CHAIN_BROKEN) == [(ids[2], 8)]


def test_an_inserted_fake_event_is_named() -> None:
    store, ids = build_store()
    store.events[ids[0]].append(StoredEvent(99, T0, True, "GET", "https://fake/", "r", "codex"))
    report = store.verify()
    assert where(report, K.INSERTED) == [(ids[0], 99)]
    assert K.CHAIN_BROKEN in kinds(report)


def test_a_whole_deleted_session_is_named_with_each_of_its_events() -> None:
    store, ids = build_store()
    sid = ids[1]
    del store.events[sid]
    del store.seals[sid]
    del store.drops[sid]
    report = store.verify()
    assert where(report, K.SESSION_DELETED) == [(sid, None)]
    assert where(report, K.DELETED) == [(sid, n) for n in range(25)]
    assert where(report, K.SEAL_DELETED) == [(sid, None)]
    assert K.DROP_DELETED in kinds(report)


def test_edited_counters_are_caught() -> None:
    store, ids = build_store()
    seal = store.seals[ids[0]][0]
    store.seals[ids[0]] = [dataclasses.replace(seal, dropped={"channel_full": 0})]
    drop = store.drops[ids[1]][0]
    store.drops[ids[1]] = [dataclasses.replace(drop, dropped={"channel_full": 0})]
    report = store.verify()
    assert where(report, K.SEAL_ALTERED) == [(ids[0], None)]
    assert where(report, K.DROP_ALTERED) == [(ids[1], None)]


def test_a_rewritten_or_truncated_log_fails_against_the_checkpoint() -> None:
    store, ids = build_store()
    sid = ids[0]
    evs = store.events[sid]
    evs[0] = dataclasses.replace(evs[0], url="https://evil/")
    store.events[sid] = rechain(sid, evs)
    store.leaves[0] = batch_leaf(sid, store.events[sid][:7])  # the log rewritten to match
    report = store.verify()
    assert K.LOG_MISMATCH in kinds(report)
    truncated, _ = build_store()
    truncated.leaves.pop()
    assert K.LOG_TRUNCATED in kinds(truncated.verify())


def test_a_checkpoint_from_another_key_or_none_fails() -> None:
    store, _ = build_store()
    other = Ed25519PrivateKey.generate()
    assert store.checkpoint is not None
    c = store.checkpoint.checkpoint
    store.checkpoint = sign(
        other, origin=c.origin, tree_size=c.tree_size, root_hash=c.root_hash, time_ns=1
    )
    assert kinds(store.verify()) == {K.CHECKPOINT_INVALID}
    store.checkpoint = None
    assert kinds(store.verify()) == {K.CHECKPOINT_MISSING}


def test_leaves_after_the_checkpoint_and_unchained_sessions_only_inform() -> None:
    store, _ = build_store()
    coder = str(uuid.uuid4())
    store.ingest(coder, session_events(coder, 5, chained=False), 5)
    report = store.verify()
    assert report.ok, report.failures()
    assert {f.kind for f in report.findings} == {K.NOT_CHECKPOINTED, K.UNVERIFIED}
    store.sign()
    # ...and an unchained session's events are covered by the log all the same.
    store.events[coder][2] = dataclasses.replace(store.events[coder][2], method="POST")
    assert where(store.verify(), K.ALTERED) == [(coder, 2)]


def test_a_malformed_leaf_is_named() -> None:
    store, _ = build_store()
    store.leaves.append(b"junk")
    store.sign()
    assert K.LEAF_MALFORMED in kinds(store.verify())


def test_only_the_sessions_asked_for_are_checked_but_the_log_always() -> None:
    store, ids = build_store()
    store.events[ids[0]].pop()
    seen: list[int] = []
    report = verify_store(
        store.events,
        store.seals,
        store.leaves,
        store.checkpoint,
        KEY.public_key(),
        drops=store.drops,
        sessions=[ids[1]],
        progress=seen.append,
    )
    assert report.ok
    assert (report.sessions_checked, seen) == (1, [25])


# -- any single change, removal or insertion ------------------------------------------------

FIELDS = [
    "sequence_number",
    "time_ns",
    "allowed",
    "method",
    "url",
    "matched_rule",
    "name",
    "digest",
]


def _changed(e: StoredEvent, field: str) -> StoredEvent:
    r = dataclasses.replace
    return {
        "sequence_number": lambda: r(e, sequence_number=e.sequence_number + 1000),
        "time_ns": lambda: r(e, time_ns=e.time_ns + 1),
        "allowed": lambda: r(e, allowed=not e.allowed),
        "method": lambda: r(e, method=e.method + "X"),
        "url": lambda: r(e, url=e.url + "/"),
        "matched_rule": lambda: r(e, matched_rule=e.matched_rule + "*"),
        "name": lambda: r(e, confined_process_name=e.confined_process_name + "x"),
        "digest": lambda: r(e, chain_digest=bytes(32)),
    }[field]()


SEAL_FIELDS = ["events_made", "events_sent", "undelivered", "spilled", "sealed_at_ns", "head"]


def _seal_changed(s: StoredSeal, field: str) -> StoredSeal:
    if field == "head":
        return dataclasses.replace(s, chain_head=bytes(32))
    return dataclasses.replace(s, **{field: getattr(s, field) + 1})


@given(
    data=st.data(),
    what=st.sampled_from(["event", "remove", "insert", "seal"]),
    rechained=st.booleans(),
    running=st.booleans(),
)
@settings(max_examples=160, deadline=None)
def test_any_single_change_removal_or_insertion_fails(
    data: st.DataObject, what: str, rechained: bool, running: bool
) -> None:
    store, ids = build_store(sessions=2, events=12, batch=5, running=running)
    sid = data.draw(st.sampled_from(ids))
    evs = store.events[sid]
    k = data.draw(st.integers(0, len(evs) - 1))
    if what == "event":
        field = data.draw(st.sampled_from(FIELDS))
        evs[k] = _changed(evs[k], field)
        rechained = rechained and field != "digest"  # (re-chaining would undo that edit)
    elif what == "remove":
        del evs[k]
    elif what == "insert":
        evs.append(StoredEvent(500 + k, T0, True, "GET", "https://fake/", "", "codex"))
    else:
        seal = store.seals[sid][0]
        store.seals[sid] = [_seal_changed(seal, data.draw(st.sampled_from(SEAL_FIELDS)))]
    if rechained and what != "seal":
        store.events[sid] = rechain(sid, store.events[sid])
        store.seals[sid] = [seal_of(store.events[sid], sid)]
    report = store.verify()
    assert not report.ok
    if what in ("event", "remove", "insert"):
        # The log names the event (or, with the digests recomputed, the first one re-chained).
        named = {seq for _, seq in where(report, K.ALTERED) + where(report, K.DELETED)}
        named |= {seq for _, seq in where(report, K.INSERTED)}
        assert named


# -- the pieces --------------------------------------------------------------------------------


@given(
    st.lists(st.tuples(st.integers(0, 40), st.booleans(), st.text(max_size=8)), max_size=12),
    st.integers(0, 14),
    st.booleans(),
)
@settings(max_examples=150, deadline=None)
def test_the_inline_chain_check_agrees_with_wire_chain(
    rows: list[tuple[int, bool, str]], count: int, bad_claims: bool
) -> None:
    sid = str(uuid.UUID(int=7))
    events = [StoredEvent(n, n, a, "GET", u, "", "p") for n, a, u in sorted(rows)]
    claims: list[bytes] = []
    digest = chain.genesis(sid)
    for e in events:
        digest = chain.next_digest(digest, e.chained())
        claims.append(bytes(32) if bad_claims and e.sequence_number % 2 else digest)
    head = chain.head(sid, [e.chained() for e in events[:count]]) if not rows else digest
    expected = chain.check(
        sid, [(e.chained(), c) for e, c in zip(events, claims, strict=True)], head, count
    )
    stored = [dataclasses.replace(e, chain_digest=c) for e, c in zip(events, claims, strict=True)]
    result = scan(sid, stored, head, count)
    assert result.chain == expected
    event_rows = [e.row() for e in stored]
    # Met with the content entries (batch_leaf's) or the ingest's (chained where it can):
    # nothing differs, and the verdict is the same.
    content = b"".join(event_entry(e) for e in stored)
    if len({e.sequence_number for e in stored}) == len(stored):
        ingested = parse_leaf(batch_and_run(sid, stored, ChainRun())[0]).body
    else:
        ingested = content  # (numbers repeat: the leaf would sort the repeats)
    for logged in (content, ingested):
        met = scan_rows(sid, event_rows, head, count, logged, strict=True)
        assert (met.chain, met.differ, met.aligned) == (expected, [], True)


@given(st.text(max_size=30), st.text(max_size=30), st.booleans(), st.integers(0, 2**62))
def test_the_inline_event_encoding_is_wire_chains(
    url: str, rule: str, allowed: bool, t: int
) -> None:
    e = StoredEvent(3, t, allowed, "GET", url, rule, "claude-code")
    assert event_body(e) == chain.encode_event(e.chained())
    assert len(event_entry(e)) == ENTRY_SIZE


@given(
    st.lists(
        st.tuples(st.text(max_size=12), st.text(max_size=6), st.text(max_size=6), st.booleans()),
        max_size=20,
    )
)
def test_the_inlined_batch_leaf_is_the_sorted_entries(
    rows: list[tuple[str, str, str, bool]],
) -> None:
    sid = str(uuid.UUID(int=9))
    events = [
        StoredEvent(n * 7 % 23 + n * 23, n, a, "GET", u, r, name, bytes([n]) * 32 if n % 2 else b"")
        for n, (u, r, name, a) in enumerate(rows)
    ]
    entries = sorted(event_entry(e) for e in events)
    leaf = batch_leaf(sid, events)
    assert leaf.endswith(len(entries).to_bytes(4, "big") + b"".join(entries))
    assert parse_leaf(leaf).entries == entries


def test_a_leaf_that_is_not_canonical_is_refused() -> None:
    sid = str(uuid.UUID(int=1))
    leaf = batch_leaf(sid, session_events(sid, 3))
    assert len(parse_leaf(leaf).entries) == 3
    header = len(leaf) - 4 - 3 * ENTRY_SIZE
    swapped = (
        leaf[: header + 4]
        + leaf[header + 4 + ENTRY_SIZE : header + 4 + 2 * ENTRY_SIZE]
        + leaf[header + 4 : header + 4 + ENTRY_SIZE]
        + leaf[header + 4 + 2 * ENTRY_SIZE :]
    )
    for bad in (leaf[:-1], swapped, b"boundary-audit/leaf/v1\x00\x09" + bytes(16)):
        try:
            parse_leaf(bad)
        except LeafError:
            continue
        raise AssertionError(f"parsed {bad!r}")


def test_earlier_checkpoints_expose_a_rewrite_the_latest_was_re_signed_over() -> None:
    """With the key stolen, the latest checkpoint can be re-signed over a rewritten
    log; an older checkpoint kept since still names the rewrite."""
    store, ids = build_store()
    assert store.checkpoint is not None
    old = store.checkpoint
    sid = ids[0]
    store.ingest(sid, [], 1)
    store.sign()  # a later, honest checkpoint of the same leaves
    honest = store.checkpoint
    assert honest is not None
    report = verify_store(
        store.events,
        store.seals,
        store.leaves,
        honest,
        KEY.public_key(),
        drops=store.drops,
        earlier=[old.to_text()],
    )
    assert report.ok, report.findings
    evs = store.events[sid]
    evs[0] = dataclasses.replace(evs[0], url="https://evil/")
    store.events[sid] = rechain(sid, evs)
    store.seals[sid] = [seal_of(store.events[sid], sid)]
    store.leaves = [_rewritten(leaf, sid, store) for leaf in store.leaves]
    store.sign()  # re-signed with the stolen key over the rewritten log
    forged = verify_store(
        store.events,
        store.seals,
        store.leaves,
        store.checkpoint,
        KEY.public_key(),
        drops=store.drops,
    )
    assert forged.ok  # the latest alone cannot tell
    caught = verify_store(
        store.events,
        store.seals,
        store.leaves,
        store.checkpoint,
        KEY.public_key(),
        drops=store.drops,
        earlier=[old],
    )
    assert kinds(caught) == {K.LOG_MISMATCH}
    bad = verify_store(
        store.events,
        store.seals,
        store.leaves,
        store.checkpoint,
        KEY.public_key(),
        drops=store.drops,
        earlier=["garbage"],
    )
    assert kinds(bad) == {K.CHECKPOINT_INVALID}


def _rewritten(leaf: bytes, sid: str, store: Store) -> bytes:
    """The leaf an attacker with the key writes to match the edited rows."""
    parsed = parse_leaf(leaf)
    if parsed.session_id != sid:
        return leaf
    if parsed.kind is LeafKind.BATCH:
        numbers = {entry_sequence(e) for e in parsed.entries}
        return batch_leaf(sid, [e for e in store.events[sid] if e.sequence_number in numbers])
    if parsed.kind is LeafKind.SEAL:
        return seal_leaf(sid, store.seals[sid][0])
    return leaf


@settings(max_examples=300)
@given(
    st.lists(st.integers(0, 30), max_size=25),
    st.lists(st.integers(1, 6), max_size=6),
    st.sets(st.integers(0, 30), max_size=3),
    st.integers(0, 32),
    st.booleans(),
)
def test_the_running_chain_judges_as_a_full_scan(
    order: list[int], cuts: list[int], bad: set[int], count: int, true_head: bool
) -> None:
    """Batches in any order (late ones, gaps, bad digests): the run's verdict, when it
    gives one, is scan's over everything stored; its leaves are batch_leaf's."""
    sid = str(uuid.UUID(int=11))
    numbers = list(dict.fromkeys(order))  # arrival order, each number once
    plain = [StoredEvent(n, n, n % 3 != 0, "GET", f"u{n}", "", "p") for n in range(31)]
    digest = chain.genesis(sid)
    digests = {}
    for e in plain:
        digest = chain.next_digest(digest, e.chained())
        digests[e.sequence_number] = bytes(32) if e.sequence_number in bad else digest
    head = chain.head(sid, [e.chained() for e in plain[:count]]) if true_head else bytes(32)
    run = ChainRun()
    stored: list[StoredEvent] = []
    leaves: list[bytes] = []
    at = 0
    for size in [*cuts, len(numbers)]:
        chunk = sorted(numbers[at : at + size])
        at += size
        if not chunk:
            continue
        batch = [dataclasses.replace(plain[n], chain_digest=digests[n]) for n in chunk]
        leaf, run = batch_and_run(sid, batch, run)
        assert_sound_entries(sid, leaf, batch)
        leaves.append(leaf)
        stored = sorted([*stored, *batch], key=lambda e: e.sequence_number)
        verdict = run_verdict(run, head, count)
        if verdict is not None:
            assert verdict == scan(sid, stored, head, count).chain
    # ...and the store is what its leaves say, whatever form each entry took.
    report = VerifyReport()
    seal = StoredSeal(count, count, 0, 0, T0, head, count)
    parsed = [(i, parse_leaf(leaf)) for i, leaf in enumerate(leaves)]
    check_session(report, sid, events=stored, seals=[seal], drops=[], leaves=parsed)
    assert not {f.kind for f in report.findings} & EVENT_KINDS, report.findings
    # Met entry by entry, the one-hash walk's chain verdict is the full scan's.
    logged = b"".join(sorted(e for _, p in parsed for e in p.entries))
    met = scan_rows(sid, [e.row() for e in stored], head, count, logged, strict=True)
    assert (met.chain, met.differ) == (scan(sid, stored, head, count).chain, [])


EVENT_KINDS = {K.ALTERED, K.DELETED, K.INSERTED}


def assert_sound_entries(sid: str, leaf: bytes, batch: list[StoredEvent]) -> None:
    """Each entry is the event's content form, or a chained form its digest satisfies."""
    entries = parse_leaf(leaf).entries
    assert len(entries) == len(batch)
    for entry, e in zip(entries, sorted(batch, key=lambda e: e.sequence_number), strict=True):
        if entry[FLAG_AT] != FLAG_CHAINED:
            assert entry == event_entry(e)
            continue
        before, d = entry[8:FLAG_AT], entry[DIGEST_AT:]
        assert entry_sequence(entry) == e.sequence_number
        assert hashlib.sha256(before + event_body(e)).digest() == d == e.chain_digest
        assert entry_digest(entry) == d

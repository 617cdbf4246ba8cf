"""Hash chains: a known vector, and that any single change is caught and placed."""

from __future__ import annotations

import hashlib
import struct
import uuid

import pytest
from hypothesis import given
from hypothesis import strategies as st

from boundary_audit.wire import chain
from boundary_audit.wire.chain import ChainedEvent

SESSION = uuid.UUID("12345678-1234-5678-1234-567812345678")

texts = st.text(max_size=40)
events = st.lists(
    st.tuples(st.integers(0, 2**62), st.booleans(), texts, texts, texts, texts), max_size=12
).map(
    lambda rows: [
        ChainedEvent(i, t, allowed, m, u, r, n) for i, (t, allowed, m, u, r, n) in enumerate(rows)
    ]
)


def _claimed(evs: list[ChainedEvent]) -> list[tuple[ChainedEvent, bytes | None]]:
    return list(zip(evs, chain.digests(SESSION, evs), strict=True))


def test_known_vector_is_reproducible_from_the_documented_encoding() -> None:
    event = ChainedEvent(0, 1_700_000_000_123_456_789, True, "GET", "https://x.org/", "r", "p")
    genesis = hashlib.sha256(b"boundary-audit/chain/v1\x00" + SESSION.bytes).digest()
    body = struct.pack(">QqB", 0, 1_700_000_000_123_456_789, 1)
    for text in ("GET", "https://x.org/", "r", "p"):
        body += struct.pack(">I", len(text)) + text.encode()
    assert chain.head(SESSION, [event]) == hashlib.sha256(genesis + body).digest()


def test_empty_session_head_is_the_genesis() -> None:
    assert chain.head(SESSION, []) == chain.genesis(SESSION)
    assert chain.check(SESSION, [], chain.genesis(SESSION), 0).ok


@given(events)
def test_an_untouched_chain_verifies(evs: list[ChainedEvent]) -> None:
    result = chain.check(SESSION, _claimed(evs), chain.head(SESSION, evs), len(evs))
    assert result.ok
    assert result.checked == len(evs)


@given(events.filter(bool), st.data())
def test_any_single_field_change_is_caught_at_its_sequence_number(
    evs: list[ChainedEvent], data: st.DataObject
) -> None:
    claims = _claimed(evs)
    seal = chain.head(SESSION, evs)
    k = data.draw(st.integers(0, len(evs) - 1))
    field = data.draw(st.sampled_from(["time_ns", "allowed", "method", "url", "rule", "name"]))
    e = evs[k]
    changed = {
        "time_ns": ChainedEvent(
            k, e.time_ns + 1, e.allowed, e.method, e.url, e.matched_rule, e.confined_process_name
        ),
        "allowed": ChainedEvent(
            k, e.time_ns, not e.allowed, e.method, e.url, e.matched_rule, e.confined_process_name
        ),
        "method": ChainedEvent(
            k, e.time_ns, e.allowed, e.method + "X", e.url, e.matched_rule, e.confined_process_name
        ),
        "url": ChainedEvent(
            k, e.time_ns, e.allowed, e.method, e.url + "/", e.matched_rule, e.confined_process_name
        ),
        "rule": ChainedEvent(
            k, e.time_ns, e.allowed, e.method, e.url, e.matched_rule + "*", e.confined_process_name
        ),
        "name": ChainedEvent(
            k, e.time_ns, e.allowed, e.method, e.url, e.matched_rule, e.confined_process_name + "x"
        ),
    }[field]
    claims[k] = (changed, claims[k][1])
    result = chain.check(SESSION, claims, seal, len(evs))
    assert not result.ok
    assert result.first_bad_sequence == k


@given(events.filter(bool), st.data())
def test_a_removal_or_an_insertion_is_caught(evs: list[ChainedEvent], data: st.DataObject) -> None:
    claims = _claimed(evs)
    seal = chain.head(SESSION, evs)
    k = data.draw(st.integers(0, len(evs) - 1))
    removed = claims[:k] + claims[k + 1 :]
    # The successor's digest breaks, or (the last one removed) the chain ends short.
    expected = k + 1 if k < len(evs) - 1 else k
    assert chain.check(SESSION, removed, seal, len(evs)).first_bad_sequence == expected
    extra = ChainedEvent(len(evs), 0, True, "GET", "https://fake/", "", "")
    inserted = [*claims, (extra, None)]
    assert chain.check(SESSION, inserted, seal, len(evs)).first_bad_sequence == len(evs)


def test_consistently_forged_claims_still_fail_on_the_seal_head() -> None:
    evs = [ChainedEvent(i, i, True, "GET", f"https://x/{i}", "", "") for i in range(3)]
    seal = chain.head(SESSION, evs)
    forged = [*evs[:2], ChainedEvent(2, 2, True, "GET", "https://evil/", "", "")]
    result = chain.check(SESSION, _claimed(forged), seal, 3)
    assert not result.ok
    assert result.first_bad_sequence is None


def test_numbers_dropped_before_the_wire_are_gaps_the_chain_does_not_cover() -> None:
    sent = [ChainedEvent(i, i, True, "GET", f"https://x/{i}", "", "") for i in (0, 1, 4, 5)]
    assert chain.check(SESSION, _claimed(sent), chain.head(SESSION, sent), 4).ok


def test_sequence_numbers_must_increase() -> None:
    evs = [ChainedEvent(i, 0, True, "GET", "u", "", "") for i in (0, 2, 2)]
    with pytest.raises(ValueError, match="increase"):
        list(chain.digests(SESSION, evs))

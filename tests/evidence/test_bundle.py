"""Export bundles: verifiable offline with only the public key; any hand edit fails."""

from __future__ import annotations

import json
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from boundary_audit.evidence import (
    BundleError,
    FindingKind,
    MerkleTree,
    make_bundle,
    verify_bundle,
)
from tests.evidence.helpers import KEY, build_store, export

K = FindingKind


@pytest.fixture(scope="module")
def bundle() -> tuple[bytes, str]:
    store, ids = build_store()
    return export(store, ids[1]), ids[1]


def edited(data: bytes, change: Any) -> bytes:
    doc = json.loads(data)
    change(doc)
    return json.dumps(doc).encode()


def kinds(data: bytes) -> set[FindingKind]:
    return {f.kind for f in verify_bundle(data, KEY.public_key()).failures()}


def test_an_exported_bundle_verifies_offline(bundle: tuple[bytes, str]) -> None:
    data, sid = bundle
    doc = json.loads(data)
    assert doc["format"] == "boundary-audit/bundle/v1"
    assert doc["session_id"] == sid
    assert len(doc["events"]) == 25
    assert doc["checkpoint"].startswith("boundary-audit/checkpoint/v1\n")
    report = verify_bundle(data, KEY.public_key())
    assert report.ok, report.findings
    assert report.findings == []
    assert (report.events_checked, report.leaves_checked) == (25, 6)


def test_a_hand_edited_url_is_named(bundle: tuple[bytes, str]) -> None:
    data, sid = bundle

    def change(doc: dict[str, Any]) -> None:
        doc["events"][3]["url"] = "https://evil.example/"

    report = verify_bundle(edited(data, change), KEY.public_key())
    assert [(f.kind, f.session, f.sequence_number) for f in report.failures()] == [
        (K.ALTERED, sid, 3),
        (K.CHAIN_BROKEN, sid, 3),
    ]


def test_a_removed_event_a_removed_leaf_and_a_bad_proof_fail(bundle: tuple[bytes, str]) -> None:
    data, _ = bundle
    assert K.DELETED in kinds(edited(data, lambda d: d["events"].pop(5)))

    # Removing a batch's leaf with its events: the chain no longer reaches the seal.
    def drop_batch(doc: dict[str, Any]) -> None:
        doc["leaves"].pop(0)
        del doc["events"][:7]

    assert K.CHAIN_BROKEN in kinds(edited(data, drop_batch))

    def bad_proof(doc: dict[str, Any]) -> None:
        proof = doc["leaves"][0]["inclusion_proof"]
        proof[0] = ("0" if proof[0][0] != "0" else "1") + proof[0][1:]

    assert kinds(edited(data, bad_proof)) == {K.PROOF_INVALID}


def test_a_bundle_signed_by_another_key_or_broken_json_fails(bundle: tuple[bytes, str]) -> None:
    data, _ = bundle
    other = Ed25519PrivateKey.generate()
    assert verify_bundle(data, other.public_key()).of_kind(K.CHECKPOINT_INVALID)
    assert kinds(data[:-10]) == {K.BUNDLE_MALFORMED}
    assert kinds(edited(data, lambda d: d.pop("seals"))) == {K.BUNDLE_MALFORMED}
    assert kinds(edited(data, lambda d: d.update(format="v2"))) == {K.BUNDLE_MALFORMED}


def test_a_session_not_covered_by_the_checkpoint_cannot_be_exported() -> None:
    store, ids = build_store()
    store.ingest(ids[0], [], 1)
    from tests.evidence.helpers import session_events

    extra = session_events(ids[0], 3)
    store.leaves.append(b"unsigned")  # appended after the checkpoint
    store.events[ids[0]].extend(extra)
    with pytest.raises(BundleError, match="not covered"):
        make_bundle(
            ids[0],
            events=store.events[ids[0]],
            seals=[],
            drops=[],
            tree=MerkleTree.of(store.leaves),
            leaves=[(len(store.leaves) - 1, b"unsigned")],
            checkpoint=store.checkpoint,  # type: ignore[arg-type]
        )


def _scalars(obj: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    if isinstance(obj, dict):
        return [p for k, v in obj.items() for p in _scalars(v, (*path, k))]
    if isinstance(obj, list):
        return [p for i, v in enumerate(obj) for p in _scalars(v, (*path, i))]
    return [path]


def _mutate(value: Any) -> Any:
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return value + 1
    return value + "x"


@given(st.data())
@settings(max_examples=150, deadline=None)
def test_any_single_hand_edit_of_any_value_fails(data: st.DataObject) -> None:
    raw, _ = _BUNDLE
    doc = json.loads(raw)
    path = data.draw(st.sampled_from(_scalars(doc)))
    target = doc
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = _mutate(target[path[-1]])
    report = verify_bundle(json.dumps(doc).encode(), KEY.public_key())
    assert not report.ok, path


def _make() -> tuple[bytes, str]:
    store, ids = build_store(sessions=2, events=9, batch=4)
    return export(store, ids[0]), ids[0]


_BUNDLE = _make()

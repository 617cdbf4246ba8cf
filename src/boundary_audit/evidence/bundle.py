"""Export bundles: one session's evidence in one JSON file, verifiable offline.

Format (version 1), one JSON object::

    {
      "format": "boundary-audit/bundle/v1",
      "session_id": "<uuid>",
      "events": [{"sequence_number": int, "time_ns": int, "allowed": bool,
                  "method": str, "url": str, "matched_rule": str,
                  "confined_process_name": str, "chain_digest": "<hex, or empty>"}, ...],
      "seals":  [{"events_made": int, "events_sent": int, "undelivered": int,
                  "spilled": int, "sealed_at_ns": int, "chain_head": "<hex>",
                  "chain_count": int, "dropped": {"<reason>": int, ...}}, ...],
      "drops":  [{"report_id": str, "source": str, "time_ns": int,
                  "dropped": {"<reason>": int, ...}}, ...],
      "leaves": [{"index": int, "leaf": "<base64 of the leaf bytes>",
                  "inclusion_proof": ["<hex>", ...]}, ...],
      "checkpoint": "<the signed checkpoint's text>"
    }

``leaves`` are every leaf of the session in the store log (its batches,
seals and drop reports: :mod:`.leaves`), each with its RFC 9162 inclusion
proof in the tree of the checkpoint's size. :func:`verify_bundle` needs only
the bundle and the collector's public key: it verifies the checkpoint's
signature, each leaf's proof against the signed head, that the events,
seals and drop reports are exactly what the leaves commit to, and the
session's hash chain against its seal. Every leaf must be proven: a bundle
is exported against a checkpoint that covers the whole session.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Iterable, Sequence
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from .checkpoint import SignedCheckpoint
from .compare import check_session
from .leaves import LeafError, ParsedLeaf, StoredDrop, StoredEvent, StoredSeal, parse_leaf
from .merkle import MerkleTree, ProofError, leaf_hash, verify_inclusion
from .report import FindingKind, VerifyReport
from .store import authenticate_checkpoint

BUNDLE_FORMAT = "boundary-audit/bundle/v1"


class BundleError(ValueError):
    """A bundle that cannot be made (a leaf beyond the checkpoint) or read."""


# -- writing ---------------------------------------------------------------------------------


def _event(e: StoredEvent) -> dict[str, Any]:
    return {
        "sequence_number": e.sequence_number,
        "time_ns": e.time_ns,
        "allowed": e.allowed,
        "method": e.method,
        "url": e.url,
        "matched_rule": e.matched_rule,
        "confined_process_name": e.confined_process_name,
        "chain_digest": e.chain_digest.hex(),
    }


def _seal(s: StoredSeal) -> dict[str, Any]:
    return {
        "events_made": s.events_made,
        "events_sent": s.events_sent,
        "undelivered": s.undelivered,
        "spilled": s.spilled,
        "sealed_at_ns": s.sealed_at_ns,
        "chain_head": s.chain_head.hex(),
        "chain_count": s.chain_count,
        "dropped": dict(s.dropped),
    }


def _drop(d: StoredDrop) -> dict[str, Any]:
    return {
        "report_id": d.report_id,
        "source": d.source,
        "time_ns": d.time_ns,
        "dropped": dict(d.dropped),
    }


def make_bundle(
    session_id: str,
    *,
    events: Iterable[StoredEvent],
    seals: Iterable[StoredSeal],
    drops: Iterable[StoredDrop],
    tree: MerkleTree,
    leaves: Sequence[tuple[int, bytes]],
    checkpoint: SignedCheckpoint,
) -> bytes:
    """The bundle of ``session_id``: its records, its ``(index, leaf)`` and their proofs.

    ``tree`` is the store log (at least ``checkpoint``'s size); every leaf
    must lie within the checkpoint (BundleError otherwise: sign a fresh
    checkpoint first).
    """
    size = checkpoint.checkpoint.tree_size
    proven = []
    for index, data in leaves:
        if index >= size:
            raise BundleError(f"leaf {index} is not covered by the checkpoint of size {size}")
        if tree.leaf(index) != leaf_hash(data):
            raise BundleError(f"leaf {index} is not the log's leaf {index}")
        try:
            proof = tree.inclusion_proof(index, size)
        except ProofError as exc:
            raise BundleError(str(exc)) from None
        proven.append(
            {
                "index": index,
                "leaf": base64.b64encode(data).decode(),
                "inclusion_proof": [p.hex() for p in proof],
            }
        )
    doc = {
        "format": BUNDLE_FORMAT,
        "session_id": session_id,
        "events": [_event(e) for e in sorted(events, key=lambda e: e.sequence_number)],
        "seals": [_seal(s) for s in seals],
        "drops": [_drop(d) for d in drops],
        "leaves": proven,
        "checkpoint": checkpoint.to_text(),
    }
    return json.dumps(doc, indent=1, ensure_ascii=False).encode("utf-8")


# -- reading -----------------------------------------------------------------------------------


def _get(obj: Any, key: str, kind: type | tuple[type, ...]) -> Any:
    if not isinstance(obj, dict) or key not in obj:
        raise BundleError(f"missing {key!r}")
    value = obj[key]
    # bool is an int in Python: an int field must not be a bool.
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise BundleError(f"{key!r} has the wrong type ({type(value).__name__})")
    return value


def _hex(text: str, what: str) -> bytes:
    try:
        return bytes.fromhex(text)
    except ValueError:
        raise BundleError(f"{what} is not hex") from None


def _counts(obj: Any) -> dict[str, int]:
    if not isinstance(obj, dict) or not all(
        isinstance(k, str) and isinstance(v, int) and not isinstance(v, bool)
        for k, v in obj.items()
    ):
        raise BundleError("'dropped' must map reasons to counts")
    return dict(obj)


def _read_event(o: Any) -> StoredEvent:
    return StoredEvent(
        _get(o, "sequence_number", int),
        _get(o, "time_ns", int),
        _get(o, "allowed", bool),
        _get(o, "method", str),
        _get(o, "url", str),
        _get(o, "matched_rule", str),
        _get(o, "confined_process_name", str),
        _hex(_get(o, "chain_digest", str), "chain_digest"),
    )


def _read_seal(o: Any) -> StoredSeal:
    return StoredSeal(
        _get(o, "events_made", int),
        _get(o, "events_sent", int),
        _get(o, "undelivered", int),
        _get(o, "spilled", int),
        _get(o, "sealed_at_ns", int),
        _hex(_get(o, "chain_head", str), "chain_head"),
        _get(o, "chain_count", int),
        _counts(_get(o, "dropped", dict)),
    )


def _read_drop(o: Any) -> StoredDrop:
    return StoredDrop(
        _get(o, "report_id", str),
        _get(o, "source", str),
        _get(o, "time_ns", int),
        _counts(_get(o, "dropped", dict)),
    )


def verify_bundle(data: bytes | str, public_key: Ed25519PublicKey) -> VerifyReport:
    """Check a bundle offline; the report names what does not hold."""
    report = VerifyReport()
    try:
        doc = json.loads(data)
        if _get(doc, "format", str) != BUNDLE_FORMAT:
            raise BundleError(f"not a {BUNDLE_FORMAT} bundle")
        session_id = _get(doc, "session_id", str)
        events = [_read_event(o) for o in _get(doc, "events", list)]
        seals = [_read_seal(o) for o in _get(doc, "seals", list)]
        drops = [_read_drop(o) for o in _get(doc, "drops", list)]
        raw_leaves = _get(doc, "leaves", list)
        checkpoint_text = _get(doc, "checkpoint", str)
    except (ValueError, TypeError) as exc:  # json.JSONDecodeError and BundleError are ValueErrors
        report.add(FindingKind.BUNDLE_MALFORMED, detail=str(exc))
        return report
    signed = authenticate_checkpoint(report, checkpoint_text, public_key)
    leaves = _proven_leaves(report, session_id, raw_leaves, signed)
    if leaves is None:
        return report
    report.leaves_checked = len(leaves)
    check_session(report, session_id, events=events, seals=seals, drops=drops, leaves=leaves)
    return report


def _proven_leaves(
    report: VerifyReport, session_id: str, raw: list[Any], signed: SignedCheckpoint | None
) -> list[tuple[int, ParsedLeaf]] | None:
    """Each bundled leaf parsed, with its proof checked against the signed head."""
    leaves: list[tuple[int, ParsedLeaf]] = []
    for o in raw:
        try:
            index = _get(o, "index", int)
            data = base64.b64decode(_get(o, "leaf", str), validate=True)
            proof = [_hex(p, "inclusion_proof") for p in _get(o, "inclusion_proof", list)]
            leaf = parse_leaf(data)
        except (BundleError, LeafError, binascii.Error, TypeError) as exc:
            report.add(FindingKind.BUNDLE_MALFORMED, session_id, None, f"a leaf: {exc}")
            return None
        if leaf.session_id != session_id:
            report.add(
                FindingKind.BUNDLE_MALFORMED,
                session_id,
                None,
                f"leaf {index} is of session {leaf.session_id}",
            )
            return None
        if signed is not None:
            c = signed.checkpoint
            if not verify_inclusion(leaf_hash(data), index, c.tree_size, proof, c.root_hash):
                report.add(
                    FindingKind.PROOF_INVALID,
                    session_id,
                    None,
                    f"leaf {index} is not in the signed log of {c.tree_size} leaves",
                )
        leaves.append((index, leaf))
    if len({i for i, _ in leaves}) != len(leaves):
        report.add(FindingKind.BUNDLE_MALFORMED, session_id, None, "a leaf index repeats")
    return leaves


__all__ = ["BUNDLE_FORMAT", "BundleError", "make_bundle", "verify_bundle"]

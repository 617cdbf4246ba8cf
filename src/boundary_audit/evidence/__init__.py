"""Evidence: a tamper-evident store log, signed checkpoints, export bundles, verification.

Pure and sans-I/O (keys are the one exception: created and read as private
files), depending only on :mod:`boundary_audit.wire` and ``cryptography``:

- :mod:`.merkle`: an RFC 6962 / 9162 Merkle tree (heads, inclusion and
  consistency proofs, their verification) and its compact :class:`Frontier`;
- :mod:`.leaves`: the canonical leaf of each stored batch, seal and drop
  report, and the plain records they are made from;
- :mod:`.checkpoint`: Ed25519-signed checkpoints (tree size, head, time,
  key id) and keys;
- :mod:`.store`: :func:`verify_store`, a whole store against its log;
- :mod:`.bundle`: one session's export bundle and :func:`verify_bundle`;
- :mod:`.report`: :class:`VerifyReport`, what both return.

How the collector uses them: ``docs/evidence.md``.
"""

from .bundle import BUNDLE_FORMAT, BundleError, make_bundle, verify_bundle
from .checkpoint import (
    Checkpoint,
    CheckpointError,
    SignedCheckpoint,
    generate_key,
    key_id,
    load_or_generate_key,
    load_private_key,
    load_public_key,
    public_key_pem,
    sign,
)
from .checkpoint import parse as parse_checkpoint
from .checkpoint import verify as verify_checkpoint
from .leaves import (
    EventRow,
    LeafError,
    LeafKind,
    ParsedLeaf,
    StoredDrop,
    StoredEvent,
    StoredSeal,
    batch_leaf,
    drop_leaf,
    parse_leaf,
    seal_leaf,
)
from .merkle import (
    EMPTY_ROOT,
    Frontier,
    MerkleTree,
    ProofError,
    leaf_hash,
    verify_consistency,
    verify_inclusion,
)
from .report import Finding, FindingKind, VerifyReport
from .store import verify_store

__all__ = [
    "BUNDLE_FORMAT",
    "EMPTY_ROOT",
    "BundleError",
    "Checkpoint",
    "CheckpointError",
    "EventRow",
    "Finding",
    "FindingKind",
    "Frontier",
    "LeafError",
    "LeafKind",
    "MerkleTree",
    "ParsedLeaf",
    "ProofError",
    "SignedCheckpoint",
    "StoredDrop",
    "StoredEvent",
    "StoredSeal",
    "VerifyReport",
    "batch_leaf",
    "drop_leaf",
    "generate_key",
    "key_id",
    "leaf_hash",
    "load_or_generate_key",
    "load_private_key",
    "load_public_key",
    "make_bundle",
    "parse_checkpoint",
    "parse_leaf",
    "public_key_pem",
    "seal_leaf",
    "sign",
    "verify_bundle",
    "verify_checkpoint",
    "verify_consistency",
    "verify_inclusion",
    "verify_store",
]

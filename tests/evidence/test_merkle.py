"""RFC 6962 / 9162 Merkle tree: known heads, a naive reference, and proofs that verify or fail."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from boundary_audit.evidence import merkle
from boundary_audit.evidence.merkle import Frontier, MerkleTree, ProofError

# The eight leaves of the Certificate Transparency reference test data, and
# the heads of their first n (RFC 6962 section 2.1's definition gives them).
LEAVES = [
    b"",
    b"\x00",
    b"\x10",
    b"\x20\x21",
    b"\x30\x31",
    b"\x40\x41\x42\x43",
    bytes(range(0x50, 0x58)),
    bytes(range(0x60, 0x70)),
]
HEADS = [
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
]


# -- a reference written straight from the RFC's recursive definitions --------------------


def _h(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def _k(n: int) -> int:
    k = 1
    while k * 2 < n:
        k *= 2
    return k


def ref_mth(d: list[bytes]) -> bytes:
    if not d:
        return _h(b"")
    if len(d) == 1:
        return _h(b"\x00" + d[0])
    k = _k(len(d))
    return _h(b"\x01" + ref_mth(d[:k]) + ref_mth(d[k:]))


def ref_path(m: int, d: list[bytes]) -> list[bytes]:
    if len(d) <= 1:
        return []
    k = _k(len(d))
    if m < k:
        return [*ref_path(m, d[:k]), ref_mth(d[k:])]
    return [*ref_path(m - k, d[k:]), ref_mth(d[:k])]


def ref_subproof(m: int, d: list[bytes], b: bool) -> list[bytes]:
    n = len(d)
    if m == n:
        return [] if b else [ref_mth(d)]
    k = _k(n)
    if m <= k:
        return [*ref_subproof(m, d[:k], b), ref_mth(d[k:])]
    return [*ref_subproof(m - k, d[k:], False), ref_mth(d[:k])]


def ref_proof(m: int, d: list[bytes]) -> list[bytes]:
    return [] if m in (0, len(d)) else ref_subproof(m, d, True)


# -- known values ------------------------------------------------------------------------------


def test_the_empty_tree_and_the_reference_heads() -> None:
    assert merkle.root([]) == hashlib.sha256(b"").digest() == merkle.EMPTY_ROOT
    tree = MerkleTree.of(LEAVES)
    for n, expected in enumerate(HEADS, start=1):
        assert tree.root(n).hex() == expected
        assert merkle.root(LEAVES[:n]).hex() == expected
        assert ref_mth(LEAVES[:n]).hex() == expected


def test_leaf_and_node_hashes_are_domain_separated() -> None:
    assert merkle.leaf_hash(b"x") == _h(b"\x00x")
    assert merkle.node_hash(b"a" * 32, b"b" * 32) == _h(b"\x01" + b"a" * 32 + b"b" * 32)


def test_every_proof_of_the_reference_tree_matches_the_rfc_and_verifies() -> None:
    tree = MerkleTree.of(LEAVES)
    for n in range(1, len(LEAVES) + 1):
        for m in range(n):
            proof = tree.inclusion_proof(m, n)
            assert proof == ref_path(m, LEAVES[:n])
            assert merkle.verify_inclusion(tree.leaf(m), m, n, proof, tree.root(n))
        for m in range(n + 1):
            proof = tree.consistency_proof(m, n)
            assert proof == ref_proof(m, LEAVES[:n])
            old = tree.root(m)
            assert merkle.verify_consistency(m, n, old, tree.root(n), proof)


def test_impossible_proofs_are_refused() -> None:
    tree = MerkleTree.of(LEAVES[:3])
    with pytest.raises(ProofError):
        tree.inclusion_proof(3, 3)
    with pytest.raises(ProofError):
        tree.inclusion_proof(0, 4)
    with pytest.raises(ProofError):
        tree.consistency_proof(3, 2)
    assert not merkle.verify_inclusion(tree.leaf(0), 3, 3, [], tree.root())
    assert not merkle.verify_consistency(2, 1, tree.root(2), tree.root(1), [])
    assert not merkle.verify_consistency(1, 3, tree.root(1), tree.root(3), [])


# -- any size ---------------------------------------------------------------------------------

sizes = st.integers(1, 300)


@given(n=sizes, data=st.data())
@settings(max_examples=150, deadline=None)
def test_every_inclusion_proof_verifies_and_any_flipped_byte_fails(
    n: int, data: st.DataObject
) -> None:
    leaves = [i.to_bytes(4, "big") for i in range(n)]
    tree = MerkleTree.of(leaves)
    head = tree.root()
    assert head == ref_mth(leaves)
    m = data.draw(st.integers(0, n - 1))
    proof = tree.inclusion_proof(m)
    assert merkle.verify_inclusion(tree.leaf(m), m, n, proof, head)
    assert not merkle.verify_inclusion(merkle.leaf_hash(b"other"), m, n, proof, head)
    if n > 1:
        assert not merkle.verify_inclusion(tree.leaf(m), (m + 1) % n, n, proof, head)
    if proof:
        i = data.draw(st.integers(0, len(proof) - 1))
        byte = data.draw(st.integers(0, merkle.HASH_SIZE - 1))
        bad = list(proof)
        bad[i] = bad[i][:byte] + bytes([bad[i][byte] ^ 0x01]) + bad[i][byte + 1 :]
        assert not merkle.verify_inclusion(tree.leaf(m), m, n, bad, head)
        assert not merkle.verify_inclusion(tree.leaf(m), m, n, proof[:-1], head)
    flipped = bytes([head[0] ^ 0x80]) + head[1:]
    assert not merkle.verify_inclusion(tree.leaf(m), m, n, proof, flipped)


@given(n=sizes, data=st.data())
@settings(max_examples=150, deadline=None)
def test_every_consistency_proof_verifies_and_any_flipped_byte_fails(
    n: int, data: st.DataObject
) -> None:
    leaves = [i.to_bytes(4, "big") for i in range(n)]
    tree = MerkleTree.of(leaves)
    m = data.draw(st.integers(0, n))
    proof = tree.consistency_proof(m)
    assert proof == ref_proof(m, leaves)
    old, new = tree.root(m), tree.root()
    assert merkle.verify_consistency(m, n, old, new, proof)
    if 0 < m < n:
        i = data.draw(st.integers(0, len(proof) - 1))
        byte = data.draw(st.integers(0, merkle.HASH_SIZE - 1))
        bad = list(proof)
        bad[i] = bad[i][:byte] + bytes([bad[i][byte] ^ 0x01]) + bad[i][byte + 1 :]
        assert not merkle.verify_consistency(m, n, old, new, bad)
        # A rewritten history: the old head of a different prefix.
        other = merkle.root([b"forged", *leaves[1:m]])
        assert not merkle.verify_consistency(m, n, other, new, proof)
        assert not merkle.verify_consistency(m, n, old, new, proof[:-1])


@given(n=st.integers(0, 1100))
@settings(max_examples=60, deadline=None)
def test_the_frontier_agrees_with_the_tree_and_survives_persistence(n: int) -> None:
    frontier = Frontier()
    tree = MerkleTree()
    for i in range(n):
        leaf = i.to_bytes(4, "big")
        assert frontier.append(leaf) == tree.append(leaf) == i
    assert frontier.size == n
    assert len(frontier.hashes) == n.bit_count()  # compact: one hash per set bit
    assert frontier.root() == tree.root()
    restored = Frontier.from_bytes(frontier.to_bytes())
    assert restored.root() == frontier.root()
    restored.append(b"next")
    tree.append(b"next")
    assert restored.root() == tree.root()


def test_a_damaged_frontier_is_refused() -> None:
    frontier = Frontier()
    for i in range(5):
        frontier.append(bytes([i]))
    data = frontier.to_bytes()
    with pytest.raises(ValueError, match="hashes long"):
        Frontier.from_bytes(data[:-1])
    with pytest.raises(ValueError, match="8-byte"):
        Frontier.from_bytes(b"\x00")
    with pytest.raises(ValueError, match="has 2 hashes"):
        Frontier(5, [b"x" * 32])

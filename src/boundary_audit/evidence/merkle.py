"""An RFC 6962 / RFC 9162 Merkle tree: tree heads, inclusion and consistency proofs.

Pure functions over leaf data (bytes), exactly as RFC 9162 section 2.1
defines them, so that any Certificate Transparency style verifier checks
our proofs:

- ``leaf_hash(d) = SHA-256(0x00 || d)``, ``node_hash(l, r) = SHA-256(0x01 || l || r)``;
- the tree head of no leaves is ``SHA-256()`` (of the empty string); of one
  leaf its leaf hash; of ``n > 1`` leaves ``node_hash(MTH(D[0:k]), MTH(D[k:n]))``
  with ``k`` the largest power of two smaller than ``n``;
- inclusion proofs are the audit path ``PATH(m, D[n])`` (section 2.1.3),
  consistency proofs ``PROOF(m, D[n])`` (section 2.1.4), and both are
  verified with the algorithms of sections 2.1.3.2 and 2.1.4.2.

Two stateful helpers:

- :class:`Frontier` appends leaves in O(log n) keeping only the roots of the
  perfect subtrees of the binary decomposition of ``n`` (at most 64
  hashes): the compact state a collector persists (:meth:`Frontier.to_bytes`)
  to extend the log and compute its head without reading old leaves.
- :class:`MerkleTree` keeps every level of the tree (about ``2n`` hashes) and
  answers heads and proofs for any size up to ``n`` in O(log n).
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Iterable, Sequence

#: Bytes of a SHA-256 hash, the only hash this log uses.
HASH_SIZE = 32
LEAF_PREFIX = b"\x00"
NODE_PREFIX = b"\x01"
#: Tree head of the empty tree (RFC 9162: the hash of the empty string).
EMPTY_ROOT = hashlib.sha256(b"").digest()
#: A tree of at most 2^64 - 1 leaves: its frontier is at most 64 hashes.
MAX_TREE_SIZE = 2**64 - 1

_sha256 = hashlib.sha256
_SIZE = struct.Struct(">Q")


class ProofError(ValueError):
    """Arguments no proof can exist for (an index beyond the tree, sizes out of order)."""


def leaf_hash(data: bytes) -> bytes:
    return _sha256(LEAF_PREFIX + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return _sha256(NODE_PREFIX + left + right).digest()


def _split(n: int) -> int:
    """The largest power of two smaller than ``n`` (``n >= 2``)."""
    return 1 << ((n - 1).bit_length() - 1)


def root_of_hashes(hashes: Sequence[bytes]) -> bytes:
    """MTH over leaves given by their leaf hashes."""
    if not hashes:
        return EMPTY_ROOT
    frontier = Frontier()
    for h in hashes:
        frontier.append_hash(h)
    return frontier.root()


def root(leaves: Iterable[bytes]) -> bytes:
    """MTH(D[n]) of the leaf data ``leaves``."""
    return root_of_hashes([leaf_hash(d) for d in leaves])


# -- the stateful trees ----------------------------------------------------------------


class Frontier:
    """Append-only tree state: the roots of its perfect subtrees, largest first.

    For ``n`` leaves, one hash per set bit of ``n`` (the subtree of size
    ``2^h`` for each bit ``h``, left to right). Appending merges equal
    subtrees like a binary counter carries: O(log n) hashes at worst.
    """

    __slots__ = ("_hashes", "size")

    def __init__(self, size: int = 0, hashes: Sequence[bytes] = ()) -> None:
        if size < 0 or size > MAX_TREE_SIZE:
            raise ValueError(f"tree size {size} out of range")
        if len(hashes) != size.bit_count():
            raise ValueError(f"a frontier of {size} leaves has {size.bit_count()} hashes")
        if any(len(h) != HASH_SIZE for h in hashes):
            raise ValueError("frontier hashes are SHA-256 (32 bytes)")
        self.size = size
        self._hashes = list(hashes)

    @property
    def hashes(self) -> tuple[bytes, ...]:
        return tuple(self._hashes)

    def append(self, data: bytes) -> int:
        """Append a leaf; return its index."""
        return self.append_hash(leaf_hash(data))

    def append_hash(self, h: bytes) -> int:
        """Append a leaf given by its leaf hash; return its index."""
        index = self.size
        if index >= MAX_TREE_SIZE:
            raise ValueError("the tree is full")
        hashes = self._hashes
        # Each trailing 1 bit of the old size is a subtree the new leaf completes.
        n = index
        while n & 1:
            h = node_hash(hashes.pop(), h)
            n >>= 1
        hashes.append(h)
        self.size = index + 1
        return index

    def root(self) -> bytes:
        """The tree head of the ``size`` leaves appended so far."""
        if not self._hashes:
            return EMPTY_ROOT
        acc = self._hashes[-1]
        for h in reversed(self._hashes[:-1]):
            acc = node_hash(h, acc)
        return acc

    def to_bytes(self) -> bytes:
        """``u64 size || hashes``: what to persist (at most 8 + 64 x 32 bytes)."""
        return _SIZE.pack(self.size) + b"".join(self._hashes)

    @classmethod
    def from_bytes(cls, data: bytes) -> Frontier:
        if len(data) < _SIZE.size:
            raise ValueError("a frontier starts with its 8-byte size")
        (size,) = _SIZE.unpack_from(data)
        body = data[_SIZE.size :]
        if len(body) != size.bit_count() * HASH_SIZE:
            raise ValueError(f"a frontier of {size} leaves is {size.bit_count()} hashes long")
        return cls(size, [body[i : i + HASH_SIZE] for i in range(0, len(body), HASH_SIZE)])


class MerkleTree:
    """Every level of the tree in memory: heads and proofs for any earlier size.

    ``levels[0]`` are the leaf hashes, ``levels[h][i]`` the root of the
    perfect subtree of leaves ``i*2^h .. (i+1)*2^h - 1``. Each left child in
    RFC 9162's recursion is such an aligned perfect subtree, so every head
    and proof costs O(log n) lookups and hashes.
    """

    def __init__(self, leaf_hashes: Iterable[bytes] = ()) -> None:
        self.levels: list[list[bytes]] = [[]]
        for h in leaf_hashes:
            self.append_hash(h)

    @classmethod
    def of(cls, leaves: Iterable[bytes]) -> MerkleTree:
        """The tree of leaf data ``leaves``."""
        return cls(leaf_hash(d) for d in leaves)

    @property
    def size(self) -> int:
        return len(self.levels[0])

    def append(self, data: bytes) -> int:
        return self.append_hash(leaf_hash(data))

    def append_hash(self, h: bytes) -> int:
        index = self.size
        self.levels[0].append(h)
        level, i = 0, index
        while i & 1:
            left = self.levels[level][i - 1]
            h = node_hash(left, h)
            level += 1
            i >>= 1
            if len(self.levels) == level:
                self.levels.append([])
            self.levels[level].append(h)
        return index

    def leaf(self, index: int) -> bytes:
        return self.levels[0][index]

    def _range(self, start: int, n: int) -> bytes:
        """MTH of the ``n`` leaves from ``start`` (as the RFC's recursion reaches them)."""
        if n == 0:
            return EMPTY_ROOT
        if n & (n - 1) == 0 and start % n == 0:
            return self.levels[n.bit_length() - 1][start // n]
        k = _split(n)
        return node_hash(self._range(start, k), self._range(start + k, n - k))

    def root(self, size: int | None = None) -> bytes:
        """The tree head of the first ``size`` leaves (all by default)."""
        size = self.size if size is None else size
        if not 0 <= size <= self.size:
            raise ProofError(f"no tree of {size} leaves: the log holds {self.size}")
        return self._range(0, size)

    def inclusion_proof(self, index: int, size: int | None = None) -> list[bytes]:
        """PATH(index, D[size]): the audit path of leaf ``index`` in the tree of ``size``."""
        size = self.size if size is None else size
        if not 0 <= index < size <= self.size:
            raise ProofError(f"no leaf {index} in a tree of {size} (the log holds {self.size})")
        path: list[bytes] = []
        start, n, m = 0, size, index
        while n > 1:
            k = _split(n)
            if m < k:
                path.append(self._range(start + k, n - k))
                n = k
            else:
                path.append(self._range(start, k))
                start, n, m = start + k, n - k, m - k
        path.reverse()
        return path

    def consistency_proof(self, old_size: int, size: int | None = None) -> list[bytes]:
        """PROOF(old_size, D[size]): that the tree of ``old_size`` is a prefix of ``size``."""
        size = self.size if size is None else size
        if not 0 <= old_size <= size <= self.size:
            raise ProofError(f"no consistency from {old_size} to {size} (log of {self.size})")
        if old_size in (0, size):
            return []
        return self._subproof(old_size, 0, size, True)

    def _subproof(self, m: int, start: int, n: int, complete: bool) -> list[bytes]:
        if m == n:
            return [] if complete else [self._range(start, n)]
        k = _split(n)
        if m <= k:
            return [*self._subproof(m, start, k, complete), self._range(start + k, n - k)]
        return [*self._subproof(m - k, start + k, n - k, False), self._range(start, k)]


# -- verification (RFC 9162 2.1.3.2 and 2.1.4.2) -------------------------------------------


def verify_inclusion(
    leaf: bytes, index: int, size: int, proof: Sequence[bytes], root_hash: bytes
) -> bool:
    """Does ``proof`` show the leaf with hash ``leaf`` at ``index`` in the tree ``root_hash``?"""
    if not 0 <= index < size:
        return False
    fn, sn = index, size - 1
    r = leaf
    for p in proof:
        if len(p) != HASH_SIZE or sn == 0:
            return False
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    return sn == 0 and r == root_hash


def verify_consistency(
    old_size: int, size: int, old_root: bytes, new_root: bytes, proof: Sequence[bytes]
) -> bool:
    """Does ``proof`` show the tree ``old_root`` of ``old_size`` is a prefix of ``new_root``?"""
    if not 0 <= old_size <= size:
        return False
    if old_size == size:
        return not proof and old_root == new_root
    if old_size == 0:
        return not proof and old_root == EMPTY_ROOT
    if not proof or any(len(p) != HASH_SIZE for p in proof):
        return False
    path = list(proof)
    if old_size & (old_size - 1) == 0:  # a power of two: the old root is the first node
        path.insert(0, old_root)
    fn, sn = old_size - 1, size - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    return sn == 0 and fr == old_root and sr == new_root


__all__ = [
    "EMPTY_ROOT",
    "HASH_SIZE",
    "Frontier",
    "MerkleTree",
    "ProofError",
    "leaf_hash",
    "node_hash",
    "root",
    "root_of_hashes",
    "verify_consistency",
    "verify_inclusion",
]

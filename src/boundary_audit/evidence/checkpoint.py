"""Signed checkpoints of the store log: tree size, root hash, time and key, signed with Ed25519.

The signed bytes (version 1) are six lines of UTF-8 text, each ending in
``\\n``, nothing else::

    boundary-audit/checkpoint/v1
    <origin>                      one line, no control characters: which log
    <tree size>                   decimal, no sign or leading zeros
    <root hash>                   standard base64 (with padding) of the 32-byte RFC 9162 head
    <time>                        Unix time in nanoseconds, decimal
    <key id>                      16 lowercase hex digits: SHA-256(raw public key)[:8]

A signed checkpoint is those six lines followed by one more,
``signature <base64 of the 64-byte Ed25519 signature of the six lines>\\n``.
Parsing is strict: the text must be exactly what :func:`encode` would
write for the values it holds, so there is one encoding per checkpoint.

Keys are Ed25519 (``cryptography``). The private key is PKCS#8 PEM in a
0600 file inside a 0700 directory (``wire.private``: created whatever the
umask, no symlink followed, refused when another user could read it); the
public key is SubjectPublicKeyInfo PEM.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from ..wire.private import (
    create_private_file,
    open_private_dir,
    open_private_file,
    read_all,
    write_all,
)
from .merkle import HASH_SIZE

CHECKPOINT_HEADER = "boundary-audit/checkpoint/v1"
SIGNATURE_PREFIX = "signature "
#: Bytes of an Ed25519 signature.
SIGNATURE_SIZE = 64
#: Hex digits of a key id (8 bytes of SHA-256: enough to tell keys apart,
#: never relied on for security: the signature is).
KEY_ID_HEX_DIGITS = 16
_DECIMAL = re.compile(r"0|[1-9][0-9]*")
_KEY_ID = re.compile(r"[0-9a-f]{16}")
#: An origin is one printable line (no control characters, so no newline).
_ORIGIN = re.compile(r"[^\x00-\x1f\x7f]+")


class CheckpointError(ValueError):
    """A checkpoint that does not parse, or whose signature does not verify."""


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """What a signature commits to: the log ``origin`` had ``tree_size`` leaves and this head."""

    origin: str
    tree_size: int
    root_hash: bytes
    timestamp_ns: int
    key_id: str

    def __post_init__(self) -> None:
        if not _ORIGIN.fullmatch(self.origin):
            raise CheckpointError(f"origin must be one printable line: {self.origin!r}")
        if self.tree_size < 0 or self.timestamp_ns < 0:
            raise CheckpointError("tree size and time are never negative")
        if len(self.root_hash) != HASH_SIZE:
            raise CheckpointError(f"root hash must be {HASH_SIZE} bytes")
        if not _KEY_ID.fullmatch(self.key_id):
            raise CheckpointError(f"key id must be {KEY_ID_HEX_DIGITS} lowercase hex digits")


@dataclass(frozen=True, slots=True)
class SignedCheckpoint:
    checkpoint: Checkpoint
    signature: bytes

    def to_text(self) -> str:
        sig = base64.b64encode(self.signature).decode()
        return encode(self.checkpoint).decode() + f"{SIGNATURE_PREFIX}{sig}\n"


def encode(checkpoint: Checkpoint) -> bytes:
    """The six lines a signature covers (see the module docstring)."""
    c = checkpoint
    lines = (
        CHECKPOINT_HEADER,
        c.origin,
        str(c.tree_size),
        base64.b64encode(c.root_hash).decode(),
        str(c.timestamp_ns),
        c.key_id,
    )
    return "".join(f"{line}\n" for line in lines).encode("utf-8")


def parse(text: str | bytes) -> SignedCheckpoint:
    """A signed checkpoint from its text; CheckpointError for anything not canonical."""
    try:
        raw = text.decode("utf-8") if isinstance(text, bytes) else text
    except UnicodeDecodeError as exc:
        raise CheckpointError(f"checkpoint is not UTF-8: {exc}") from None
    lines = raw.split("\n")
    if len(lines) != 8 or lines[-1] != "":
        raise CheckpointError("a signed checkpoint is exactly seven lines, each ending in \\n")
    header, origin, size, root_b64, time_ns, key_id, sig_line = lines[:7]
    if header != CHECKPOINT_HEADER:
        raise CheckpointError(f"not a {CHECKPOINT_HEADER} checkpoint: {header!r}")
    if not (_DECIMAL.fullmatch(size) and _DECIMAL.fullmatch(time_ns)):
        raise CheckpointError("tree size and time must be plain decimals")
    if not sig_line.startswith(SIGNATURE_PREFIX):
        raise CheckpointError("the last line must be the signature")
    try:
        root_hash = base64.b64decode(root_b64, validate=True)
        signature = base64.b64decode(sig_line[len(SIGNATURE_PREFIX) :], validate=True)
    except binascii.Error as exc:
        raise CheckpointError(f"bad base64 in checkpoint: {exc}") from None
    if len(signature) != SIGNATURE_SIZE:
        raise CheckpointError(f"an Ed25519 signature is {SIGNATURE_SIZE} bytes")
    checkpoint = Checkpoint(origin, int(size), root_hash, int(time_ns), key_id)
    signed = SignedCheckpoint(checkpoint, signature)
    if signed.to_text() != raw:
        raise CheckpointError("checkpoint text is not in its canonical form")
    return signed


def key_id(public_key: Ed25519PublicKey) -> str:
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:KEY_ID_HEX_DIGITS]


def sign(
    private_key: Ed25519PrivateKey, *, origin: str, tree_size: int, root_hash: bytes, time_ns: int
) -> SignedCheckpoint:
    checkpoint = Checkpoint(origin, tree_size, root_hash, time_ns, key_id(private_key.public_key()))
    return SignedCheckpoint(checkpoint, private_key.sign(encode(checkpoint)))


def verify(signed: SignedCheckpoint, public_key: Ed25519PublicKey) -> None:
    """CheckpointError unless ``signed`` was signed by ``public_key``'s private key."""
    if signed.checkpoint.key_id != key_id(public_key):
        raise CheckpointError(
            f"checkpoint was signed by key {signed.checkpoint.key_id}, not {key_id(public_key)}"
        )
    try:
        public_key.verify(signed.signature, encode(signed.checkpoint))
    except InvalidSignature:
        raise CheckpointError("checkpoint signature does not verify") from None


# -- keys -------------------------------------------------------------------------------------


def generate_key(path: str | os.PathLike[str]) -> Ed25519PrivateKey:
    """A new key at ``path`` (0600, in a 0700 directory created if missing); never overwrites."""
    path = Path(path)
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    dir_fd = open_private_dir(path.parent)
    try:
        fd = create_private_file(dir_fd, path.name)
        try:
            write_all(fd, pem)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    return key


def load_private_key(path: str | os.PathLike[str]) -> Ed25519PrivateKey:
    """The key at ``path``: refused (PrivatePathError) when not ours alone."""
    path = Path(path)
    dir_fd = open_private_dir(path.parent, create=False)
    try:
        fd, _ = open_private_file(dir_fd, path.name)
        try:
            pem = read_all(fd)
        finally:
            os.close(fd)
    finally:
        os.close(dir_fd)
    key = serialization.load_pem_private_key(pem, password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise CheckpointError(f"{path} is not an Ed25519 private key")
    return key


def load_or_generate_key(path: str | os.PathLike[str]) -> Ed25519PrivateKey:
    """The key at ``path``, created at first use."""
    try:
        return load_private_key(path)
    except FileNotFoundError:
        return generate_key(path)


def public_key_pem(key: Ed25519PrivateKey | Ed25519PublicKey) -> bytes:
    public = key.public_key() if isinstance(key, Ed25519PrivateKey) else key
    return public.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def load_public_key(data: bytes | str) -> Ed25519PublicKey:
    """A public key from its PEM (what ``public_key_pem`` writes)."""
    raw = data.encode() if isinstance(data, str) else data
    try:
        key = serialization.load_pem_public_key(raw)
    except ValueError as exc:
        raise CheckpointError(f"not a PEM public key: {exc}") from None
    if not isinstance(key, Ed25519PublicKey):
        raise CheckpointError("not an Ed25519 public key")
    return key


__all__ = [
    "CHECKPOINT_HEADER",
    "Checkpoint",
    "CheckpointError",
    "SignedCheckpoint",
    "encode",
    "generate_key",
    "key_id",
    "load_or_generate_key",
    "load_private_key",
    "load_public_key",
    "parse",
    "public_key_pem",
    "sign",
    "verify",
]

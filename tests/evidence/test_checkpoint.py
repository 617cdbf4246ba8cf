"""Signed checkpoints: the documented encoding, signatures, strict parsing, private keys."""

from __future__ import annotations

import base64
import hashlib
import os
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given
from hypothesis import strategies as st

from boundary_audit.evidence import checkpoint as cp
from boundary_audit.evidence.checkpoint import CheckpointError
from boundary_audit.wire.private import PrivatePathError

ROOT = hashlib.sha256(b"head").digest()


@pytest.fixture(scope="module")
def key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


def test_the_signed_bytes_are_the_six_documented_lines(key: Ed25519PrivateKey) -> None:
    signed = cp.sign(key, origin="collector example", tree_size=42, root_hash=ROOT, time_ns=7)
    raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    kid = hashlib.sha256(raw).hexdigest()[:16]
    body = (
        f"boundary-audit/checkpoint/v1\ncollector example\n42\n"
        f"{base64.b64encode(ROOT).decode()}\n7\n{kid}\n"
    ).encode()
    assert cp.encode(signed.checkpoint) == body
    key.public_key().verify(signed.signature, body)  # raises if not
    text = signed.to_text()
    assert text == body.decode() + f"signature {base64.b64encode(signed.signature).decode()}\n"
    assert cp.parse(text) == signed
    cp.verify(cp.parse(text.encode()), key.public_key())


def test_another_key_or_any_changed_value_fails(key: Ed25519PrivateKey) -> None:
    signed = cp.sign(key, origin="o", tree_size=3, root_hash=ROOT, time_ns=1)
    other = Ed25519PrivateKey.generate()
    with pytest.raises(CheckpointError, match="signed by key"):
        cp.verify(signed, other.public_key())
    text = signed.to_text()
    for old, new in (("\n3\n", "\n4\n"), ("\n1\n", "\n2\n"), ("\no\n", "\np\n")):
        forged = cp.parse(text.replace(old, new, 1))
        with pytest.raises(CheckpointError, match="does not verify"):
            cp.verify(forged, key.public_key())


@given(st.binary(min_size=1, max_size=400))
def test_garbage_never_parses_into_a_checkpoint_that_verifies(data: bytes) -> None:
    key = _KEY
    good = cp.sign(key, origin="o", tree_size=3, root_hash=ROOT, time_ns=1).to_text().encode()
    if data == good:
        return
    try:
        signed = cp.parse(data)
    except CheckpointError:
        return
    with pytest.raises(CheckpointError):
        cp.verify(signed, key.public_key())


_KEY = Ed25519PrivateKey.generate()


@pytest.mark.parametrize(
    "mutate",
    [
        lambda t: t.replace("\n3\n", "\n03\n", 1),  # leading zero
        lambda t: t.replace("\n3\n", "\n+3\n", 1),
        lambda t: t + "\n",  # trailing line
        lambda t: t.rstrip("\n"),
        lambda t: t.replace("boundary-audit/checkpoint/v1", "boundary-audit/checkpoint/v2"),
        lambda t: t.replace("signature ", "sig "),
        lambda t: t.replace("\n", "\r\n"),
    ],
)
def test_non_canonical_text_is_refused(mutate: object) -> None:
    text = cp.sign(_KEY, origin="o", tree_size=3, root_hash=ROOT, time_ns=1).to_text()
    assert callable(mutate)
    with pytest.raises(CheckpointError):
        cp.parse(mutate(text))


def test_values_a_checkpoint_cannot_hold_are_refused() -> None:
    kid = cp.key_id(_KEY.public_key())
    with pytest.raises(CheckpointError, match="one printable line"):
        cp.Checkpoint("two\nlines", 1, ROOT, 1, kid)
    with pytest.raises(CheckpointError, match="32 bytes"):
        cp.Checkpoint("o", 1, b"short", 1, kid)
    with pytest.raises(CheckpointError, match="never negative"):
        cp.Checkpoint("o", -1, ROOT, 1, kid)


def test_a_generated_key_is_private_and_loads_back(tmp_path: Path) -> None:
    path = tmp_path / "keys" / "nested" / "collector.key"
    old = os.umask(0)  # the modes must not depend on the umask
    try:
        key = cp.generate_key(path)
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    loaded = cp.load_private_key(path)
    assert cp.key_id(loaded.public_key()) == cp.key_id(key.public_key())
    assert cp.load_or_generate_key(path).public_key() == key.public_key()
    with pytest.raises(FileExistsError):
        cp.generate_key(path)  # never overwritten
    public = cp.load_public_key(cp.public_key_pem(key))
    assert public == key.public_key()
    assert cp.load_public_key(cp.public_key_pem(key).decode()) == public


def test_a_key_file_others_can_read_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "k" / "collector.key"
    cp.generate_key(path)
    os.chmod(path, 0o644)
    with pytest.raises(PrivatePathError, match="lets others in"):
        cp.load_private_key(path)
    link = tmp_path / "k" / "link.key"
    os.chmod(path, 0o600)
    link.symlink_to(path)
    with pytest.raises(OSError, match=r"symbolic|Too many levels|ELOOP"):
        cp.load_private_key(link)


def test_load_or_generate_creates_at_first_use(tmp_path: Path) -> None:
    path = tmp_path / "fresh" / "collector.key"
    key = cp.load_or_generate_key(path)
    assert cp.load_private_key(path).public_key() == key.public_key()


def test_a_public_key_that_is_not_ed25519_is_refused() -> None:
    with pytest.raises(CheckpointError, match="not a PEM"):
        cp.load_public_key(b"nonsense")

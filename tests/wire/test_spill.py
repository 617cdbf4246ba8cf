"""Spill files on a real filesystem: format, privacy whatever the umask, claims."""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import platformdirs
import pytest

from boundary_audit.wire import BoundaryMessage, Tag, encode_frame, encode_message
from boundary_audit.wire.private import PrivatePathError
from boundary_audit.wire.spill import (
    CORRUPT_SUFFIX,
    SPILL_DIR_ENV,
    STALE_TEMP_SECONDS,
    SpillError,
    claim_spill,
    decode_spill,
    encode_spill,
    list_spills,
    read_spill,
    resolve_spill_dir,
    spill_name,
    spill_usage,
    write_spill,
)

SESSION = "0b8f0f4e-3c4d-4f5e-8a6b-7c8d9e0f1a2b"
#: A uid no account has: what "another user" owns in these tests (chown needs root).
STRANGER_UID = 54_321
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="chown to another uid needs root")


def frames(n: int) -> list[bytes]:
    out = []
    for i in range(n):
        msg = BoundaryMessage()
        msg.logs.session_id = SESSION
        log = msg.logs.logs.add()
        log.sequence_number = i
        out.append(encode_message(msg))
    return out


@contextlib.contextmanager
def umask(mask: int) -> Iterator[None]:
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


def mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def test_a_spill_file_is_the_frames_as_written_on_the_socket(tmp_path: Path) -> None:
    data = frames(3)
    path = write_spill(tmp_path / "spill", spill_name(SESSION, 5), encode_spill(data))
    assert path.name == f"{5:020d}-{SESSION}.spill"
    assert path.read_bytes() == b"".join(data)
    got = list(read_spill(path))
    assert [encode_frame(f.tag, f.payload) for f in got] == data
    assert spill_usage(tmp_path / "spill") == len(b"".join(data))


@pytest.mark.parametrize("mask", [0o000, 0o022, 0o777])
def test_dirs_and_files_are_private_whatever_the_umask(tmp_path: Path, mask: int) -> None:
    target = tmp_path / "state" / "boundary-audit" / "spill"
    with umask(mask):
        path = write_spill(target, spill_name(SESSION, 1), encode_spill(frames(1)))
    assert mode(target) == 0o700
    assert mode(target.parent) == 0o700  # missing parents too
    assert mode(path) == 0o600
    assert len(list(read_spill(path))) == 1


def test_names_sort_oldest_first_and_only_spill_files_are_listed(tmp_path: Path) -> None:
    d = tmp_path / "spill"
    for t in (30, 10, 20):
        write_spill(d, spill_name(SESSION, t), encode_spill(frames(1)))
    (d / f"x.spill{CORRUPT_SUFFIX}").write_bytes(b"kept as evidence")
    fresh_temp, stale_temp = d / ".fresh.tmp", d / ".stale.tmp"
    fresh_temp.write_bytes(b"being written")
    stale_temp.write_bytes(b"left by a sender that died")
    old = os.stat(stale_temp).st_mtime - STALE_TEMP_SECONDS - 1
    os.utime(stale_temp, (old, old))
    assert [p.name[:20] for p in list_spills(d)] == [f"{t:020d}" for t in (10, 20, 30)]
    assert fresh_temp.exists()
    assert not stale_temp.exists()
    assert list_spills(tmp_path / "absent") == []
    assert spill_usage(tmp_path / "absent") == 0
    with pytest.raises(ValueError, match="not a spill file name"):
        write_spill(d, "../escape.spill", b"")


def test_content_that_is_not_whole_tag_2_frames_is_refused() -> None:
    whole = b"".join(frames(2))
    assert len(decode_spill(whole)) == 2
    with pytest.raises(SpillError, match="does not decode"):
        decode_spill(whole[:-1])  # cut inside the last frame
    with pytest.raises(SpillError, match="tag 1"):
        decode_spill(encode_frame(Tag.V1_LOGS, b""))
    with pytest.raises(SpillError):
        decode_spill(whole + b"\xff\xff\xff\xff")  # garbage after whole frames
    assert decode_spill(b"") == []


def test_a_symlink_is_never_followed(tmp_path: Path) -> None:
    real = tmp_path / "real"
    write_spill(real, spill_name(SESSION, 1), encode_spill(frames(1)))
    link_dir = tmp_path / "link"
    link_dir.symlink_to(real)
    with pytest.raises(PrivatePathError, match="symlink"):
        write_spill(link_dir, spill_name(SESSION, 2), b"")
    with pytest.raises(PrivatePathError, match="symlink"):
        list_spills(link_dir)
    [target] = list_spills(real)
    planted = real / spill_name(SESSION, 3)
    planted.symlink_to(target)
    assert planted not in list_spills(real)  # not a regular file
    with pytest.raises(OSError, match="Too many levels of symbolic links"):
        read_spill(planted)


def test_loose_modes_are_refused_on_files_and_tightened_on_our_own_dir(tmp_path: Path) -> None:
    d = tmp_path / "spill"
    path = write_spill(d, spill_name(SESSION, 1), encode_spill(frames(1)))
    os.chmod(d, 0o755)  # noqa: S103 - a dir of ours made too loose, to be tightened
    list_spills(d)
    assert mode(d) == 0o700  # ours: fixed, not refused
    os.chmod(path, 0o644)
    with pytest.raises(PrivatePathError, match="lets others in"):
        read_spill(path)
    with pytest.raises(PrivatePathError, match="lets others in"):
        claim_spill(path)


@needs_root
def test_another_users_dir_or_file_is_refused(tmp_path: Path) -> None:
    theirs = tmp_path / "theirs"
    theirs.mkdir(mode=0o700)
    os.chown(theirs, STRANGER_UID, -1)
    with pytest.raises(PrivatePathError, match=f"owned by uid {STRANGER_UID}"):
        write_spill(theirs, spill_name(SESSION, 1), b"")
    ours = tmp_path / "ours"
    path = write_spill(ours, spill_name(SESSION, 1), encode_spill(frames(1)))
    os.chown(path, STRANGER_UID, -1)
    with pytest.raises(PrivatePathError, match=f"owned by uid {STRANGER_UID}"):
        read_spill(path)
    assert len(list(read_spill(path, owners=frozenset({STRANGER_UID})))) == 1


def test_a_claim_is_exclusive_and_removes_only_the_file_it_holds(tmp_path: Path) -> None:
    d = tmp_path / "spill"
    path = write_spill(d, spill_name(SESSION, 1), encode_spill(frames(2)))
    claim = claim_spill(path)
    assert claim is not None
    assert claim_spill(path) is None  # another deliverer has it
    assert len(claim.frames()) == 2
    claim.release()
    second = claim_spill(path)
    assert second is not None
    second.remove()
    assert not path.exists()
    assert claim_spill(path) is None  # gone
    # A claimant whose file was replaced under the same name removes nothing new.
    write_spill(d, path.name, encode_spill(frames(1)))
    stale = claim_spill(path)
    assert stale is not None
    os.unlink(path)
    write_spill(d, path.name, encode_spill(frames(3)))
    stale.remove()
    assert len(list(read_spill(path))) == 3


def test_a_file_removed_while_waiting_for_its_claim_is_reported_gone(tmp_path: Path) -> None:
    d = tmp_path / "spill"
    path = write_spill(d, spill_name(SESSION, 1), encode_spill(frames(1)))
    first = claim_spill(path)
    assert first is not None
    fd = os.open(path, os.O_RDONLY)  # a second deliverer opened it before the removal
    first.remove()
    assert os.fstat(fd).st_nlink == 0  # what claim_spill checks after its lock
    os.close(fd)


def test_a_corrupt_file_is_moved_aside_as_evidence(tmp_path: Path) -> None:
    d = tmp_path / "spill"
    path = write_spill(d, spill_name(SESSION, 1), b"\x02\x00\x00\x10short")
    claim = claim_spill(path)
    assert claim is not None
    with pytest.raises(SpillError):
        claim.frames()
    kept = claim.quarantine()
    assert kept.name.endswith(CORRUPT_SUFFIX)
    assert list_spills(d) == []
    assert spill_usage(d) == kept.stat().st_size  # still counted against the bound


def test_the_spill_dir_is_explicit_else_the_env_else_the_users_state_dir() -> None:
    assert resolve_spill_dir("/x/y", {SPILL_DIR_ENV: "/z"}) == Path("/x/y")
    assert resolve_spill_dir(None, {SPILL_DIR_ENV: "/z"}) == Path("/z")
    default = platformdirs.user_state_path("boundary-audit") / "spill"
    assert resolve_spill_dir(None, {}) == default

"""Spill files: frames a sender could not deliver, kept on disk until an agent takes them.

**Format.** A spill file holds exactly the bytes the sender would have
written on the socket: whole tag-2 frames (4-byte header, protobuf
``BoundaryMessage`` payload) one after another, the session's seal
(``status{session_id, seal}``) last. No header of its own, so delivering a
file is writing it to an agent frame by frame, and reading one needs only
:class:`~boundary_audit.wire.FrameDecoder`. Never a connection's ``open``
frame: whoever delivers a file opens its own connection.

**Files.** ``<spill dir>/<time_ns:020d>-<session_id>.spill``: names sort
oldest first. Written to a temp name (``O_EXCL | O_NOFOLLOW``, 0600),
fsynced, renamed, and the directory fsynced, so a file is either absent or
whole. The directory is private (0700, ours, never through a symlink; see
:mod:`.private`). Delivery takes an exclusive ``flock`` on the file
(:func:`claim_spill`), so two deliverers (a sender and the agent's scanner)
never deliver one file at once; a file is removed only by the holder of its
claim, once the agent has it.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import secrets
import time
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path

import platformdirs

from .errors import WireError
from .framing import Frame, FrameDecoder, Tag
from .private import (
    PrivatePathError,
    create_private_file,
    open_private_dir,
    open_private_file,
    read_all,
    write_all,
)

#: Env variable naming the spill directory (sender and agent alike).
SPILL_DIR_ENV = "BOUNDARY_AUDIT_SPILL_DIR"
#: platformdirs application name: the spill dir is <user state dir>/spill.
APP_NAME = "boundary-audit"
SPILL_SUFFIX = ".spill"
#: A spill file being written; never read, removed when stale.
TEMP_SUFFIX = ".tmp"
#: A spill file that did not decode, kept aside as evidence (never delivered).
CORRUPT_SUFFIX = ".corrupt"
#: Bytes of event frames all spill files of a directory may hold together.
#: One session's undelivered tail is at most its queue, one batch and its
#: unacknowledged window (about 3 MiB with the defaults), so 32 MiB keeps
#: the tails of several sessions that ended while the agent was down, while
#: a sender that keeps failing cannot fill the disk. Seals are exempt (see
#: the auditor): the loss is always accounted.
DEFAULT_SPILL_MAX_BYTES = 32 * 1024 * 1024
#: A temp file older than this was left by a sender that died mid-write.
STALE_TEMP_SECONDS = 3600.0


class SpillError(WireError):
    """A spill file that cannot be used: it does not decode, or is not ours."""


def default_spill_dir() -> Path:
    """The per-user state dir's ``spill`` folder (``~/.local/state/boundary-audit/spill``)."""
    return platformdirs.user_state_path(APP_NAME) / "spill"


def resolve_spill_dir(
    explicit: str | os.PathLike[str] | None = None, env: Mapping[str, str] | None = None
) -> Path:
    """The explicit argument, else ``$BOUNDARY_AUDIT_SPILL_DIR``, else :func:`default_spill_dir`."""
    if explicit:
        return Path(explicit)
    env = os.environ if env is None else env
    configured = env.get(SPILL_DIR_ENV)
    return Path(configured) if configured else default_spill_dir()


def spill_name(session_id: str, time_ns: int) -> str:
    """File name of a spill: sorts by time, unique per session and time."""
    return f"{time_ns:020d}-{session_id}{SPILL_SUFFIX}"


def encode_spill(frames: Iterable[bytes]) -> bytes:
    """A spill file's content: the frames as written on the socket."""
    return b"".join(frames)


def decode_spill(data: bytes) -> list[Frame]:
    """Every frame of a spill file's content; SpillError unless it is whole tag-2 frames."""
    decoder = FrameDecoder()
    try:
        frames = decoder.feed(data)
        if decoder.failed:
            raise decoder.error or SpillError("spill file is not a frame stream")
        decoder.eof()
    except WireError as exc:
        raise SpillError(f"spill file does not decode: {exc}") from exc
    for frame in frames:
        if frame.tag != Tag.V2_ENVELOPE:
            raise SpillError(f"spill file holds a frame with tag {frame.tag}, not 2")
    return frames


def _is_spill(name: str) -> bool:
    return name.endswith(SPILL_SUFFIX) and not name.startswith(".")


def list_spills(directory: str | os.PathLike[str]) -> list[Path]:
    """Spill files in ``directory``, oldest first; none when it does not exist.

    Raises :class:`~.private.PrivatePathError` when the directory is not
    ours alone. Temp files left by a sender that died mid-write are removed
    once stale.
    """
    try:
        dir_fd = open_private_dir(directory, create=False)
    except FileNotFoundError:
        return []
    try:
        names = []
        now = time.time()
        with os.scandir(dir_fd) as entries:
            for entry in entries:
                if _is_spill(entry.name) and entry.is_file(follow_symlinks=False):
                    names.append(entry.name)
                elif entry.name.endswith(TEMP_SUFFIX):
                    with contextlib.suppress(OSError):
                        if now - entry.stat(follow_symlinks=False).st_mtime > STALE_TEMP_SECONDS:
                            os.unlink(entry.name, dir_fd=dir_fd)
    finally:
        os.close(dir_fd)
    return [Path(directory) / name for name in sorted(names)]


def spill_usage(directory: str | os.PathLike[str]) -> int:
    """Bytes of every file in ``directory`` (spills, temps, corrupt ones): the bound's measure."""
    try:
        dir_fd = open_private_dir(directory, create=False)
    except FileNotFoundError:
        return 0
    try:
        total = 0
        with os.scandir(dir_fd) as entries:
            for entry in entries:
                with contextlib.suppress(OSError):
                    if entry.is_file(follow_symlinks=False):
                        total += entry.stat(follow_symlinks=False).st_size
        return total
    finally:
        os.close(dir_fd)


def write_spill(directory: str | os.PathLike[str], name: str, data: bytes) -> Path:
    """Write ``data`` durably as ``directory/name``; the directory is created private.

    Temp name, fsync, rename, fsync of the directory: after a crash the file
    is either absent or whole. Raises ``OSError`` (``PrivatePathError`` for a
    directory that is not ours alone).
    """
    if not _is_spill(name) or "/" in name:
        raise ValueError(f"not a spill file name: {name!r}")
    dir_fd = open_private_dir(directory, create=True)
    try:
        temp = f".{name}.{os.getpid()}.{secrets.token_hex(4)}{TEMP_SUFFIX}"
        fd = create_private_file(dir_fd, temp)
        try:
            try:
                write_all(fd, data)
                os.fsync(fd)
            finally:
                os.close(fd)
            os.rename(temp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temp, dir_fd=dir_fd)
            raise
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    return Path(directory) / name


def read_spill(
    path: str | os.PathLike[str], *, owners: frozenset[int] | None = None
) -> Iterator[Frame]:
    """The frames of the spill file at ``path``, checked whole before any is returned.

    The file must be a regular file in a private directory, owned by one of
    ``owners`` (default: us), mode 0600 or stricter; :class:`SpillError`
    when it does not decode, ``OSError`` when it cannot be read or is not
    private. Takes no claim: use :func:`claim_spill` to deliver.
    """
    path = Path(path)
    dir_fd = open_private_dir(path.parent, create=False)
    try:
        fd, st = open_private_file(dir_fd, path.name, owners=owners)
    finally:
        os.close(dir_fd)
    try:
        data = read_all(fd, st.st_size)
    finally:
        os.close(fd)
    return iter(decode_spill(data))


class SpillClaim:
    """An exclusive claim on one spill file, for delivering it.

    Held from :func:`claim_spill` until :meth:`remove` (delivered) or
    :meth:`release` (not this time: the file stays for the next deliverer).
    """

    def __init__(self, path: Path, fd: int, size: int) -> None:
        self.path = path
        self._fd: int | None = fd
        self.size = size

    def frames(self) -> list[Frame]:
        """The file's frames (:class:`SpillError` when it does not decode)."""
        assert self._fd is not None, "claim released"
        os.lseek(self._fd, 0, os.SEEK_SET)
        return decode_spill(read_all(self._fd, self.size))

    def remove(self) -> None:
        """Delete the file (delivered), then release the claim."""
        try:
            dir_fd = open_private_dir(self.path.parent, create=False)
            try:
                # Only the file we hold: never a newer one put under the same name.
                st = os.stat(self.path.name, dir_fd=dir_fd, follow_symlinks=False)
                assert self._fd is not None
                mine = os.fstat(self._fd)
                if (st.st_dev, st.st_ino) == (mine.st_dev, mine.st_ino):
                    os.unlink(self.path.name, dir_fd=dir_fd)
                    os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
        except FileNotFoundError:
            pass
        finally:
            self.release()

    def quarantine(self) -> Path:
        """Rename the file aside (``.corrupt``), kept as evidence and never delivered again."""
        target = self.path.with_name(self.path.name + CORRUPT_SUFFIX)
        try:
            os.rename(self.path, target)
        finally:
            self.release()
        return target

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)  # drops the flock

    def __enter__(self) -> SpillClaim:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.release()


def claim_spill(
    path: str | os.PathLike[str], *, owners: frozenset[int] | None = None
) -> SpillClaim | None:
    """Claim the spill file at ``path`` for delivery; None when someone else has it or it is gone.

    The same checks as :func:`read_spill` (``OSError`` when the file or its
    directory is not private). A file removed by its previous claimant
    between our open and our lock is reported as gone, never delivered twice.
    """
    path = Path(path)
    try:
        dir_fd = open_private_dir(path.parent, create=False)
    except FileNotFoundError:
        return None
    try:
        fd, st = open_private_file(dir_fd, path.name, owners=owners)
    except FileNotFoundError:
        return None
    finally:
        os.close(dir_fd)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    except BaseException:
        os.close(fd)
        raise
    if os.fstat(fd).st_nlink == 0:  # removed by the claimant we waited behind
        os.close(fd)
        return None
    return SpillClaim(path, fd, st.st_size)


__all__ = [
    "APP_NAME",
    "CORRUPT_SUFFIX",
    "DEFAULT_SPILL_MAX_BYTES",
    "SPILL_DIR_ENV",
    "SPILL_SUFFIX",
    "PrivatePathError",
    "SpillClaim",
    "SpillError",
    "claim_spill",
    "decode_spill",
    "default_spill_dir",
    "encode_spill",
    "list_spills",
    "read_spill",
    "resolve_spill_dir",
    "spill_name",
    "spill_usage",
    "write_spill",
]

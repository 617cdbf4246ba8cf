"""Private directories and files: ours alone, whatever the umask, no symlink followed.

For state another local user must neither read nor plant (spill files of
audit events). A directory is opened once with ``O_NOFOLLOW`` and checked
on its descriptor (a directory, owned by us, mode 0700); everything inside
is then reached relative to that descriptor, so swapping a parent directory
or planting a symlink after the check changes nothing. Modes are set with
``fchmod`` after creation, because ``mkdir``/``open`` modes are cut by the
umask (a umask of 0777 would otherwise leave a directory we cannot enter).
"""

from __future__ import annotations

import contextlib
import os
import stat
from pathlib import Path

#: Modes of what this module creates: owner-only.
PRIVATE_DIR_MODE = 0o700
PRIVATE_FILE_MODE = 0o600
#: Bits that would let anyone but the owner in (group and other).
NOT_PRIVATE_BITS = 0o077
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


class PrivatePathError(OSError):
    """A path that should be ours alone is not (a symlink, another owner, not a directory)."""


def _make_parents(path: Path) -> None:
    """Create the missing parents of ``path``, each 0700 whatever the umask."""
    missing: list[Path] = []
    parent = path.parent
    while not parent.exists() and parent != parent.parent:
        missing.append(parent)
        parent = parent.parent
    for directory in reversed(missing):
        with contextlib.suppress(FileExistsError):
            os.mkdir(directory, PRIVATE_DIR_MODE)
            os.chmod(directory, PRIVATE_DIR_MODE)


def open_private_dir(path: str | os.PathLike[str], *, create: bool = True) -> int:
    """A descriptor of directory ``path``, checked to be ours alone.

    Creates it (and missing parents) 0700 when ``create``. A directory we own
    with group or other bits set is tightened to 0700 (it is ours to fix);
    a symlink, a non-directory, or a directory owned by anyone else raises
    :class:`PrivatePathError` and is never used. The caller closes the
    descriptor.
    """
    path = Path(path)
    if create:
        _make_parents(path)
        with contextlib.suppress(FileExistsError):
            os.mkdir(path, PRIVATE_DIR_MODE)
    try:
        fd = os.open(path, _DIR_FLAGS)
    except OSError as exc:
        if os.path.islink(path):
            raise PrivatePathError(
                exc.errno, "is a symlink, not a private directory", str(path)
            ) from exc
        raise
    try:
        st = os.fstat(fd)
        if not stat.S_ISDIR(st.st_mode):  # pragma: no cover - O_DIRECTORY refuses first
            raise PrivatePathError(0, "not a directory", str(path))
        if st.st_uid != os.geteuid():
            raise PrivatePathError(
                0, f"owned by uid {st.st_uid}, not by us (uid {os.geteuid()})", str(path)
            )
        if stat.S_IMODE(st.st_mode) != PRIVATE_DIR_MODE:
            os.fchmod(fd, PRIVATE_DIR_MODE)
    except BaseException:
        os.close(fd)
        raise
    return fd


def create_private_file(dir_fd: int, name: str) -> int:
    """A new file ``name`` in the directory ``dir_fd``, 0600, opened for writing.

    ``O_EXCL | O_NOFOLLOW``: fails on anything already there, a symlink
    included, rather than write through it.
    """
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = os.open(name, flags, PRIVATE_FILE_MODE, dir_fd=dir_fd)
    try:
        os.fchmod(fd, PRIVATE_FILE_MODE)
    except BaseException:
        os.close(fd)
        raise
    return fd


def open_private_file(
    dir_fd: int, name: str, *, owners: frozenset[int] | None = None
) -> tuple[int, os.stat_result]:
    """Open ``name`` in ``dir_fd`` for reading, checked on its descriptor.

    A regular file (never through a symlink) owned by one of ``owners``
    (default: us) and not readable or writable by anyone else; otherwise
    :class:`PrivatePathError`. Returns the descriptor and its stat.
    """
    fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK, dir_fd=dir_fd)
    try:
        st = os.fstat(fd)
        allowed = frozenset({os.geteuid()}) if owners is None else owners
        problem = None
        if not stat.S_ISREG(st.st_mode):
            problem = "not a regular file"
        elif st.st_uid not in allowed:
            problem = f"owned by uid {st.st_uid}, not by {sorted(allowed)}"
        elif st.st_mode & NOT_PRIVATE_BITS:
            problem = f"mode {stat.S_IMODE(st.st_mode):o} lets others in"
        if problem is not None:
            raise PrivatePathError(0, problem, name)
    except BaseException:
        os.close(fd)
        raise
    return fd, st


def write_all(fd: int, data: bytes) -> None:
    """``os.write`` until every byte is written."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def read_all(fd: int, size_hint: int = 0) -> bytes:
    """Read ``fd`` to its end."""
    chunks = []
    while chunk := os.read(fd, max(size_hint, 1 << 16)):
        chunks.append(chunk)
    return b"".join(chunks)


__all__ = [
    "NOT_PRIVATE_BITS",
    "PRIVATE_DIR_MODE",
    "PRIVATE_FILE_MODE",
    "PrivatePathError",
    "create_private_file",
    "open_private_dir",
    "open_private_file",
    "read_all",
    "write_all",
]

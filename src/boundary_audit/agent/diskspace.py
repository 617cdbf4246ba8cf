"""A full spool disk: a reserve that lets acknowledged rows be deleted, and the way back.

Deleting rows from the spool needs disk space too (SQLite writes the change
to its WAL first), so on a full disk an agent could neither take new
batches nor forget those the collector already has, and would re-send them
forever. The agent keeps :data:`RESERVE_BYTES` in a file of its own next to
the spool. When a spool write fails for want of space, the reserve is given
up (the forwarder's deletes and checkpoints can then run), new batches wait
in memory (readers pause, so the senders keep theirs) until the reserve
can be put back, and ``/healthz`` says ``degraded`` with the reason. Once writes
succeed again the reserve is put back when the free space allows, and the
agent is healthy again: no operator needed.
"""

from __future__ import annotations

import contextlib
import errno
import os
import sqlite3
from pathlib import Path

from ..logs import get_logger

#: Size of the reserve. A checkpoint copies what the WAL holds into the
#: spool file, which may need as much space again as the WAL: up to SQLite's
#: autocheckpoint of 1000 pages (4 MiB). Twice that leaves room for the
#: deletes of forwarded requests (1 MiB each) and the reclaiming on top.
RESERVE_BYTES = 8 * 1024 * 1024
#: Free space the disk must have beyond the reserve before it is put back
#: and new batches are taken again: as much again as the reserve, so that
#: giving the reserve up (which frees exactly its size) is never by itself
#: enough to end the disk-full state; only deletes that made room are.
RESTORE_MARGIN_BYTES = RESERVE_BYTES
#: SQLite's primary result code for "database or disk is full".
SQLITE_FULL = 13
#: Bytes written per call while filling the reserve.
_CHUNK = 64 * 1024


def is_disk_full(exc: BaseException) -> bool:
    """True for the errors a full disk (or quota) causes in SQLite or a write."""
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    if isinstance(exc, sqlite3.Error):
        code = getattr(exc, "sqlite_errorcode", None)
        if code is not None and code & 0xFF == SQLITE_FULL:
            return True
        return "disk is full" in str(exc) or "database or disk is full" in str(exc)
    return False


class DiskReserve:
    """The reserve file, and whether the spool is in its disk-full state."""

    def __init__(self, path: Path, size: int = RESERVE_BYTES) -> None:
        self.path = path
        self.size = size
        #: Why the spool is degraded (None while healthy).
        self.reason: str | None = None
        self._log = get_logger("agent", reserve=str(path))

    @property
    def present(self) -> bool:
        try:
            return self.path.stat().st_size >= self.size
        except FileNotFoundError:
            return False

    def ensure(self) -> bool:
        """Create the reserve when missing and the disk has room for it; True if in place."""
        if self.present:
            return True
        st = os.statvfs(self.path.parent)
        if st.f_bavail * st.f_frsize < self.size + RESTORE_MARGIN_BYTES:
            return False
        tmp = self.path.with_name(self.path.name + ".tmp")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
            try:
                zeros = bytes(_CHUNK)
                for _ in range(0, self.size, _CHUNK):
                    os.write(fd, zeros)
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, self.path)
        except OSError as exc:
            with contextlib.suppress(OSError):
                tmp.unlink()
            if is_disk_full(exc):
                return False
            raise
        return True

    def nearly_full(self) -> bool:
        """True when the spool's file system has less room than one reserve.

        SQLite does not always say "disk is full" when it is: growing the WAL
        index (``-shm``) or some writes fail as a plain I/O error
        (``SQLITE_IOERR_SHMSIZE``, ``SQLITE_IOERR_WRITE``). An error on a disk
        this full is treated as a full disk whatever its message.
        """
        try:
            st = os.statvfs(self.path.parent)
        except OSError:
            return False
        return st.f_bavail * st.f_frsize < self.size

    def failed(self, exc: BaseException) -> bool:
        """A spool access failed: enter the disk-full state if space was the cause."""
        if is_disk_full(exc) or (isinstance(exc, OSError | sqlite3.Error) and self.nearly_full()):
            self.disk_full(exc)
            return True
        return False

    def disk_full(self, exc: BaseException) -> None:
        """A spool write failed for want of space: give up the reserve, say so."""
        freed = self.present
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        if self.reason is None:
            self._log.error(
                "spool disk is full; released the reserve so acknowledged rows can be "
                "deleted, new batches wait in memory",
                error=repr(exc),
                reserve_freed_bytes=self.size if freed else 0,
            )
        self.reason = f"spool disk full: {exc}"

    def may_write(self) -> bool:
        """New batches only with the reserve in place: the room left is for deletes."""
        return self.reason is None or self.try_restore()

    def wrote(self) -> None:
        """Rows were deleted (room was made): put the reserve back if there is room now."""
        if self.reason is not None:
            self.try_restore()

    def try_restore(self) -> bool:
        """Put the reserve back if the disk has room for it; healthy (True) once it is."""
        try:
            restored = self.ensure()
        except OSError as exc:
            self._log.error("cannot restore the spool disk reserve", error=repr(exc))
            return False
        if restored:
            self._log.info("spool disk has room again; reserve restored", previous=self.reason)
            self.reason = None
        return restored


__all__ = ["RESERVE_BYTES", "DiskReserve", "is_disk_full"]

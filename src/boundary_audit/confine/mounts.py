"""A private mount namespace whose covers hide the audit trail's files from the command.

Landlock's filesystem rules are an allow-list: they cannot say "everything
but these paths". So the exec helper gives the command a mount namespace of
its own (in a new user namespace, which needs no root) in which each
protected directory is covered by an empty read-only tmpfs and each
protected file (an agent socket in a shared directory such as the temp dir)
by a read-only bind of ``/dev/null``: the CA key, the collector database,
the agent's spool and dead-letter file, the spill dir and the agent's socket
are not there to read, write or connect to.

The covers are made in a first user namespace and then *locked*: the helper
enters a second, nested user + mount namespace before it execs, and mounts
inherited into a namespace owned by a less privileged user namespace cannot
be unmounted, moved or bound without their covers (the kernel's MNT_LOCKED),
even by a command that is root there. The launcher's own view is unchanged,
and ``/proc/PID/root`` of processes outside the sandbox (the way around a
mount namespace) is refused by Landlock's ptrace rules.

Standard library only, like every module the exec helper loads.
"""

from __future__ import annotations

import ctypes
import os
from typing import NoReturn

from .errors import ConfinementError, ConfinementUnavailable
from .syscall import libc

#: unshare(2) flags (linux/sched.h).
CLONE_NEWNS = 0x00020000
CLONE_NEWUSER = 0x10000000
CLONE_NEWNET = 0x40000000
#: mount(2) flags (linux/mount.h).
MS_RDONLY = 0x1
MS_NOSUID = 0x2
MS_NODEV = 0x4
MS_NOEXEC = 0x8
MS_REMOUNT = 0x20
MS_BIND = 0x1000
MS_REC = 0x4000
MS_PRIVATE = 1 << 18
#: Flags of every cover: nothing to execute, no devices, no set-uid.
COVER_FLAGS = MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC
#: tmpfs options of a directory cover: owner-only and as small as tmpfs
#: allows (it is read-only, nothing can be written to it anyway).
COVER_TMPFS_OPTIONS = b"mode=0700,size=4k,nr_inodes=1"
#: What a file cover binds over the protected file: reads give nothing,
#: connect() gives ECONNREFUSED.
FILE_COVER_SOURCE = "/dev/null"
#: Identity map of every uid/gid (start, start, count): root may map them
#: all, so files of other users keep their owners and root keeps its access.
FULL_ID_MAP = "0 0 4294967295"


def _write_proc(path: str, text: str) -> None:
    with open(path, "w", encoding="ascii") as fh:
        fh.write(text)


def _fail(what: str) -> ConfinementUnavailable:
    err = ctypes.get_errno()
    return ConfinementUnavailable(f"{what}: {os.strerror(err)} (errno {err})")


def _write_full_map_from_outside(pid: int, ready: int) -> NoReturn:
    """In a forked child still outside the new namespace (where root has
    CAP_SETUID): wait until ``pid`` has unshared, then map every id for it.
    A process cannot map ids other than its own from inside."""
    code = 1
    try:
        if os.read(ready, 1) == b"u":
            _write_proc(f"/proc/{pid}/uid_map", FULL_ID_MAP)
            _write_proc(f"/proc/{pid}/gid_map", FULL_ID_MAP)
            code = 0
    except OSError:
        pass  # the exit code says it; the namespace's owner reports it
    os._exit(code)


def enter_user_namespace(flags: int) -> None:
    """unshare a new user namespace plus ``flags`` (other CLONE_NEW*), keeping
    our uid and gid (every id, for root).

    Raises :class:`ConfinementUnavailable` when the kernel refuses the
    namespace (nothing changed), :class:`ConfinementError` when it was made
    but its ids could not be mapped (the caller must not go on in it).
    """
    uid, gid = os.getuid(), os.getgid()
    lib = libc()
    writer = None
    if uid == 0:
        read_end, write_end = os.pipe()
        me = os.getpid()
        writer = os.fork()
        if writer == 0:
            os.close(write_end)
            _write_full_map_from_outside(me, read_end)
        os.close(read_end)
    ctypes.set_errno(0)
    failed = lib.unshare(CLONE_NEWUSER | flags) != 0
    err = ctypes.get_errno()
    if writer is not None:
        os.write(write_end, b"x" if failed else b"u")
        os.close(write_end)
        _, status = os.waitpid(writer, 0)
        mapped = os.waitstatus_to_exitcode(status) == 0
    if failed:
        raise ConfinementUnavailable(
            f"cannot create a user namespace: {os.strerror(err)} (errno {err}); "
            "unprivileged user namespaces may be disabled on this system"
        )
    try:
        if writer is None:
            _write_proc("/proc/self/setgroups", "deny")
            _write_proc("/proc/self/uid_map", f"{uid} {uid} 1")
            _write_proc("/proc/self/gid_map", f"{gid} {gid} 1")
        elif not mapped:
            raise OSError("the id-mapping process failed")
    except OSError as exc:
        raise ConfinementError(f"cannot map ids in the new user namespace: {exc}") from exc


def _mount(
    source: str | None, target: str, fstype: str | None, flags: int, data: bytes | None
) -> int:
    lib = libc()
    ctypes.set_errno(0)
    result: int = lib.mount(
        None if source is None else os.fsencode(source),
        os.fsencode(target),
        None if fstype is None else fstype.encode(),
        ctypes.c_ulong(flags),
        data,
    )
    return result


def make_mounts_private() -> None:
    """Stop mount events from propagating between our namespace and the host's."""
    if _mount(None, "/", None, MS_REC | MS_PRIVATE, None) != 0:
        raise _fail("cannot make the mount namespace private")


def cover_directory(path: str) -> None:
    """Hide ``path``'s contents under an empty read-only tmpfs."""
    if _mount("tmpfs", path, "tmpfs", COVER_FLAGS, COVER_TMPFS_OPTIONS) != 0:
        raise _fail(f"cannot cover {path}")


def cover_file(path: str, source: str = FILE_COVER_SOURCE) -> None:
    """Hide the file (or socket) ``path`` under a read-only bind of ``source``
    (/dev/null; another file to replace it, e.g. ``/etc/resolv.conf``)."""
    if _mount(source, path, None, MS_BIND, None) != 0:
        raise _fail(f"cannot cover {path}")
    if _mount(None, path, None, MS_BIND | MS_REMOUNT | COVER_FLAGS, None) != 0:
        raise _fail(f"cannot make the cover of {path} read-only")


def lock_mounts() -> None:
    """Enter a nested user + mount namespace: every mount made so far is
    locked to its cover there (see the module docstring)."""
    enter_user_namespace(CLONE_NEWNS)


__all__ = [
    "CLONE_NEWNET",
    "CLONE_NEWNS",
    "cover_directory",
    "cover_file",
    "enter_user_namespace",
    "lock_mounts",
    "make_mounts_private",
]

"""The little of libc the confinement needs: raw syscalls, prctl, errno.

Standard library only (ctypes), like every module the exec helper loads.
"""

from __future__ import annotations

import ctypes
import os

from .errors import ConfinementError

#: prctl option that makes privileges impossible to gain on exec; Landlock
#: and seccomp require it for unprivileged callers (include/uapi/linux/prctl.h).
PR_SET_NO_NEW_PRIVS = 38


def libc() -> ctypes.CDLL:
    """The C library of this process, with errno kept for :func:`os_failure`."""
    return ctypes.CDLL(None, use_errno=True)


def syscall(lib: ctypes.CDLL, number: int, *args: object) -> int:
    """``syscall(number, *args)`` with errno cleared first."""
    ctypes.set_errno(0)
    result: int = lib.syscall(ctypes.c_long(number), *args)
    return result


def os_failure(what: str) -> ConfinementError:
    """A :class:`ConfinementError` naming ``what`` failed and the errno it left."""
    err = ctypes.get_errno()
    return ConfinementError(f"{what} failed: {os.strerror(err)} (errno {err})")


def set_no_new_privs(lib: ctypes.CDLL) -> None:
    """Give up gaining privileges on exec (irreversible); Landlock and seccomp need it."""
    ctypes.set_errno(0)
    if lib.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        raise os_failure("prctl(PR_SET_NO_NEW_PRIVS)")


__all__ = ["PR_SET_NO_NEW_PRIVS", "libc", "os_failure", "set_no_new_privs", "syscall"]

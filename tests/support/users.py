"""A throwaway second user, for the attacks that need one (tests run as root).

One helper for every suite: make a system user without home or login shell
(``useradd``), run a command as it (``setpriv`` argv, or ``runuser``), and
remove it afterwards (``userdel``).
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import subprocess
import sys
from collections.abc import Iterator

USERADD = shutil.which("useradd")
USERDEL = shutil.which("userdel")
SETPRIV = shutil.which("setpriv")
RUNUSER = shutil.which("runuser")
#: Seconds useradd/userdel/runuser may take (they lock /etc/passwd).
USER_TOOL_TIMEOUT_S = 60
#: An interpreter another user may execute: the venv's lives under /root, a
#: directory they cannot enter. The system one has the same minor version.
SYSTEM_PYTHON = f"/usr/bin/python{sys.version_info.major}.{sys.version_info.minor}"


def cannot_make_users(*, python: bool = False) -> str | None:
    """Why throwaway users cannot be made (and, with ``python``, run the
    system interpreter) here, or None when they can."""
    if os.geteuid() != 0:
        return "needs root to create users"
    if not (USERADD and USERDEL and SETPRIV and RUNUSER):
        return "useradd, userdel, setpriv or runuser is missing"
    if python and not os.access(SYSTEM_PYTHON, os.X_OK):
        return f"{SYSTEM_PYTHON} is missing"
    return None


def _userdel(name: str, *, check: bool) -> None:
    assert USERDEL
    subprocess.run([USERDEL, name], check=check, timeout=USER_TOOL_TIMEOUT_S)


@contextlib.contextmanager
def throwaway_user(name: str, *, keep: bool = False) -> Iterator[pwd.struct_passwd]:
    """A system user without home or login shell; removed afterwards unless
    ``keep`` (then an existing one of that name is reused)."""
    assert USERADD
    try:
        existing: pwd.struct_passwd | None = pwd.getpwnam(name)
    except KeyError:
        existing = None
    if existing is not None and keep:
        yield existing
        return
    if existing is not None:
        _userdel(name, check=True)  # left by a crashed run
    subprocess.run(
        [USERADD, "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", "-U", name],
        check=True,
        timeout=USER_TOOL_TIMEOUT_S,
    )
    try:
        yield pwd.getpwnam(name)
    finally:
        if not keep:
            _userdel(name, check=False)


def as_user(user: pwd.struct_passwd, argv: list[str]) -> list[str]:
    """``argv`` run as ``user`` (its uid, its group, no others), via setpriv."""
    assert SETPRIV
    return [
        SETPRIV,
        f"--reuid={user.pw_uid}",
        f"--regid={user.pw_gid}",
        "--clear-groups",
        *argv,
    ]


def run_as(user: pwd.struct_passwd, *argv: str) -> None:
    """Run ``argv`` as ``user`` (runuser), failing the test if it fails."""
    assert RUNUSER
    subprocess.run(
        [RUNUSER, "-u", user.pw_name, "--", *argv], check=True, timeout=USER_TOOL_TIMEOUT_S
    )


__all__ = [
    "SYSTEM_PYTHON",
    "as_user",
    "cannot_make_users",
    "run_as",
    "throwaway_user",
]

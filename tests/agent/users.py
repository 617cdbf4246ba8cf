"""A throwaway second user for the attacks that need one (tests run as root)."""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import subprocess
from collections.abc import Iterator

USERADD = shutil.which("useradd")
USERDEL = shutil.which("userdel")
RUNUSER = shutil.which("runuser")
#: Seconds useradd/userdel/runuser may take (they lock /etc/passwd).
USER_TOOL_TIMEOUT_S = 60


def cannot_make_users() -> str | None:
    """Why a throwaway user cannot be made here, or None when it can."""
    if os.geteuid() != 0:
        return "needs root to create users"
    if not (USERADD and USERDEL and RUNUSER):
        return "useradd, userdel or runuser is missing"
    return None


@contextlib.contextmanager
def throwaway_user(name: str) -> Iterator[pwd.struct_passwd]:
    """A system user without home or login shell, removed afterwards."""
    assert USERADD
    assert USERDEL
    with contextlib.suppress(KeyError):
        pwd.getpwnam(name)
        subprocess.run([USERDEL, name], check=True, timeout=USER_TOOL_TIMEOUT_S)  # a crashed run's
    subprocess.run(
        [USERADD, "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", "-U", name],
        check=True,
        timeout=USER_TOOL_TIMEOUT_S,
    )
    try:
        yield pwd.getpwnam(name)
    finally:
        subprocess.run([USERDEL, name], check=False, timeout=USER_TOOL_TIMEOUT_S)


def run_as(user: pwd.struct_passwd, *argv: str) -> None:
    """Run ``argv`` as ``user`` (runuser), failing the test if it fails."""
    assert RUNUSER
    subprocess.run(
        [RUNUSER, "-u", user.pw_name, "--", *argv], check=True, timeout=USER_TOOL_TIMEOUT_S
    )

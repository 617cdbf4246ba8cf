"""The covers hold for an ordinary user too: a throwaway user (``useradd``)
runs the exec helper with a protected directory, and tries to read it, to
unmount the cover, and to unmount it from a user namespace of its own.

The helper needs only the standard library, so the system's Python runs it
(the venv's interpreter may live where the user cannot read).
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from boundary_audit.confine.helper import HELPER_SCRIPT
from tests.support.users import as_user, cannot_make_users, throwaway_user

from .helpers import requires_landlock

pytestmark = [pytest.mark.timeout(120), requires_landlock]

ATTACKER = "ba-attacker"
SYSTEM_PYTHON = "/usr/bin/python3"
#: Seconds the confined shell may take; it bounds a hang.
RUN_TIMEOUT_S = 60.0

#: umount2(path, MNT_DETACH) straight, printing its result and errno.
UMOUNT = (
    "import ctypes, sys; lib = ctypes.CDLL(None, use_errno=True); "
    "rc = lib.umount2(sys.argv[1].encode(), 2); print(f'umount={rc},{ctypes.get_errno()}')"
)
ATTACK = r"""
key="$1/key"
cat "$key" && echo "read=yes" || echo "read=no"
python3 -c "$UMOUNT" "$1"
unshare -rm sh -c "umount -l '$1' 2>/dev/null; cat '$key'" && echo "nested=yes" || echo "nested=no"
"""


@pytest.fixture
def attacker() -> Iterator[pwd.struct_passwd]:
    if (why := cannot_make_users()) is not None:
        pytest.skip(why)
    if not os.access(SYSTEM_PYTHON, os.X_OK) or shutil.which("unshare") is None:
        pytest.skip(f"needs {SYSTEM_PYTHON} and unshare")
    with throwaway_user(ATTACKER) as user:
        yield user


def test_an_ordinary_user_can_neither_read_nor_uncover_a_protected_dir(
    attacker: pwd.struct_passwd,
) -> None:
    # Not under pytest's tmp_path: its parents are private to root.
    with tempfile.TemporaryDirectory(prefix="ba-unpriv-") as top:
        _attack(Path(top), attacker)


def _attack(tmp_path: Path, attacker: pwd.struct_passwd) -> None:
    home = tmp_path / "home"
    protected = home / "protected"
    protected.mkdir(parents=True)
    (protected / "key").write_text("secret\n")
    for path in (tmp_path, home, protected, protected / "key"):
        os.chown(path, attacker.pw_uid, attacker.pw_gid)
    protected.chmod(0o700)
    argv = as_user(
        attacker,
        [
            SYSTEM_PYTHON,
            "-I",
            "-S",
            str(HELPER_SCRIPT.with_name("exec_helper.py")),
            "--status-fd",
            "-1",
            "--connect-port",
            "9",
            "--cover-dir",
            str(protected),
            "--",
            "sh",
            "-c",
            ATTACK,
            "attack",
            str(protected),
        ],
    )
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "UMOUNT": UMOUNT}
    done = subprocess.run(
        argv, capture_output=True, text=True, timeout=RUN_TIMEOUT_S, check=False, cwd=home, env=env
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.split()
    assert "read=no" in lines, done.stdout
    assert "umount=-1,1" in lines, done.stdout  # EPERM
    assert "nested=no" in lines, done.stdout
    assert "secret" not in done.stdout

"""Which paths the confined command must not see: the audit trail and its secrets.

The parent decides, the exec helper covers (:mod:`.mounts`). Protected are
boundary-audit's per-user directories (config: the proxy CA; data: the
collector database, quickstart's included; state: the agent spool with its
dead-letter file, and the spill dir), the CA dir and spill dir actually in
use, and every agent socket a sender could use.

A directory is covered whole. An agent socket sits in its own directory
(quickstart's, a deployment's) or in a shared one such as the temp dir,
which the command needs: there only the socket file is covered. That cover
holds while the socket file does: an agent that re-creates its socket during
the run (a restart) makes it reachable again (docs/security.md). A
directory that holds the command's working directory or the run's private
CA bundle is never covered (its protected files are covered one by one).

Pure except for :func:`protected_paths`, which reads the user's directories,
and :func:`prepare`, which creates the missing per-user directories (0700)
so that a command cannot create them first and plant files in them (a spill
file the agent would deliver, a database).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import platformdirs

from ..logs import get_logger
from ..wire.spill import resolve_spill_dir

#: Extra directories to hide (os.pathsep-separated): an agent spool, a
#: collector database or a CA kept outside the per-user directories.
PROTECT_ENV = "BOUNDARY_AUDIT_PROTECT"
#: The application name of boundary-audit's per-user directories.
APP_NAME = "boundary-audit"
#: Mode of a per-user directory created so it can be covered.
PRIVATE_DIR_MODE = 0o700
#: Directories shared with everything else the command runs: never covered
#: whole (only protected files in them are).
SHARED_DIRS = ("/", "/tmp", "/var/tmp", "/dev/shm", "/run", "/var/run")  # noqa: S108


@dataclass(frozen=True, slots=True)
class CoverPlan:
    """Absolute paths to cover, and why some could not be covered whole."""

    dirs: tuple[str, ...] = ()
    files: tuple[str, ...] = ()
    notes: tuple[str, ...] = field(default_factory=tuple)


def user_dirs() -> list[Path]:
    """boundary-audit's per-user config, data and state directories."""
    return [
        Path(platformdirs.user_config_dir(APP_NAME, appauthor=False)),
        Path(platformdirs.user_data_dir(APP_NAME, appauthor=False)),
        Path(platformdirs.user_state_dir(APP_NAME, appauthor=False)),
    ]


def shared_dirs(env: Mapping[str, str] | None = None) -> set[str]:
    """Directories covered only file by file (see :data:`SHARED_DIRS`)."""
    env = os.environ if env is None else env
    found = {*SHARED_DIRS, tempfile.gettempdir(), os.path.expanduser("~")}
    runtime = env.get("XDG_RUNTIME_DIR")
    if runtime:
        found.add(runtime)
    return {os.path.realpath(p) for p in found}


def _inside(path: str, directory: str) -> bool:
    return path == directory or path.startswith(directory.rstrip("/") + "/")


def plan_covers(
    directories: Iterable[str],
    sockets: Iterable[str],
    *,
    shared: set[str],
    keep_visible: Sequence[str],
) -> CoverPlan:
    """The covers for protected ``directories`` and agent ``sockets``, all
    absolute and resolved (pure).

    A socket's directory is covered unless shared; a directory holding one of
    ``keep_visible`` (the working dir, the CA bundle) is not covered, and the
    sockets in it are covered as files. Nested covers are kept once (the
    outermost).
    """
    dirs: set[str] = set()
    files: set[str] = set()
    notes: list[str] = []

    def add_dir(path: str) -> bool:
        if path in shared:
            return False
        blocking = [k for k in keep_visible if _inside(k, path)]
        if blocking:
            notes.append(f"{path} is not hidden whole: it holds {blocking[0]}")
            return False
        dirs.add(path)
        return True

    for directory in directories:
        add_dir(directory)
    for sock in sockets:
        if not add_dir(os.path.dirname(sock)):
            files.add(sock)
    outer = sorted(d for d in dirs if not any(o != d and _inside(d, o) for o in dirs))
    kept_files = sorted(f for f in files if not any(_inside(f, d) for d in outer))
    return CoverPlan(tuple(outer), tuple(kept_files), tuple(notes))


def protected_paths(
    extra: Iterable[str | os.PathLike[str]] = (), env: Mapping[str, str] | None = None
) -> list[Path]:
    """boundary-audit's per-user dirs, the spill dir in use, the directories
    named in ``$BOUNDARY_AUDIT_PROTECT`` and ``extra`` (the CA dir in use, ...)."""
    env = os.environ if env is None else env
    configured = [Path(p) for p in env.get(PROTECT_ENV, "").split(os.pathsep) if p]
    return [*user_dirs(), resolve_spill_dir(None, env), *configured, *(Path(p) for p in extra)]


def prepare(
    directories: Iterable[Path],
    sockets: Iterable[str | os.PathLike[str]],
    *,
    keep_visible: Sequence[str],
    env: Mapping[str, str] | None = None,
) -> CoverPlan:
    """Create the missing protected directories (0700) and plan their covers
    and the sockets'; the notes are logged as warnings."""
    resolved: list[str] = []
    for directory in directories:
        try:
            directory.mkdir(mode=PRIVATE_DIR_MODE, parents=True, exist_ok=True)
        except OSError as exc:
            get_logger("run").warning(
                "cannot create a protected directory to hide it; the command may create it",
                path=str(directory),
                error=str(exc),
            )
            continue
        resolved.append(os.path.realpath(directory))
    socks = [os.path.realpath(s) for s in sockets]
    plan = plan_covers(
        resolved,
        socks,
        shared=shared_dirs(env),
        keep_visible=[os.path.realpath(k) for k in keep_visible],
    )
    for note in plan.notes:
        get_logger("run").warning("protected path only partly hidden: " + note)
    return plan


__all__ = [
    "PROTECT_ENV",
    "CoverPlan",
    "plan_covers",
    "prepare",
    "protected_paths",
    "shared_dirs",
    "user_dirs",
]

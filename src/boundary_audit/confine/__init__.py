"""Process confinement: run a command whose network egress can only reach the proxy.

Two halves that never share a process:

* the child side, standard library only, applied by the exec helper between
  fork and exec: Landlock network rules (:mod:`.landlock`), the seccomp filter
  that closes the ways around them (:mod:`.seccomp`) and the optional private
  network namespace (:mod:`.netns`), driven by :mod:`.helper`;
* the parent side, in the asyncio loop of ``boundary-audit run``: the
  command's environment and CA bundle (:mod:`.environment`), starting it
  (:mod:`.spawn`), the relay of an isolated command (:mod:`.relay`), signal
  forwarding (:mod:`.signals`), tied together by :func:`run_confined`.

Knows nothing of the proxy but its URL: ``boundary_audit.cli.run`` joins the two.
"""

from __future__ import annotations

from .attempts import Attempt
from .environment import (
    CA_ENV_VARS,
    CLEARED_ENV_VARS,
    PROXY_ENV_VARS,
    ChildEnvironment,
    build_child_env,
    find_system_ca_files,
    write_ca_bundle,
)
from .errors import (
    EXIT_CANNOT_EXECUTE,
    EXIT_NOT_FOUND,
    ConfinementError,
    ConfinementUnavailable,
    LaunchError,
)
from .helper import helper_argv, restrict_network
from .landlock import (
    LandlockStatus,
    landlock_abi_version,
    landlock_status,
    require_network_confinement,
)
from .launch import check_enforcement, run_confined
from .metrics import LaunchMetrics
from .spawn import exit_code_from_returncode

__all__ = [
    "CA_ENV_VARS",
    "CLEARED_ENV_VARS",
    "EXIT_CANNOT_EXECUTE",
    "EXIT_NOT_FOUND",
    "PROXY_ENV_VARS",
    "Attempt",
    "ChildEnvironment",
    "ConfinementError",
    "ConfinementUnavailable",
    "LandlockStatus",
    "LaunchError",
    "LaunchMetrics",
    "build_child_env",
    "check_enforcement",
    "exit_code_from_returncode",
    "find_system_ca_files",
    "helper_argv",
    "landlock_abi_version",
    "landlock_status",
    "require_network_confinement",
    "restrict_network",
    "run_confined",
    "write_ca_bundle",
]

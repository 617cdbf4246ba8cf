"""What can go wrong confining and starting a command, and the exit codes it maps to.

Standard library only: the exec helper (:mod:`.helper`) raises these in the
child, where nothing outside the standard library can be imported.
"""

from __future__ import annotations

#: Exit codes for a command that could not be run, following the shell's
#: convention (126: cannot run, 127: not found); the exec helper exits with
#: them and the launcher reports them as its own.
EXIT_CANNOT_EXECUTE = 126
EXIT_NOT_FOUND = 127


class ConfinementError(RuntimeError):
    """Network confinement could not be set up."""


class ConfinementUnavailable(ConfinementError):
    """This kernel (or machine, or sandbox) cannot confine the network with Landlock."""

    def __init__(self, reason: str, abi: int | None = None) -> None:
        self.reason = reason
        self.abi = abi
        super().__init__(f"Landlock network confinement is unavailable: {reason}")


class LaunchError(RuntimeError):
    """COMMAND could not be started; ``exit_code`` is what a shell would return
    (127 not found, 126 cannot execute or cannot be confined)."""

    def __init__(self, message: str, exit_code: int) -> None:
        self.exit_code = exit_code
        super().__init__(message)


__all__ = [
    "EXIT_CANNOT_EXECUTE",
    "EXIT_NOT_FOUND",
    "ConfinementError",
    "ConfinementUnavailable",
    "LaunchError",
]

"""Running boundary-audit commands and stopping the processes tests start."""

from __future__ import annotations

import subprocess
import sys

from boundary_audit._process import DEFAULT_STOP_TIMEOUT, stop_process

#: A CLI command that runs to completion (tokens, sessions, logs) finishes in
#: seconds; this bounds a hang, it is not an expectation.
CLI_TIMEOUT_S = 60.0


def cli_argv(*args: str) -> list[str]:
    """argv that runs ``boundary-audit ARGS`` with this interpreter (the venv's)."""
    return [sys.executable, "-m", "boundary_audit", *args]


def run_cli(
    *args: str, check: bool = True, timeout: float = CLI_TIMEOUT_S, input: str | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``boundary-audit ARGS`` to completion; fail with its stderr when ``check``."""
    result = subprocess.run(
        cli_argv(*args), capture_output=True, text=True, timeout=timeout, input=input, check=False
    )
    if check and result.returncode != 0:
        raise AssertionError(
            f"boundary-audit {' '.join(args)} exited {result.returncode}:\n{result.stderr[-3000:]}"
        )
    return result


__all__ = ["CLI_TIMEOUT_S", "DEFAULT_STOP_TIMEOUT", "cli_argv", "run_cli", "stop_process"]

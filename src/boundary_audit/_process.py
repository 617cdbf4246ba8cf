"""Stopping a child process: one SIGTERM-wait-SIGKILL routine for everyone.

Used by the quickstart for its services and by the tests and benchmarks for
every process they start, so a stop always means the same thing.
"""

from __future__ import annotations

import contextlib
import signal
import subprocess

#: Seconds a process gets after SIGTERM before SIGKILL: enough for the agent
#: and collector to finish a flush, short enough not to hang a test run.
DEFAULT_STOP_TIMEOUT = 15.0


def stop_process(
    process: subprocess.Popen[bytes] | subprocess.Popen[str],
    timeout: float = DEFAULT_STOP_TIMEOUT,
    sig: int = signal.SIGTERM,
) -> int:
    """Ask ``process`` to stop with ``sig``; SIGKILL it after ``timeout``; its exit status.

    A stopped (SIGSTOPped) process cannot act on SIGTERM, so it is resumed
    first. Safe to call on a process that has already exited.
    """
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGCONT)
            process.send_signal(sig)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    return process.returncode


__all__ = ["DEFAULT_STOP_TIMEOUT", "stop_process"]

"""Signals received by ``boundary-audit run``, forwarded to the command.

SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGUSR1 and SIGUSR2 received by this process
are forwarded to the child through the loop's signal handlers. The child
stays in our process group so terminal job control keeps working; therefore
a SIGINT/SIGQUIT typed at the terminal already reaches the child directly,
and is not forwarded a second time while the child's group is the terminal's
foreground group (a double Ctrl-C means "quit" to many tools).
"""

from __future__ import annotations

import asyncio
import os
import signal

from ..logs import get_logger
from .metrics import LaunchMetrics

#: Signals forwarded to the child.
FORWARDED_SIGNALS = (
    signal.SIGINT,
    signal.SIGTERM,
    signal.SIGHUP,
    signal.SIGQUIT,
    signal.SIGUSR1,
    signal.SIGUSR2,
)
#: Signals a terminal sends to its whole foreground process group.
TERMINAL_SIGNALS = frozenset({signal.SIGINT, signal.SIGQUIT})
#: The controlling terminal, to tell whether tty signals reach the child.
CONTROLLING_TTY = "/dev/tty"


def _terminal_reaches_child(pid: int | None) -> bool:
    """True when the child's process group (ours until it starts: it inherits
    it) is the controlling terminal's foreground group, so a tty-generated
    signal was delivered to the child directly. A child that moved to its own
    group or session is not reached by the terminal and gets it forwarded."""
    try:
        fd = os.open(CONTROLLING_TTY, os.O_RDONLY | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        group = os.getpgrp() if pid is None else os.getpgid(pid)
        return os.tcgetpgrp(fd) == group
    except OSError:
        return False
    finally:
        os.close(fd)


class SignalForwarder:
    """Loop signal handlers that relay to the child (queued until it exists)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, metrics: LaunchMetrics) -> None:
        self._loop = loop
        self._metrics = metrics
        self._log = get_logger("run")
        self._process: asyncio.subprocess.Process | None = None
        self._pending: list[signal.Signals] = []
        self._installed: list[signal.Signals] = []

    def install(self) -> None:
        for sig in FORWARDED_SIGNALS:
            try:
                self._loop.add_signal_handler(sig, self._on_signal, sig)
            except (RuntimeError, ValueError, NotImplementedError) as exc:
                # Not the main thread, or a loop without signal support.
                self._log.warning("cannot forward signal", signal=sig.name, error=str(exc))
                continue
            self._installed.append(sig)

    def attach(self, process: asyncio.subprocess.Process) -> None:
        self._process = process
        pending, self._pending = self._pending, []
        for sig in pending:
            self._forward(sig)

    def remove(self) -> None:
        for sig in self._installed:
            self._loop.remove_signal_handler(sig)
        self._installed = []
        for sig in self._pending:
            self._drop(sig, "child_never_started")

    def _drop(self, sig: signal.Signals, reason: str) -> None:
        self._metrics.signals_not_forwarded.labels(signal=sig.name, reason=reason).inc()
        self._log.info("signal not forwarded", signal=sig.name, reason=reason)

    def _on_signal(self, sig: signal.Signals) -> None:
        pid = self._process.pid if self._process is not None else None
        if sig in TERMINAL_SIGNALS and _terminal_reaches_child(pid):
            self._drop(sig, "terminal_delivered")
            return
        if self._process is None:
            self._pending.append(sig)
            return
        self._forward(sig)

    def _forward(self, sig: signal.Signals) -> None:
        assert self._process is not None
        if self._process.returncode is not None:
            self._drop(sig, "child_exited")
            return
        try:
            self._process.send_signal(sig)
        except ProcessLookupError:
            self._drop(sig, "child_exited")
            return
        self._metrics.signals_forwarded.labels(signal=sig.name).inc()
        self._log.debug("signal forwarded", signal=sig.name, pid=self._process.pid)


__all__ = ["FORWARDED_SIGNALS", "SignalForwarder"]

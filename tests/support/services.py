"""boundary-audit components as real processes: start, wait until healthy, scrape, stop.

:class:`Service` is one ``python -m boundary_audit ...`` subprocess that can be
started again and again (one log file per start), stopped, killed, paused;
:class:`AgentProcess` is the agent on a socket path, a spool directory and a
metrics port that all survive its restarts. Used by the agent's process
tests, the end-to-end suite and the benchmarks, so every one of them starts,
waits for and stops a component the same way.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil
from prometheus_client.parser import text_string_to_metric_families

from boundary_audit.agent.config import CREDENTIAL_ENV

from .eventually import eventually
from .ports import LOOPBACK, free_port
from .processes import cli_argv, stop_process

#: Seconds a component may take to start (import, migrate, bind) on a loaded
#: two-core machine; a broken build, not a slow one, takes longer.
START_TIMEOUT_S = 60.0
#: Timeout of one /healthz or /metrics request: a process that takes longer
#: is as good as not answering (the caller polls again).
PROBE_TIMEOUT_S = 5.0
#: Polling interval while a component starts: each probe is an HTTP request
#: to a process busy importing, so a few per second are enough.
START_POLL_S = 0.05
#: Seconds a component may take to stop after SIGTERM: the agent first
#: flushes for up to its --flush-timeout, the collector finishes its requests,
#: and a loaded machine makes both slow. Only a process that hangs waits this.
STOP_TIMEOUT_S = 60.0
#: Timeout of a /metrics scrape: an agent just resumed from SIGSTOP, or busy
#: with a backlog, may take seconds to answer.
SCRAPE_TIMEOUT_S = 30.0
#: The agent's flush at shutdown; short, because tests restart it.
AGENT_FLUSH_TIMEOUT_S = 5.0


class ProcessExited(RuntimeError):
    """A process a test waits for died; waiting longer cannot help.

    Not an AssertionError on purpose: :func:`~tests.support.eventually` would
    count that as "not yet" and wait out its whole timeout.
    """


def json_lines(path: Path) -> list[dict[str, Any]]:
    """The JSON log lines of ``path`` (other lines, torn or foreign, are skipped)."""
    out = []
    with contextlib.suppress(FileNotFoundError):
        for line in path.read_text(errors="replace").splitlines():
            if line.startswith("{"):
                with contextlib.suppress(json.JSONDecodeError):
                    out.append(json.loads(line))
    return out


def metric_value(text: str, name: str, **labels: str) -> float:
    """One sample of a /metrics text (0 when absent, as for a counter never touched)."""
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    return 0.0


def wait_healthy(
    url: str,
    proc: subprocess.Popen[bytes],
    what: str,
    within: float = START_TIMEOUT_S,
    log: Path | None = None,
) -> None:
    """Poll ``url`` (a /healthz) until it answers 200; raise at once if ``proc`` exits."""

    def healthy() -> bool:
        if proc.poll() is not None:
            tail = log.read_text(errors="replace")[-3000:] if log is not None else ""
            raise ProcessExited(f"{what} exited with status {proc.returncode}: {tail}")
        try:
            return httpx.get(url, timeout=PROBE_TIMEOUT_S).status_code == 200
        except httpx.HTTPError:
            return False  # not listening yet

    eventually(healthy, f"{what} to answer {url}", within=within, interval=START_POLL_S)


@dataclass
class Service:
    """A component subprocess that can be started, stopped, killed, paused, resumed."""

    name: str
    argv: list[str]
    log_dir: Path
    env: dict[str, str] = field(default_factory=lambda: dict(os.environ))
    proc: subprocess.Popen[bytes] | None = None
    starts: int = 0

    @property
    def log_path(self) -> Path:
        """The log of the current (latest) start."""
        return self.log_dir / f"{self.name}-{self.starts}.log"

    def spawn(self) -> subprocess.Popen[bytes]:
        assert not self.alive(), f"{self.name} already running"
        self.starts += 1
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                cli_argv(*self.argv), stdout=subprocess.DEVNULL, stderr=log, env=self.env
            )
        return self.proc

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> int:
        """SIGTERM and wait (SIGKILL if it will not stop); its exit status."""
        assert self.proc is not None
        return stop_process(self.proc, timeout)

    def ensure_stopped(self) -> None:
        """For teardown: SIGKILL it if a test left it running.

        Not SIGTERM: a graceful stop would first flush for up to the agent's
        flush timeout (the whole of it when a test left the collector down),
        and a teardown has nothing left to check.
        """
        if self.alive():
            self.kill()

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait()

    def pause(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)

    def rss(self) -> int:
        assert self.proc is not None
        try:
            return int(psutil.Process(self.proc.pid).memory_info().rss)
        except psutil.Error:
            return 0

    def log(self) -> str:
        """The current start's log as text (stderr of the process)."""
        return self.log_path.read_text(errors="replace")

    def log_lines(self) -> list[dict[str, Any]]:
        """JSON log lines of every start, oldest first."""
        lines = []
        for start in range(1, self.starts + 1):
            lines.extend(json_lines(self.log_dir / f"{self.name}-{start}.log"))
        return lines


class AgentProcess(Service):
    """The agent: socket, spool dir and metrics port kept across restarts."""

    def __init__(
        self, log_dir: Path, sock_dir: Path, collector_url: str, token: str, *extra: str
    ) -> None:
        self.socket_path = sock_dir / "agent.sock"
        self.spool_dir = log_dir / "spool"
        self.metrics_port = free_port()
        super().__init__(
            "agent",
            [
                "agent",
                "--socket",
                str(self.socket_path),
                "--collector-url",
                collector_url,
                "--spool-dir",
                str(self.spool_dir),
                "--metrics-listen",
                f"{LOOPBACK}:{self.metrics_port}",
                "--flush-timeout",
                str(AGENT_FLUSH_TIMEOUT_S),
                *extra,
            ],
            log_dir,
            {**os.environ, CREDENTIAL_ENV: token},
        )

    def url(self, path: str) -> str:
        return f"http://{LOOPBACK}:{self.metrics_port}{path}"

    def start(self) -> None:
        """Spawn and wait until /healthz answers."""
        proc = self.spawn()
        wait_healthy(self.url("/healthz"), proc, "the agent", log=self.log_path)

    def metric(self, name: str, **labels: str) -> float:
        """One sample of the agent's /metrics (0 when absent)."""
        text = httpx.get(self.url("/metrics"), timeout=SCRAPE_TIMEOUT_S).text
        return metric_value(text, name, **labels)


__all__ = [
    "AGENT_FLUSH_TIMEOUT_S",
    "START_TIMEOUT_S",
    "STOP_TIMEOUT_S",
    "AgentProcess",
    "ProcessExited",
    "Service",
    "json_lines",
    "metric_value",
    "wait_healthy",
]

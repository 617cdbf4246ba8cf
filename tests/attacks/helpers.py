"""Running an attack as the confined command of a real ``boundary-audit run``.

The attack is a Python script run as COMMAND. It gets the upstream's port
and the proxy from its environment, does what an attacker inside the
sandbox would, and prints one JSON line of what each step returned; the test
then checks both that line and what reached the collector.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from boundary_audit.confine import landlock_status
from boundary_audit.confine.landlock import LANDLOCK_SCOPE_MIN_ABI
from tests.e2e.helpers import ALLOW_RULE
from tests.support.processes import cli_argv, run_cli
from tests.support.services import json_lines

#: Seconds a whole attack run may take; it bounds a hang (a stopped launcher).
RUN_TIMEOUT_S = 120.0
#: Most events an attack's session is read back with (an attack makes a few).
STORED_LIMIT = 1000
#: Seconds ``run`` keeps delivering at exit: the agent is up, so it is quick.
FLUSH_TIMEOUT_S = 30.0

STATUS = landlock_status()
requires_landlock = pytest.mark.skipif(
    not STATUS.network_available, reason=f"no Landlock network rules: {STATUS.reason}"
)
requires_scopes = pytest.mark.skipif(
    STATUS.abi is None or STATUS.abi < LANDLOCK_SCOPE_MIN_ABI,
    reason=f"kernel Landlock ABI {STATUS.abi} has no scopes (needs {LANDLOCK_SCOPE_MIN_ABI})",
)

#: Prepended to every attack: two real requests through the proxy, one
#: allowed and one denied, as ``requests(port)``; ``out`` collects results.
PRELUDE = r"""
import ctypes, errno, http.client, json, os, signal, socket, sys, urllib.parse
out = {}
def requests(port, tag):
    proxy = urllib.parse.urlsplit(os.environ["HTTP_PROXY"])
    conn = http.client.HTTPConnection(proxy.hostname, proxy.port, timeout=30)
    statuses = []
    for path in (f"/ok/{tag}", f"/no/{tag}"):
        conn.request("GET", f"http://127.0.0.1:{port}{path}")
        response = conn.getresponse()
        response.read()
        statuses.append(response.status)
    conn.close()
    return statuses
def attempt(name, fn):
    try:
        out[name] = ["ok", fn()]
    except OSError as exc:
        out[name] = ["error", exc.errno]
    except Exception as exc:
        out[name] = ["error", type(exc).__name__]
"""


def stored_events(collector_url: str, session_id: str) -> list[dict[str, Any]]:
    """Every event the collector holds for ``session_id``, by sequence number."""
    out = run_cli(
        "logs",
        "--collector-url",
        collector_url,
        "--session",
        session_id,
        "--jsonl",
        "--limit",
        str(STORED_LIMIT),
    ).stdout
    events = [json.loads(line) for line in out.splitlines() if line.strip()]
    return sorted(events, key=lambda e: int(e["sequence_number"]))


@dataclass
class AttackResult:
    returncode: int
    out: dict[str, Any]
    stderr: str
    stderr_path: Path

    def summary(self) -> dict[str, Any]:
        lines = [x for x in json_lines(self.stderr_path) if x.get("event") == "audit summary"]
        assert len(lines) == 1, f"no audit summary in {self.stderr[-3000:]}"
        return lines[0]

    @property
    def session_id(self) -> str:
        return str(self.summary()["session_id"])


def run_attack(
    tmp: Path,
    script: str,
    args: list[str],
    *,
    socket_path: Path | None,
    extra: tuple[str, ...] = (),
    env: dict[str, str] | None = None,
    name: str = "attack",
) -> AttackResult:
    """``boundary-audit run [--audit-socket P] EXTRA -- python -c PRELUDE+SCRIPT ARGS``."""
    stderr_path = tmp / f"run-{name}.log"
    run_env = dict(os.environ if env is None else env)
    run_env.setdefault("XDG_CONFIG_HOME", str(tmp / "config"))
    run_env.pop("BOUNDARY_ALLOW", None)
    socket_args = ["--audit-socket", str(socket_path)] if socket_path is not None else []
    argv = cli_argv(
        "run",
        "--log-level",
        "info",
        "--allow",
        ALLOW_RULE,
        *socket_args,
        "--audit-flush-timeout",
        str(FLUSH_TIMEOUT_S),
        *extra,
        "--",
        sys.executable,
        "-c",
        PRELUDE + script,
        *args,
    )
    with stderr_path.open("wb") as err:
        # A session of its own: an attack on the launcher's process group
        # that got through must not reach the test runner.
        done = subprocess.run(
            argv,
            check=False,
            stdout=subprocess.PIPE,
            stderr=err,
            env=run_env,
            timeout=RUN_TIMEOUT_S,
            start_new_session=True,
        )
    stderr = stderr_path.read_text(errors="replace")
    lines = done.stdout.decode(errors="replace").strip().splitlines()
    out = json.loads(lines[-1]) if lines else {}
    return AttackResult(done.returncode, out, stderr, stderr_path)


__all__ = [
    "PRELUDE",
    "RUN_TIMEOUT_S",
    "STATUS",
    "AttackResult",
    "requires_landlock",
    "requires_scopes",
    "run_attack",
    "stored_events",
]

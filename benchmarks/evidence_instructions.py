"""The evidence's ingest cost in instructions: a figure the shared machine's noise does not move.

CPU time per event on these shared virtual machines moves by 20% and more
between two runs of the same code (another tenant on the host), as much as
the goal itself. Valgrind's callgrind counts the instructions a process
executes, which repeat from run to run to within about a percent. So the
real collector (``boundary-audit collector``, over HTTP, the same requests
as ``evidence_cost.py``) runs under callgrind with ``--no-evidence`` and
without it: counting is switched on once it listens and read once the load
is posted (``callgrind_control``), which leaves start-up and shutdown out.

The figure errs against the evidence: under valgrind, OpenSSL does not see
the CPU's SHA extensions and hashes in software, several times the
instructions of a real run, and the evidence is what hashes.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass

from benchmarks.ingest_load import EVENTS_PER_REQUEST, collector_process, post_all
from boundary_audit.collector import open_storage

#: The tools this needs (Debian's valgrind package has both).
VALGRIND, CONTROL = "valgrind", "callgrind_control"
#: Start-up under valgrind is some 30x slower than without it.
LISTEN_TIMEOUT_SECONDS = 600
#: Time for one callgrind_control command (it waits for the target to poll).
CONTROL_TIMEOUT_SECONDS = 120
#: One line per thread in ``callgrind_control -e Ir``: "Th <n>  <count>".
_THREAD_LINE = re.compile(r"^\s*Th\s+\d+\s+([\d,]+)\s*$", re.MULTILINE)


@dataclass(frozen=True)
class InstructionRow:
    backend: str
    #: Instructions per stored event, evidence off and on.
    off: float
    on: float

    @property
    def slowdown(self) -> float:
        return self.on / self.off - 1


def missing_tools() -> list[str]:
    """The tools not installed (empty: the table can be made)."""
    return [tool for tool in (VALGRIND, CONTROL) if shutil.which(tool) is None]


def _control(pid: int, *args: str) -> str:
    result = subprocess.run(
        [CONTROL, *args, str(pid)],
        capture_output=True,
        text=True,
        timeout=CONTROL_TIMEOUT_SECONDS,
        check=True,
    )
    return result.stdout


def instructions(output: str) -> int:
    """The sum over threads of ``callgrind_control -e Ir``'s output."""
    counts = [int(n.replace(",", "")) for n in _THREAD_LINE.findall(output)]
    if not counts:
        raise RuntimeError(f"no instruction counts in: {output[:500]}")
    return sum(counts)


def _run(db_url: str, bodies: list[bytes], events: int, evidence: bool) -> float:
    """Instructions per stored event of one collector on a fresh database."""
    with open_storage(db_url) as storage:
        token = storage.create_token("bench")
    extra = ("--no-event-log",) if evidence else ("--no-event-log", "--no-evidence")
    under = (VALGRIND, "--tool=callgrind", "--instr-atstart=no", "--callgrind-out-file=/dev/null")
    with collector_process(
        db_url, *extra, under=under, listen_timeout=LISTEN_TIMEOUT_SECONDS
    ) as collector:
        _control(collector.pid, "--instr=on")
        _control(collector.pid, "--zero")
        post_all(collector.url, token, bodies[:-1])  # the events, then the seals
        post_all(collector.url, token, bodies[-1:])
        counted = instructions(_control(collector.pid, "-e", "Ir"))
    return counted / events


def instruction_rows(
    databases: list[tuple[str, Callable[[], str]]], bodies: list[bytes]
) -> list[InstructionRow]:
    """Off and on for each ``(backend, new database URL)``; one run each (they repeat)."""
    stored = (len(bodies) - 1) * EVENTS_PER_REQUEST
    return [
        InstructionRow(
            backend,
            _run(new_db(), bodies, stored, evidence=False),
            _run(new_db(), bodies, stored, evidence=True),
        )
        for backend, new_db in databases
    ]


__all__ = ["InstructionRow", "instruction_rows", "instructions", "missing_tools"]

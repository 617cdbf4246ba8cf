"""The evidence's ingest cost in instructions: a figure the shared machine's noise does not move.

CPU time per event on these shared virtual machines moves by 20% and more
between two runs of the same code (another tenant on the host), as much as
the goal itself. Valgrind's callgrind counts the instructions a process
executes, which no other tenant on the host moves. So the
real collector (``boundary-audit collector``, over HTTP, the same requests
as ``evidence_cost.py``) runs under callgrind with ``--no-evidence`` and
without it: counting is switched on once it listens and read once the load
is posted (``callgrind_control``), which leaves start-up and shutdown out.

The whole count errs against the evidence: under valgrind, OpenSSL does not
see the CPU's SHA extensions and hashes in software, several times the
instructions of a real run, and the evidence is what hashes. So the count
outside OpenSSL's libcrypto is given beside it, which errs the other way.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from benchmarks.ingest_load import (
    EVENTS_PER_REQUEST,
    collector_process,
    evidence_flags,
    new_token,
    post_all,
)

#: The tools this needs (all three in Debian's valgrind package).
VALGRIND, CONTROL, ANNOTATE = "valgrind", "callgrind_control", "callgrind_annotate"
#: Start-up under valgrind is some 30x slower than without it.
LISTEN_TIMEOUT_SECONDS = 600
#: Time for one callgrind_control command (it waits for the target to poll).
CONTROL_TIMEOUT_SECONDS = 120


@dataclass(frozen=True)
class InstructionRow:
    backend: str
    #: Instructions per stored event, evidence off and on.
    off: float
    on: float
    #: Of them, those in OpenSSL's libcrypto (hashing, in software here).
    crypto_off: float
    crypto_on: float

    @property
    def slowdown(self) -> float:
        return self.on / self.off - 1

    @property
    def slowdown_outside_crypto(self) -> float:
        """The same, leaving out libcrypto: what valgrind does not inflate."""
        return (self.on - self.crypto_on) / (self.off - self.crypto_off) - 1


def missing_tools() -> list[str]:
    """The tools not installed (empty: the table can be made)."""
    return [tool for tool in (VALGRIND, CONTROL, ANNOTATE) if shutil.which(tool) is None]


def _control(pid: int, *args: str) -> str:
    result = subprocess.run(
        [CONTROL, *args, str(pid)],
        capture_output=True,
        text=True,
        timeout=CONTROL_TIMEOUT_SECONDS,
        check=True,
    )
    return result.stdout


#: A line of ``callgrind_annotate --inclusive=no``: count, share, then
#: "file:function [object]".
_COST_LINE = re.compile(r"^\s*([\d,]+) \([^)]*\)\s+(.*)$", re.MULTILINE)
#: The shared object whose hashing valgrind runs in software.
CRYPTO_OBJECT = "libcrypto"
#: The annotation's line of totals, not a function.
_TOTALS = "PROGRAM TOTALS"


def instructions(annotated: str) -> tuple[int, int]:
    """(all instructions, those in OpenSSL's libcrypto) of a callgrind_annotate listing."""
    total = crypto = 0
    for count, where in _COST_LINE.findall(annotated):
        if _TOTALS in where:
            continue
        n = int(count.replace(",", ""))
        total += n
        if CRYPTO_OBJECT in where:
            crypto += n
    if not total:
        raise RuntimeError(f"no instruction counts in: {annotated[:500]}")
    return total, crypto


def _run(db_url: str, bodies: list[bytes], events: int, evidence: bool) -> tuple[float, float]:
    """(instructions, of them in libcrypto) per stored event of one collector, fresh database."""
    token = new_token(db_url)
    with tempfile.TemporaryDirectory(prefix="bench-callgrind-") as tmp:
        out = Path(tmp) / "callgrind.out"
        under = (VALGRIND, "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={out}")
        with collector_process(
            db_url, *evidence_flags(evidence), under=under, listen_timeout=LISTEN_TIMEOUT_SECONDS
        ) as collector:
            _control(collector.pid, "--instr=on")
            _control(collector.pid, "--zero")
            post_all(collector.url, token, bodies[:-1])  # the events, then the seals
            post_all(collector.url, token, bodies[-1:])
            _control(collector.pid, "--dump")
            dumps = sorted(Path(tmp).glob("callgrind.out*.1"))
            if not dumps:
                raise RuntimeError(f"callgrind wrote no dump in {tmp}")
            annotated = subprocess.run(
                [ANNOTATE, "--inclusive=no", "--threshold=100", str(dumps[0])],
                capture_output=True,
                text=True,
                timeout=CONTROL_TIMEOUT_SECONDS,
                check=True,
            ).stdout
    total, crypto = instructions(annotated)
    return total / events, crypto / events


def instruction_rows(
    databases: list[tuple[str, Callable[[], str]]], bodies: list[bytes]
) -> list[InstructionRow]:
    """Off and on for each ``(backend, new database URL)``; one run each."""
    stored = (len(bodies) - 1) * EVENTS_PER_REQUEST
    rows = []
    for backend, new_db in databases:
        off, crypto_off = _run(new_db(), bodies, stored, evidence=False)
        on, crypto_on = _run(new_db(), bodies, stored, evidence=True)
        rows.append(InstructionRow(backend, off, on, crypto_off, crypto_on))
    return rows


__all__ = ["InstructionRow", "instruction_rows", "instructions", "missing_tools"]

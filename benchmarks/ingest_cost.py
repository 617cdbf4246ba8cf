"""CPU cost of ingest per stored event, for several source trees side by side.

Events/s over HTTP on a shared two-core machine moves by a factor of four
between runs of the same code (other sessions take the cores), so a 10%
change cannot be read from it. The CPU time the collector process itself
spends (user + system, all its threads and child processes) per stored
event moves far less: it does not count the time the process waited for a
core. This script runs the real ``boundary-audit collector`` of each tree
(``PYTHONPATH=TREE/src``, this environment's packages), posts the same
protobuf requests to it over HTTP, and prints CPU per event and events/s,
the trees alternated round by round so that each sees the same machine::

    git worktree add /tmp/base <commit>
    .venv/bin/python benchmarks/ingest_cost.py base=/tmp/base now=. [--events N] [--rounds R]

The first tree is the reference of the ratio column. SQLite (the embedded
default) in a fresh temporary directory per run.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.ingest_load import collector_process, cpu_seconds, post_all, request_bodies

#: Default events per run: enough for the collector's start-up CPU (measured
#: separately and not counted) to be left behind, few enough for ~10 s a run.
DEFAULT_EVENTS = 50_000
#: Default rounds: each tree runs this many times, alternated; the median is shown.
DEFAULT_ROUNDS = 3


TOKEN_COMMAND = [sys.executable, "-m", "boundary_audit", "tokens", "create", "--agent", "bench"]


def _env(tree: Path) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(tree / "src")}


def run_once(tree: Path, bodies: list[bytes], events: int) -> tuple[float, float]:
    """(CPU microseconds per event, events/s) of one collector of ``tree``."""
    with tempfile.TemporaryDirectory(prefix="ingest-cost-") as tmp:
        db_url = f"sqlite:///{tmp}/c.db"
        token = subprocess.run(
            [*TOKEN_COMMAND, "--db", db_url],
            env=_env(tree),
            check=True,
            capture_output=True,
            text=True,
        ).stdout.split()[-1]
        with collector_process(db_url, "--no-event-log", env=_env(tree)) as collector:
            before = cpu_seconds(collector.pid)
            wall = post_all(collector.url, token, bodies)
            cpu = cpu_seconds(collector.pid) - before
    return cpu / events * 1e6, events / wall


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("trees", nargs="+", metavar="NAME=PATH", help="source trees to compare")
    parser.add_argument("--events", type=int, default=DEFAULT_EVENTS)
    parser.add_argument("--rounds", type=int, default=DEFAULT_ROUNDS)
    args = parser.parse_args()
    trees = [(name, Path(path).resolve()) for name, path in (t.split("=", 1) for t in args.trees)]
    bodies = request_bodies(args.events, random.Random(1))
    events = len(bodies) * (args.events // len(bodies)) if bodies else 0
    cpu: dict[str, list[float]] = {name: [] for name, _ in trees}
    rate: dict[str, list[float]] = {name: [] for name, _ in trees}
    console = Console(width=100)
    for r in range(args.rounds):
        for name, tree in trees:
            with console.status(f"round {r + 1}/{args.rounds}: {name}"):
                c, e = run_once(tree, bodies, events)
            cpu[name].append(c)
            rate[name].append(e)
    table = Table(
        title=f"collector ingest, SQLite, {events:,} events over HTTP, median of "
        f"{args.rounds} alternated rounds"
    )
    for col in ("tree", "CPU µs / event", "vs first", "events/s (wall)", "CPU runs"):
        table.add_column(col, justify="left" if col == "tree" else "right")
    ref = statistics.median(cpu[trees[0][0]])
    for name, _ in trees:
        med = statistics.median(cpu[name])
        table.add_row(
            name,
            f"{med:.1f}",
            f"{med / ref - 1:+.1%}",
            f"{statistics.median(rate[name]):,.0f}",
            " ".join(f"{c:.1f}" for c in cpu[name]),
        )
    console.print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

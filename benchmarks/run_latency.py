"""Per-request latency through ``boundary-audit run``, for bench_proxy's ``--run`` rows.

A confined client makes keep-alive requests to a local upstream through the
run's proxy and reports each request's time; the same client run directly
(no ``run``) is the baseline. ``run`` is the real command: Landlock, the
seccomp filters and observer, the namespaces, the proxy and a SocketAuditor
writing to a real Unix socket (a sink that reads and discards, as an agent
that keeps up would). ``src`` runs the command from another checkout's
``src`` directory (``PYTHONPATH``), so two versions are measured side by side
in one run, rounds interleaved.
"""

from __future__ import annotations

import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

#: The confined (or direct) client: N timed keep-alive GETs after a warm-up,
#: each request's nanoseconds printed as one JSON list.
CLIENT = r"""
import http.client, json, os, sys, time, urllib.parse
port, n, warm = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
proxy = os.environ.get("HTTP_PROXY")
if proxy:
    p = urllib.parse.urlsplit(proxy)
    conn, target = http.client.HTTPConnection(p.hostname, p.port), f"http://127.0.0.1:{port}/"
else:
    conn, target = http.client.HTTPConnection("127.0.0.1", port), "/"
out = []
for i in range(warm + n):
    t0 = time.perf_counter_ns()
    conn.request("GET", target)
    r = conn.getresponse()
    r.read()
    if i >= warm:
        out.append(time.perf_counter_ns() - t0)
print(json.dumps(out))
"""
#: Requests before timing starts (connection, CA leaf cache, code paths warm).
WARMUP = 200
#: Rounds per variant, interleaved; the median of the rounds' p50s is quoted,
#: so one noisy round on a shared machine does not decide the row.
ROUNDS = 3
#: Seconds one client run may take (start-up included).
RUN_TIMEOUT_S = 300.0
#: Bytes the sink reads at a time.
SINK_READ = 1 << 16


@dataclass(frozen=True)
class RunLatency:
    label: str
    #: Median over rounds of each round's p50 / p99, in seconds.
    p50: float
    p99: float


def pct(values: list[float] | list[int], q: float) -> float:
    """The ``q`` quantile (0..1) of ``values``, nearest rank below (bench_proxy's too)."""
    ordered = sorted(values)
    return float(ordered[min(len(ordered) - 1, int(q * len(ordered)))])


def _pct(values: list[int], q: float) -> float:
    """``pct`` of nanosecond samples, in seconds."""
    return pct(values, q) / 1e9


class _Sink:
    """A Unix socket that accepts every connection and discards what it reads."""

    def __init__(self, path: Path) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(str(path))
        self.sock.listen()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._drain, args=(conn,), daemon=True).start()

    @staticmethod
    def _drain(conn: socket.socket) -> None:
        with conn:
            while conn.recv(SINK_READ):
                pass

    def close(self) -> None:
        self.sock.close()


def _client(argv: list[str], env: dict[str, str]) -> list[int]:
    done = subprocess.run(
        argv, capture_output=True, text=True, env=env, timeout=RUN_TIMEOUT_S, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"{argv[:4]}... exited {done.returncode}: {done.stderr[-2000:]}")
    values: list[int] = json.loads(done.stdout.strip().splitlines()[-1])
    return values


def measure_run(port: int, n: int, variants: dict[str, str | None]) -> list[RunLatency]:
    """Direct, then each variant (label -> other checkout's src, None for this one)."""
    with tempfile.TemporaryDirectory(prefix="ba-bench-run-") as tmp:
        sink = _Sink(Path(tmp) / "agent.sock")
        base = {
            **os.environ,
            "XDG_CONFIG_HOME": f"{tmp}/config",
            "BOUNDARY_AUDIT_SPILL_DIR": f"{tmp}/spill",
        }
        client = [sys.executable, "-c", CLIENT, str(port), str(n), str(WARMUP)]
        rounds: dict[str, list[tuple[float, float]]] = {"direct": []}
        try:
            for _ in range(ROUNDS):
                direct = _client(client, base)
                rounds["direct"].append((_pct(direct, 0.5), _pct(direct, 0.99)))
                for label, src in variants.items():
                    env = dict(base)
                    if src is not None:
                        env["PYTHONPATH"] = src
                    argv = [
                        sys.executable,
                        "-m",
                        "boundary_audit",
                        "run",
                        "--allow",
                        "domain=127.0.0.1",
                        "--log-level",
                        "error",
                        "--audit-log-level",
                        "error",
                        "--audit-socket",
                        f"{tmp}/agent.sock",
                        "--",
                        *client,
                    ]
                    values = _client(argv, env)
                    rounds.setdefault(label, []).append((_pct(values, 0.5), _pct(values, 0.99)))
        finally:
            sink.close()
    return [
        RunLatency(
            label,
            statistics.median(p50 for p50, _ in samples),
            statistics.median(p99 for _, p99 in samples),
        )
        for label, samples in rounds.items()
    ]


__all__ = ["ROUNDS", "RunLatency", "measure_run", "pct"]

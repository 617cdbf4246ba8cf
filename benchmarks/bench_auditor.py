"""Side-by-side benchmark of the boundary-side auditor.

Run from the repository root::

    .venv/bin/python benchmarks/bench_auditor.py [--quick] [--stall-seconds 30]

Three parts, all in one run, each printed as a rich table:

1. Cost of one ``audit()`` call on the caller's thread, against what a Python
   user would reach for instead: stdlib ``logging`` through a ``QueueHandler``
   and the OpenTelemetry logs SDK with its batch processor. Every call is
   timed on its own with ``perf_counter_ns``; rounds of the contenders are
   interleaved so that machine noise hits all of them alike.
2. Sustained events/s into a Unix socket whose reader (another process) keeps
   up, against writing the same pre-encoded frames raw (the physical limit).
3. Peak RSS growth of a process whose agent stalls (accepts, never reads)
   while a thread calls ``audit()`` flat out: it must track the queue size,
   not the time stalled.

Goals (from the issue): ``audit()`` at most 1/5 of the QueueHandler path per
call; >= 100k events/s and >= 1/3 of raw; RSS bounded by the queue size.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import logging
import logging.handlers
import multiprocessing
import os
import platform
import queue
import socket
import sys
import tempfile
import threading
import time
import uuid
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, Protocol

import psutil
from google.protobuf.internal import api_implementation
from rich.console import Console
from rich.table import Table

from boundary_audit.auditor import DEFAULT_QUEUE_SIZE, AuditEvent, SocketAuditor
from boundary_audit.auditor.chaining import start as start_chain
from boundary_audit.auditor.encoding import Record, encode_records
from boundary_audit.auditor.sender import DEFAULT_REPLAY_WINDOW_BYTES, MAX_PENDING_EVENTS
from boundary_audit.logs import configure_logging
from boundary_audit.wire import MAX_FRAME_SIZE, FrameDecoder, as_envelope, decode_payload
from boundary_audit.wire.spill import SPILL_DIR_ENV

# -- the event every contender records -----------------------------------------

#: A typical allowed request, as the proxy would report it. One fixed event
#: for every contender so that they all carry the same data.
METHOD = "GET"
URL = "https://github.com/boundary-audit/boundary-audit/pull/1234/files?diff=split&w=1"
HOST = "github.com"
RULE = "domain=github.com"
PROCESS_NAME = "claude-code"

# -- sizes of each part (full run, then --quick) ---------------------------------

#: Timed calls per contender per round. Small enough that a round finishes
#: in a few ms (machine noise spreads over all contenders), large enough that
#: the background thread of each contender gets to run inside its round.
CALLS_PER_ROUND = 2_000
#: Rounds of interleaved contenders: 40 x 2000 = 80k samples each, plenty for
#: a stable p99.
ROUNDS = 40
QUICK_ROUNDS = 8
#: Untimed calls per contender before measuring: fills caches, starts the
#: background threads and connects the auditor's socket.
WARMUP_CALLS = 5_000
#: Events per sustained-throughput run: 500k takes a few seconds at the
#: target rate, long enough that start-up and connect are noise.
THROUGHPUT_EVENTS = 500_000
QUICK_THROUGHPUT_EVENTS = 50_000
#: Runs of each throughput contender (alternated); the median is reported.
THROUGHPUT_REPEATS = 3
QUICK_THROUGHPUT_REPEATS = 1
#: How long the agent stalls in part 3 (the issue asks for 30 s).
STALL_SECONDS = 30.0
QUICK_STALL_SECONDS = 3.0
#: Part 3 repeats with a queue this many times larger, to show RSS growth
#: follows the queue size rather than the time stalled.
LARGE_QUEUE_FACTOR = 10

# -- mechanics -------------------------------------------------------------------

#: recv_into buffer of the reader: 1 MiB takes whatever the kernel holds in
#: one call, so the reader is never the bottleneck for lack of buffer.
READ_BUFFER_SIZE = 1 << 20
#: How often the parent samples the stalled child's RSS: 20 Hz catches any
#: growth phase lasting more than a blink, at negligible CPU cost.
RSS_SAMPLE_INTERVAL = 0.05
#: Longest wait for a reader or child to report before the run is failed.
REPORT_TIMEOUT = 300.0
#: Poll interval of the stalled agent's accept loop (so it can be stopped).
ACCEPT_POLL = 0.2
#: close() timeout of auditors whose remaining events we do not care about.
SHORT_CLOSE_TIMEOUT = 0.5
#: Time between pulls of the auditor's counters while waiting for a drain.
DRAIN_POLL = 0.002
#: Percentile reported as the tail.
TAIL_PERCENTILE = 0.99
#: The issue's goals.
GOAL_QUEUEHANDLER_RATIO = 5.0
GOAL_EVENTS_PER_SECOND = 100_000.0
GOAL_RAW_FRACTION = 1 / 3
#: Bytes of one deque slot (a pointer) holding a queued record.
POINTER_SIZE = 8
#: CPython's small-object allocator hands out blocks in multiples of 16 bytes
#: (64-bit builds), so an object takes its size rounded up to that.
ALLOC_ALIGN = 16
#: Width of the printed tables when stdout is not a terminal (rich would
#: otherwise squeeze them into 80 columns and cut the numbers).
PIPE_WIDTH = 170
MIB = 1024 * 1024
NS_PER_S = 1_000_000_000


# == reader / agent processes =====================================================


def _reader_main(
    path: str, mode: str, target_events: int, target_bytes: int, conn: Connection
) -> None:
    """A reader that keeps up: reads into a big buffer and counts.

    ``mode`` "decode" parses every payload with the wire module and counts
    events; "frames" only splits frames and counts bytes (the cheapest reader
    that still checks the stream). Reports once the target is reached (or at
    EOF when there is none), then keeps draining until the writer hangs up.
    """
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(path)
    srv.listen(1)
    conn.send("ready")
    sock, _ = srv.accept()
    decoder = FrameDecoder()
    buf = bytearray(READ_BUFFER_SIZE)
    view = memoryview(buf)
    counts = {"events": 0, "frames": 0, "bytes": 0, "status": 0, "done_ns": 0}
    reported = False
    decode = mode == "decode"
    while True:
        n = sock.recv_into(buf)
        if n == 0:
            break
        counts["bytes"] += n
        for tag, payload in decoder.feed(view[:n]):
            counts["frames"] += 1
            if decode:
                msg = as_envelope(decode_payload(tag, payload))
                if msg.HasField("logs"):
                    counts["events"] += len(msg.logs.logs)
                else:
                    counts["status"] += 1
        if not reported and (
            (target_events and counts["events"] >= target_events)
            or (target_bytes and counts["bytes"] >= target_bytes)
        ):
            counts["done_ns"] = time.monotonic_ns()
            conn.send(dict(counts))
            reported = True
    decoder.eof()
    counts["done_ns"] = counts["done_ns"] or time.monotonic_ns()
    if not reported:
        conn.send(dict(counts))
    sock.close()
    srv.close()


@dataclass
class Reader:
    process: multiprocessing.process.BaseProcess
    conn: Connection

    def result(self) -> dict[str, int]:
        if not self.conn.poll(REPORT_TIMEOUT):
            raise TimeoutError(f"reader did not report within {REPORT_TIMEOUT} s")
        got: dict[str, int] = self.conn.recv()
        return got

    def join(self) -> None:
        self.process.join(REPORT_TIMEOUT)
        if self.process.exitcode != 0:
            raise RuntimeError(f"reader process failed with exit code {self.process.exitcode}")


def start_reader(path: Path, mode: str, target_events: int = 0, target_bytes: int = 0) -> Reader:
    """A reader in its own process (the machine's other core), listening on ``path``."""
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    ctx = multiprocessing.get_context("spawn")
    parent, child = ctx.Pipe()
    proc = ctx.Process(
        target=_reader_main, args=(str(path), mode, target_events, target_bytes, child)
    )
    proc.start()
    if not parent.poll(REPORT_TIMEOUT) or parent.recv() != "ready":
        raise RuntimeError("reader process did not start")
    return Reader(proc, parent)


# == part 1: cost per call ========================================================


class Contender(Protocol):
    name: str

    def run(self, n: int, out: list[int]) -> None:
        """Make ``n`` calls, appending each call's duration (ns) to ``out``."""

    def drain(self) -> None:
        """Wait until the background side caught up, so it does not bleed into the next round."""

    def delivered(self) -> int:
        """Events that reached the far end so far."""

    def close(self) -> None: ...


def timer_overhead(n: int) -> list[int]:
    """Durations of an empty timed region, same loop shape as the contenders."""
    pc = time.perf_counter_ns
    out: list[int] = []
    append = out.append
    for _ in range(n):
        t0 = pc()
        append(pc() - t0)
    return out


class NoopCall:
    """The floor: one Python method call taking the event, doing nothing."""

    name = "no-op method call (floor)"

    def _noop(self, event: AuditEvent) -> int:
        return 0

    def __init__(self, event: AuditEvent) -> None:
        self.event = event
        self.calls = 0

    def run(self, n: int, out: list[int]) -> None:
        pc = time.perf_counter_ns
        append = out.append
        call = self._noop
        ev = self.event
        for _ in range(n):
            t0 = pc()
            call(ev)
            append(pc() - t0)
        self.calls += n

    def drain(self) -> None:
        return None

    def delivered(self) -> int:
        return self.calls

    def close(self) -> None:
        return None


class AuditContender:
    """SocketAuditor.audit() with a prebuilt event, reader keeping up."""

    name = "SocketAuditor.audit()"

    def __init__(self, path: Path, event: AuditEvent, queue_size: int) -> None:
        self.auditor = SocketAuditor(
            path,
            session_id=uuid.uuid4(),
            confined_process_name=PROCESS_NAME,
            queue_size=queue_size,
        )
        self.event = event

    def run(self, n: int, out: list[int]) -> None:
        pc = time.perf_counter_ns
        append = out.append
        audit = self.auditor.audit
        ev = self.event
        for _ in range(n):
            t0 = pc()
            audit(ev)
            append(pc() - t0)

    def drain(self) -> None:
        if not self.auditor.flush(REPORT_TIMEOUT):
            raise RuntimeError("auditor did not drain")

    def delivered(self) -> int:
        return self.auditor.stats.sent

    def close(self) -> None:
        self.auditor.close()


class _CountingStreamHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Formats and writes each record like a real handler, and counts them."""

    def __init__(self, stream: Any) -> None:
        super().__init__(stream)
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        super().emit(record)
        self.count += 1


class _StdlibLoggerContender:
    """Times ``logger.info("request", extra=...)``: what a Python user writes."""

    logger: logging.Logger
    extra: dict[str, object]

    def run(self, n: int, out: list[int]) -> None:
        pc = time.perf_counter_ns
        append = out.append
        info = self.logger.info
        extra = self.extra
        for _ in range(n):
            t0 = pc()
            info("request", extra=extra)
            append(pc() - t0)


class QueueHandlerContender(_StdlibLoggerContender):
    """``logger.info("request", extra=...)`` through QueueHandler -> QueueListener."""

    name = "logging QueueHandler"

    def __init__(self, extra: dict[str, object]) -> None:
        self.extra = extra
        self.devnull = open(os.devnull, "w")  # noqa: SIM115 - closed in close()
        self.sink = _CountingStreamHandler(self.devnull)
        # A formatter that renders the event fields, as an audit log would.
        self.sink.setFormatter(
            logging.Formatter(
                "%(asctime)s %(levelname)s %(message)s method=%(method)s url=%(url)s "
                "host=%(host)s allowed=%(allowed)s rule=%(rule)s"
            )
        )
        self.q: queue.Queue[logging.LogRecord] = queue.Queue()
        self.listener = logging.handlers.QueueListener(self.q, self.sink)
        self.logger = logging.getLogger("bench.queuehandler")
        self.logger.propagate = False
        self.logger.setLevel(logging.INFO)
        self.logger.addHandler(logging.handlers.QueueHandler(self.q))
        self.listener.start()

    def drain(self) -> None:
        self.q.join()

    def delivered(self) -> int:
        return self.sink.count

    def close(self) -> None:
        self.listener.stop()
        self.devnull.close()


def _otel_exporter_class() -> Any:
    from opentelemetry.sdk._logs.export import LogRecordExporter, LogRecordExportResult

    class CountingExporter(LogRecordExporter):
        """Exports nowhere (the cheapest possible exporter) and counts records."""

        def __init__(self) -> None:
            self.count = 0

        def export(self, batch: Sequence[Any]) -> Any:
            self.count += len(batch)
            return LogRecordExportResult.SUCCESS

        def shutdown(self) -> None:
            return None

        def force_flush(self, timeout_millis: int = 0) -> bool:
            return True

    return CountingExporter


class _OtelPipeline:
    """LoggerProvider + BatchLogRecordProcessor (SDK defaults) + counting exporter."""

    def __init__(self) -> None:
        from opentelemetry.sdk._logs import LoggerProvider
        from opentelemetry.sdk._logs.export import BatchLogRecordProcessor

        self.exporter = _otel_exporter_class()()
        self.provider = LoggerProvider()
        self.provider.add_log_record_processor(BatchLogRecordProcessor(self.exporter))

    def drain(self) -> None:
        self.provider.force_flush()

    def delivered(self) -> int:
        count: int = self.exporter.count
        return count

    def close(self) -> None:
        self.provider.shutdown()


class _OnOtelPipeline:
    """A contender whose records go through an :class:`_OtelPipeline`."""

    pipeline: _OtelPipeline

    def drain(self) -> None:
        self.pipeline.drain()

    def delivered(self) -> int:
        return self.pipeline.delivered()

    def close(self) -> None:
        self.pipeline.close()


class OtelHandlerContender(_OnOtelPipeline, _StdlibLoggerContender):
    """What a Python user does: stdlib logger with OTel's LoggingHandler."""

    name = "OTel LoggingHandler (stdlib logger)"

    def __init__(self, extra: dict[str, object]) -> None:
        from opentelemetry.sdk._logs import LoggingHandler

        self.extra = extra
        self.pipeline = _OtelPipeline()
        with warnings.catch_warnings():
            # Deprecated in favour of a contrib package that is not installed;
            # it is still what the SDK ships and documents.
            warnings.simplefilter("ignore", DeprecationWarning)
            handler = LoggingHandler(level=logging.INFO, logger_provider=self.pipeline.provider)
        self.logger = logging.getLogger("bench.otel")
        self.logger.propagate = False
        self.logger.setLevel(logging.INFO)
        self.logger.addHandler(handler)


class OtelEmitContender(_OnOtelPipeline):
    """OTel's own logs API: ``Logger.emit(body=..., attributes=...)``."""

    name = "OTel Logger.emit()"

    def __init__(self, extra: dict[str, object]) -> None:
        from opentelemetry._logs import SeverityNumber

        # OTel's attribute values are a closed union; these are all str/bool.
        self.attributes: dict[str, Any] = dict(extra)
        self.severity = SeverityNumber.INFO
        self.pipeline = _OtelPipeline()
        self.logger = self.pipeline.provider.get_logger("bench.otel.emit")

    def run(self, n: int, out: list[int]) -> None:
        pc = time.perf_counter_ns
        append = out.append
        emit = self.logger.emit
        attrs = self.attributes
        sev = self.severity
        for _ in range(n):
            t0 = pc()
            emit(body="request", severity_number=sev, attributes=attrs)
            append(pc() - t0)


def percentile(sorted_values: Sequence[int], q: float) -> int:
    return sorted_values[min(len(sorted_values) - 1, int(q * (len(sorted_values) - 1)))]


@dataclass
class CallStats:
    name: str
    median: float
    p99: float
    mean: float
    samples: int
    delivered: int


def summarise(name: str, raw: list[int], overhead: int, delivered: int) -> CallStats:
    values = sorted(max(0, v - overhead) for v in raw)
    return CallStats(
        name=name,
        median=percentile(values, 0.5),
        p99=percentile(values, TAIL_PERCENTILE),
        mean=sum(values) / len(values),
        samples=len(values),
        delivered=delivered,
    )


def bench_per_call(console: Console, workdir: Path, rounds: int) -> None:
    event = AuditEvent(METHOD, URL, HOST, True, RULE)
    extra: dict[str, object] = {
        "method": METHOD,
        "url": URL,
        "host": HOST,
        "allowed": True,
        "rule": RULE,
    }
    total_calls = WARMUP_CALLS + rounds * CALLS_PER_ROUND
    path = workdir / "per-call.sock"
    reader = start_reader(path, "frames")
    contenders: list[Contender] = [
        NoopCall(event),
        # Room for every call: nothing may drop while measuring.
        AuditContender(path, event, queue_size=total_calls),
        QueueHandlerContender(extra),
        OtelHandlerContender(extra),
        OtelEmitContender(extra),
    ]
    samples: dict[str, list[int]] = {c.name: [] for c in contenders}
    try:
        for c in contenders:
            c.run(WARMUP_CALLS, [])
            c.drain()
        overhead_samples = sorted(timer_overhead(rounds * CALLS_PER_ROUND))
        overhead = percentile(overhead_samples, 0.5)
        for r in range(rounds):
            # Rotate the order so no contender always follows the same one.
            order = contenders[r % len(contenders) :] + contenders[: r % len(contenders)]
            for c in order:
                gc.collect()
                c.run(CALLS_PER_ROUND, samples[c.name])
                c.drain()
        results = [summarise(c.name, samples[c.name], overhead, c.delivered()) for c in contenders]
    finally:
        for c in contenders:
            c.close()
    got = reader.result()
    reader.join()

    by_name = {s.name: s for s in results}
    audit = by_name[AuditContender.name]
    table = Table(
        title=(
            f"1. Cost per call on the caller's thread ({rounds} interleaved rounds x "
            f"{CALLS_PER_ROUND} calls, timer overhead {overhead} ns subtracted)"
        )
    )
    for col in ("contender", "median ns", "p99 ns", "mean ns", "median / audit()", "delivered"):
        table.add_column(col, justify="left" if col == "contender" else "right")
    for s in results:
        ratio = "-" if s is audit else f"{s.median / max(audit.median, 1):.2g}x"
        table.add_row(
            s.name,
            f"{s.median:.0f}",
            f"{s.p99:.0f}",
            f"{s.mean:.0f}",
            ratio,
            f"{s.delivered:,}",
        )
    console.print(table)
    qh = by_name[QueueHandlerContender.name]
    qh_ratio = qh.median / max(audit.median, 1)
    verdict = "met" if qh_ratio >= GOAL_QUEUEHANDLER_RATIO else "MISSED"
    console.print(
        f"timer overhead (median of {len(overhead_samples):,} empty timed regions): "
        f"{overhead} ns, p99 {percentile(overhead_samples, TAIL_PERCENTILE)} ns\n"
        f"goal audit() <= 1/{GOAL_QUEUEHANDLER_RATIO:.0f} of QueueHandler: "
        f"QueueHandler / audit() = {qh_ratio:.1f}x (median), "
        f"{qh.p99 / max(audit.p99, 1):.1f}x (p99) -> {verdict}\n"
        f"auditor: drops {audit_drops(contenders)}, reader received "
        f"{got['frames']:,} frames, {got['bytes']:,} bytes"
    )


def audit_drops(contenders: Sequence[Contender]) -> int:
    for c in contenders:
        if isinstance(c, AuditContender):
            return c.auditor.stats.dropped_total
    return 0


# == part 2: sustained throughput =================================================


@dataclass
class Throughput:
    name: str
    events: int
    seconds: float
    frames: int
    nbytes: int
    drops: int
    producer_seconds: float

    @property
    def rate(self) -> float:
        return self.events / self.seconds


def session_records(session: str, n: int) -> list[Record]:
    base = time.time_ns()
    return [Record(session, i, base + i, METHOD, URL, True, RULE) for i in range(n)]


def run_raw(path: Path, frames: list[bytes], n: int, decode: bool) -> Throughput:
    total = sum(len(f) for f in frames)
    mode = "decode" if decode else "frames"
    reader = start_reader(path, mode, target_events=n if decode else 0, target_bytes=total)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    t0 = time.monotonic_ns()
    sock.connect(str(path))
    send = sock.sendall
    for f in frames:
        send(f)
    t_prod = time.monotonic_ns()
    got = reader.result()
    sock.close()
    reader.join()
    name = "raw pre-encoded frames, reader " + ("decodes" if decode else "counts bytes")
    return Throughput(
        name, n, (got["done_ns"] - t0) / NS_PER_S, len(frames), total, 0, (t_prod - t0) / NS_PER_S
    )


def run_auditor(path: Path, n: int) -> Throughput:
    reader = start_reader(path, "decode", target_events=n)
    event = AuditEvent(METHOD, URL, HOST, True, RULE)
    auditor = SocketAuditor(
        path,
        session_id=uuid.uuid4(),
        confined_process_name=PROCESS_NAME,
        # Room for the whole run, so the figure is delivery, never dropping.
        queue_size=n,
    )
    audit = auditor.audit
    t0 = time.monotonic_ns()
    for _ in range(n):
        audit(event)
    t_prod = time.monotonic_ns()
    got = reader.result()
    stats = auditor.stats
    auditor.close()
    reader.join()
    if stats.dropped_total or got["events"] != n:
        raise RuntimeError(
            f"auditor run lost events: dropped {stats.dropped}, reader got {got['events']} of {n}"
        )
    return Throughput(
        "SocketAuditor.audit(), reader decodes",
        n,
        (got["done_ns"] - t0) / NS_PER_S,
        stats.frames_sent,
        stats.bytes_sent,
        stats.dropped_total,
        (t_prod - t0) / NS_PER_S,
    )


def bench_throughput(console: Console, workdir: Path, n: int, repeats: int) -> None:
    session = str(uuid.uuid4())
    records = session_records(session, n)
    t0 = time.perf_counter_ns()
    frames = [enc.frame for enc in encode_records(records, PROCESS_NAME)]
    encode_rate = n / ((time.perf_counter_ns() - t0) / NS_PER_S)
    # What the sender thread really does: every event hash-chained too.
    t0 = time.perf_counter_ns()
    for _ in encode_records(records, PROCESS_NAME, chain=start_chain(session)):
        pass
    chained_rate = n / ((time.perf_counter_ns() - t0) / NS_PER_S)
    del records
    runs: dict[str, list[Throughput]] = {}
    contenders: list[Callable[[Path], Throughput]] = [
        lambda p: run_raw(p, frames, n, decode=False),
        lambda p: run_raw(p, frames, n, decode=True),
        lambda p: run_auditor(p, n),
    ]
    for r in range(repeats):
        for i, run in enumerate(contenders):
            gc.collect()
            res = run(workdir / f"tp-{r}-{i}.sock")
            runs.setdefault(res.name, []).append(res)

    def median_run(rs: list[Throughput]) -> Throughput:
        return sorted(rs, key=lambda t: t.rate)[len(rs) // 2]

    medians = {name: median_run(rs) for name, rs in runs.items()}
    raw = medians["raw pre-encoded frames, reader counts bytes"]
    table = Table(
        title=f"2. Sustained throughput into a Unix socket ({n:,} events, median of {repeats})"
    )
    for col in (
        "sender",
        "events/s",
        "min..max events/s",
        "vs raw",
        "MB/s",
        "avg frame B",
        "producer loop events/s",
        "drops",
    ):
        table.add_column(col, justify="left" if col == "sender" else "right")
    for name, m in medians.items():
        rates = [t.rate for t in runs[name]]
        table.add_row(
            name,
            f"{m.rate:,.0f}",
            f"{min(rates):,.0f}..{max(rates):,.0f}",
            f"{m.rate / raw.rate:.2f}",
            f"{m.nbytes / m.seconds / MIB:.1f}",
            f"{m.nbytes / max(m.frames, 1):,.0f}",
            f"{m.events / m.producer_seconds:,.0f}",
            str(m.drops),
        )
    console.print(table)
    aud = medians["SocketAuditor.audit(), reader decodes"]
    ok = aud.rate >= GOAL_EVENTS_PER_SECOND and aud.rate / raw.rate >= GOAL_RAW_FRACTION
    console.print(
        f"goal >= {GOAL_EVENTS_PER_SECOND:,.0f} events/s and >= 1/3 of raw: "
        f"{aud.rate:,.0f} events/s, {aud.rate / raw.rate:.2f} of raw -> "
        f"{'met' if ok else 'MISSED'} (time = first audit() to reader holding all events; "
        f"drops 0 asserted)\n"
        f"sender CPU ceiling: encode_records() alone, one thread, no I/O: "
        f"{encode_rate:,.0f} events/s ({encode_rate / raw.rate:.2f} of raw); "
        f"with the hash chain (as the sender runs it): {chained_rate:,.0f} events/s"
    )


# == part 3: RSS with a stalled agent =============================================


class StalledAgent:
    """Accepts every connection and never reads from it."""

    def __init__(self, path: Path) -> None:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        self.srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.srv.bind(str(path))
        self.srv.listen(16)
        self.srv.settimeout(ACCEPT_POLL)
        self.conns: list[socket.socket] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self) -> None:
        while not self.stop.is_set():
            with contextlib.suppress(TimeoutError):
                sock, _ = self.srv.accept()
                self.conns.append(sock)

    def close(self) -> None:
        self.stop.set()
        self.thread.join()
        for s in self.conns:
            s.close()
        self.srv.close()


def vm_hwm_bytes() -> int:
    """Peak RSS of this process image, from /proc (Linux)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def _stall_child(path: str, queue_size: int, seconds: float, conn: Connection) -> None:
    """Full load against a stalled agent; reports counters and its own RSS."""
    configure_logging("warning")
    proc = psutil.Process()
    gc.collect()
    conn.send(("baseline", proc.memory_info().rss))
    auditor = SocketAuditor(
        path,
        session_id=uuid.uuid4(),
        confined_process_name=PROCESS_NAME,
        queue_size=queue_size,
        close_timeout=SHORT_CLOSE_TIMEOUT,
    )
    stop = threading.Event()
    calls = [0]

    def produce() -> None:
        audit = auditor.audit
        i = 0
        while not stop.is_set():
            # A fresh URL per event, as in real traffic: the queue then holds
            # distinct strings, so the memory bound is the honest one.
            for _ in range(256):
                audit(AuditEvent(METHOD, f"{URL}&n={i}", HOST, True, RULE))
                i += 1
        calls[0] = i

    producer = threading.Thread(target=produce)
    producer.start()
    time.sleep(seconds)
    stop.set()
    producer.join()
    stats = auditor.stats
    conn.send(
        (
            "done",
            {
                "calls": calls[0],
                "queued": stats.queued,
                "sent": stats.sent,
                "dropped": stats.dropped_total,
                "pending": stats.pending,
                "write_errors": stats.write_errors,
                "connects": stats.connects,
                "rss_end": proc.memory_info().rss,
                # The kernel's high-water mark of this process image: the true
                # peak, between the parent's samples too. (Not ru_maxrss: Linux
                # carries that over from the parent across fork and exec.)
                "maxrss": vm_hwm_bytes(),
            },
        )
    )
    auditor.close(SHORT_CLOSE_TIMEOUT)


@dataclass
class StallResult:
    queue_size: int
    baseline: int
    timeline: list[tuple[float, int]]
    done: dict[str, int]

    def growth_at(self, fraction: float, seconds: float) -> int:
        t = fraction * seconds
        best = self.timeline[0]
        for point in self.timeline:
            if point[0] <= t:
                best = point
        return best[1] - self.baseline

    @property
    def peak_growth(self) -> int:
        return max(rss for _, rss in self.timeline) - self.baseline


def run_stall(workdir: Path, queue_size: int, seconds: float) -> StallResult:
    path = workdir / f"stall-{queue_size}.sock"
    agent = StalledAgent(path)
    ctx = multiprocessing.get_context("spawn")
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=_stall_child, args=(str(path), queue_size, seconds, child))
    proc.start()
    try:
        if not parent.poll(REPORT_TIMEOUT):
            raise TimeoutError("stall child did not start")
        kind, baseline = parent.recv()
        assert kind == "baseline"
        watched = psutil.Process(proc.pid)
        start = time.monotonic()
        timeline: list[tuple[float, int]] = []
        while not parent.poll(RSS_SAMPLE_INTERVAL):
            timeline.append((time.monotonic() - start, watched.memory_info().rss))
            if time.monotonic() - start > seconds + REPORT_TIMEOUT:
                raise TimeoutError("stall child did not finish")
        kind, done = parent.recv()
        assert kind == "done"
        timeline.append((time.monotonic() - start, done["rss_end"]))
        timeline.append((time.monotonic() - start, done["maxrss"]))
        proc.join(REPORT_TIMEOUT)
    finally:
        if proc.is_alive():
            proc.kill()
        agent.close()
    return StallResult(queue_size, baseline, timeline, done)


def _allocated(size: int) -> int:
    return -(-size // ALLOC_ALIGN) * ALLOC_ALIGN


def queued_record_bytes() -> int:
    """Memory one queued event holds: its record, fresh ints, its URL, a deque slot."""
    url = f"{URL}&n={10**6}"
    rec = Record(str(uuid.uuid4()), 10**6, time.time_ns(), METHOD, url, True, RULE)
    objects = (rec, rec.sequence_number, rec.time_ns, url)
    return sum(_allocated(sys.getsizeof(o)) for o in objects) + POINTER_SIZE


def bench_stall(console: Console, workdir: Path, seconds: float) -> None:
    per_event = queued_record_bytes()
    table = Table(
        title=(
            f"3. RSS growth, agent stalled {seconds:g} s under full audit() load "
            f"(child process; ~{per_event} B per queued event)"
        )
    )
    for col in (
        "queue size",
        "RSS before",
        "growth @25%",
        "growth @50%",
        "growth @end",
        "peak growth",
        "implied bound",
        "peak / bound",
        "audit() calls",
        "queued",
        "sent",
        "dropped",
        "reconnects",
    ):
        table.add_column(col, justify="right")
    for size in (DEFAULT_QUEUE_SIZE, DEFAULT_QUEUE_SIZE * LARGE_QUEUE_FACTOR):
        res = run_stall(workdir, size, seconds)
        # Queue plus the sender's batch, plus what the sender may hold as
        # encoded frames: the replay window and one frame in flight.
        bound = (
            (size + MAX_PENDING_EVENTS) * per_event + DEFAULT_REPLAY_WINDOW_BYTES + MAX_FRAME_SIZE
        )
        d = res.done
        table.add_row(
            f"{size:,}",
            f"{res.baseline / MIB:.1f} MiB",
            f"{res.growth_at(0.25, seconds) / MIB:.1f} MiB",
            f"{res.growth_at(0.5, seconds) / MIB:.1f} MiB",
            f"{(d['rss_end'] - res.baseline) / MIB:.1f} MiB",
            f"{res.peak_growth / MIB:.1f} MiB",
            f"{bound / MIB:.1f} MiB",
            f"{res.peak_growth / bound:.2f}",
            f"{d['calls']:,}",
            f"{d['queued']:,}",
            f"{d['sent']:,}",
            f"{d['dropped']:,}",
            f"{max(0, d['connects'] - 1)}",
        )
    console.print(table)
    console.print(
        "implied bound = (queue size + MAX_PENDING_EVENTS "
        f"{MAX_PENDING_EVENTS}) x bytes per queued event + replay window "
        f"{DEFAULT_REPLAY_WINDOW_BYTES // MIB} MiB + one frame; "
        "peak = max of 20 Hz samples and the child's VmHWM"
    )


# == driver =======================================================================


def machine_info(console: Console) -> None:
    load = os.getloadavg()
    console.print(
        f"machine: {platform.platform()}, cpu_count {os.cpu_count()}, "
        f"usable cpus {len(os.sched_getaffinity(0))}, load avg {load[0]:.2f} {load[1]:.2f} "
        f"{load[2]:.2f}\npython {platform.python_version()} ({platform.python_implementation()}), "
        f"protobuf backend {api_implementation.Type()}, "
        f"GIL switch interval {sys.getswitchinterval() * 1000:g} ms"
    )


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--quick", action="store_true", help="smaller runs (a smoke test)")
    p.add_argument(
        "--stall-seconds",
        type=float,
        default=None,
        help=f"how long the agent stalls in part 3 (default {STALL_SECONDS:g}, "
        f"--quick {QUICK_STALL_SECONDS:g})",
    )
    p.add_argument("--rounds", type=int, default=None, help="interleaved rounds in part 1")
    p.add_argument("--events", type=int, default=None, help="events per run in part 2")
    p.add_argument("--repeats", type=int, default=None, help="runs per sender in part 2")
    p.add_argument(
        "--parts",
        default="1,2,3",
        help="comma-separated parts to run (1 per call, 2 throughput, 3 stalled RSS)",
    )
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    quick: bool = args.quick
    rounds = args.rounds or (QUICK_ROUNDS if quick else ROUNDS)
    events = args.events or (QUICK_THROUGHPUT_EVENTS if quick else THROUGHPUT_EVENTS)
    repeats = args.repeats or (QUICK_THROUGHPUT_REPEATS if quick else THROUGHPUT_REPEATS)
    stall = args.stall_seconds or (QUICK_STALL_SECONDS if quick else STALL_SECONDS)
    parts = {p.strip() for p in str(args.parts).split(",")}
    # Warnings from the auditor (a stalled agent, drops) go to stderr as JSON.
    configure_logging("warning")
    console = Console()
    if not console.is_terminal:
        console = Console(width=PIPE_WIDTH)
    machine_info(console)
    with tempfile.TemporaryDirectory(prefix="bench-auditor-") as tmp:
        workdir = Path(tmp)
        # What auditors spill at close (the stalled agent's tail) stays in
        # the work dir, never in the user's state dir; children inherit it.
        os.environ[SPILL_DIR_ENV] = str(workdir / "spill")
        if "1" in parts:
            bench_per_call(console, workdir, rounds)
        if "2" in parts:
            bench_throughput(console, workdir, events, repeats)
        if "3" in parts:
            bench_stall(console, workdir, stall)
    return 0


if __name__ == "__main__":
    sys.exit(main())

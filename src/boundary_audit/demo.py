"""``boundary-audit demo``: the wire protocol and SocketAuditor, end to end.

Starts a receiver on a private Unix socket (built on the same ``wire``
module the agent uses), sends a mix of allowed and denied events through a
real SocketAuditor, and prints what arrived. It shows the boundary side
working on its own before an agent and collector are running.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import threading
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from .auditor import AuditEvent, SocketAuditor
from .wire import BoundaryMessage, ProtocolError, UndecodablePayloadError, aio, as_envelope

#: Requests the demo pretends a confined coding agent made: (method, url, allowed by).
SAMPLE_REQUESTS: tuple[tuple[str, str, str | None], ...] = (
    ("GET", "https://github.com/coder/coder.git/info/refs", "domain=github.com"),
    ("GET", "https://api.github.com/repos/coder/coder", "domain=*.github.com"),
    ("POST", "https://pastebin.example/api/paste", None),
    ("GET", "https://pypi.example/simple/requests/", "domain=pypi.example"),
    ("GET", "http://169.254.169.254/latest/meta-data/", None),
    ("PUT", "https://github.com/coder/coder/issues/1", None),
)


class _DemoReceiver:
    """asyncio Unix-socket server in a background thread, collecting messages."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.messages: list[BoundaryMessage] = []
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._server = self._loop.run_until_complete(
            asyncio.start_unix_server(self._handle, str(self.path))
        )
        self._ready.set()
        self._loop.run_forever()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                try:
                    self.messages.append(as_envelope(await aio.read_message(reader)))
                except UndecodablePayloadError:
                    continue
        except (EOFError, ProtocolError, ConnectionError):
            pass
        finally:
            writer.close()

    def __enter__(self) -> _DemoReceiver:
        self._thread.start()
        self._ready.wait()
        return self

    def __exit__(self, *exc: object) -> None:
        self._loop.call_soon_threadsafe(self._server.close)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)


def run_demo(rounds: int, console: Console) -> int:
    with tempfile.TemporaryDirectory(prefix="boundary-audit-demo-") as tmp:
        path = Path(tmp) / "agent.sock"
        with _DemoReceiver(path) as receiver:
            session = uuid.uuid4()
            with SocketAuditor(path, session_id=session, confined_process_name="demo") as auditor:
                for _ in range(rounds):
                    for method, url, rule in SAMPLE_REQUESTS:
                        host = url.split("/")[2]
                        auditor.audit(AuditEvent(method, url, host, rule is not None, rule))
            stats = auditor.stats
            deadline = 5.0
            waited = 0.0
            while (
                waited < deadline
                and sum(len(m.logs.logs) for m in receiver.messages if m.HasField("logs"))
                < stats.sent
            ):
                threading.Event().wait(0.01)
                waited += 0.01
        table = Table(title=f"Received by the socket receiver - session {session}")
        for col in ("seq", "time", "decision", "method", "url", "matched rule"):
            table.add_column(col, overflow="fold")
        rows: list[tuple[Any, ...]] = []
        for msg in receiver.messages:
            if not msg.HasField("logs"):
                continue
            for log in msg.logs.logs:
                when = datetime.fromtimestamp(log.time.seconds + log.time.nanos / 1e9, UTC)
                rows.append(
                    (
                        str(log.sequence_number),
                        when.strftime("%H:%M:%S.%f")[:-3],
                        "[green]allow[/]" if log.allowed else "[red]deny[/]",
                        log.http_request.method,
                        log.http_request.url,
                        log.http_request.matched_rule or "-",
                    )
                )
        for row in rows:
            table.add_row(*row)
        console.print(table)
        console.print(
            f"frames: {stats.frames_sent}  events sent: {stats.sent}  received: {len(rows)}  "
            f"dropped: {stats.dropped_total}  undelivered: {stats.undelivered}"
        )
        return 0 if len(rows) == stats.sent == stats.queued else 1


def _handler(args: argparse.Namespace) -> int:
    return run_demo(args.rounds, Console())


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="send sample audit events through a real socket and print what arrived",
        description=__doc__,
    )
    parser.add_argument("--rounds", type=int, default=2, help="times to send the sample requests")
    parser.set_defaults(func=_handler)

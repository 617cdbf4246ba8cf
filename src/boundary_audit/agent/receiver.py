"""The Unix-socket side: accepting senders and reading their frames.

The socket file itself (lock, permissions, stale files) is
:mod:`~boundary_audit.agent.socketfile`'s; what a frame means is decided by
:mod:`~boundary_audit.agent.frames`. This module does the reading: one task
per connection, bounded by the connection cap, the allowed uids, the stall
timeout for half-sent frames and the writer's back-pressure.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import socket
import struct
import time
from dataclasses import dataclass, field
from typing import Any

from ..logs import get_logger
from ..wire import DropReason, DropSource, FrameDecoder, ProtocolError, Tag, TruncatedFrameError
from .config import READ_CHUNK_BYTES, AgentConfig
from .frames import BadFrame, LogsFrame, StallTimer, StatusFrame, interpret_frame
from .metrics import AgentMetrics
from .writer import SpoolWriter

#: Undecodable payloads logged per connection before the rest are only
#: counted (and summed up when it closes), so one bad sender cannot flood logs.
MAX_BAD_FRAME_WARNINGS = 3
#: At most one warning per this many seconds about refused connections, so
#: a connection flood cannot turn into a log flood (every one is counted).
REJECT_LOG_INTERVAL = 5.0
#: Pause after a failed accept (e.g. out of file descriptors) before the next,
#: so the loop does not spin while connections already open keep being served.
ACCEPT_RETRY_DELAY = 0.1
#: Size of ``struct ucred`` (pid, uid, gid as C ints) for SO_PEERCRED.
_UCRED = struct.Struct("3i")


@dataclass(frozen=True, slots=True)
class PeerCredentials:
    pid: int | None
    uid: int | None
    gid: int | None


def peer_credentials(sock: Any) -> PeerCredentials:
    """SO_PEERCRED of a connected Unix socket (Linux); all None where unsupported."""
    opt = getattr(socket, "SO_PEERCRED", None)
    if opt is None or sock is None:
        return PeerCredentials(None, None, None)
    try:
        pid, uid, gid = _UCRED.unpack(sock.getsockopt(socket.SOL_SOCKET, opt, _UCRED.size))
    except OSError:
        return PeerCredentials(None, None, None)
    return PeerCredentials(pid, uid, gid)


@dataclass(eq=False)
class _Connection:
    id: int
    peer: PeerCredentials
    writer: asyncio.StreamWriter
    last_session: str | None = None
    frames: int = 0
    events: int = 0
    bad_frames: int = 0
    log: Any = field(default=None)


class Receiver:
    """Accepts sender connections and hands decoded batches to the spool writer."""

    def __init__(self, config: AgentConfig, metrics: AgentMetrics, writer: SpoolWriter) -> None:
        self._config = config
        self._metrics = metrics
        self._writer = writer
        self._log = get_logger("agent", socket=str(config.socket_path))
        self._listener: socket.socket | None = None
        self._accept_task: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._draining = False
        self._connections: dict[int, _Connection] = {}
        self._ids = itertools.count(1)
        self._last_reject_log = 0.0
        self._unlogged_rejects = 0
        self._frames_by_tag = {int(t): metrics.frames_received.labels(str(int(t))) for t in Tag}
        self._bad_frame = metrics.dropped_frames.labels(DropReason.BAD_FRAME)

    @property
    def connection_count(self) -> int:
        return len(self._connections)

    async def start(self, sock: socket.socket) -> None:
        self._listener = sock
        self._accept_task = asyncio.create_task(self._accept_loop(), name="agent-accept")

    async def _accept_loop(self) -> None:
        """Accept connections ourselves, so every accepted one is tracked at once.

        (asyncio's own server hands a connection to its callback a few loop
        turns after accepting it; a shutdown in between would lose it.)
        """
        assert self._listener is not None
        loop = asyncio.get_running_loop()
        while True:
            try:
                accepted, _ = await loop.sock_accept(self._listener)
            except OSError as exc:
                # Out of file descriptors and the like: wait, keep serving others.
                self._metrics.errors.labels("accept").inc()
                self._log.error("accept failed", error=str(exc), retry_in_s=ACCEPT_RETRY_DELAY)
                await asyncio.sleep(ACCEPT_RETRY_DELAY)
                continue
            self._spawn(accepted)

    def _spawn(self, accepted: socket.socket) -> None:
        task = asyncio.create_task(self._serve(accepted))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _serve(self, accepted: socket.socket) -> None:
        reader, writer = await asyncio.open_unix_connection(sock=accepted, limit=READ_CHUNK_BYTES)
        await self._handle(reader, writer)

    async def stop_accepting(self) -> None:
        """Stop accepting, but first take the connections waiting in the backlog.

        A sender whose connect() succeeded may already have written frames
        that wait, unaccepted, in the listen queue; closing the listener
        would discard them. The caller removes the socket path first, so no
        new connection can arrive while this empties the queue.
        """
        if self._accept_task is not None:
            self._accept_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._accept_task
            self._accept_task = None
        if self._listener is None:
            return
        self._draining = True
        try:
            while True:
                try:
                    accepted, _ = self._listener.accept()
                except (BlockingIOError, InterruptedError):
                    break
                self._spawn(accepted)
        finally:
            self._listener.close()
            self._listener = None

    async def drain(self, grace: float) -> int:
        """Read what open connections already sent, then close them.

        Shutting down the read side makes each reader see end-of-stream once
        it has consumed what is buffered, while further writes by the sender
        fail (so it keeps those events for its next connection). Returns the
        number of connections that had to be cut off at the timeout.
        """
        self._draining = True
        for conn in list(self._connections.values()):
            self._shut_read(conn.writer)
        tasks = set(self._tasks)
        if not tasks:
            return 0
        _, pending = await asyncio.wait(tasks, timeout=grace)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending)
            self._log.warning(
                "shutdown: connections still sending at the drain timeout were cut off",
                connections=len(pending),
                grace_s=grace,
            )
        return len(pending)

    @staticmethod
    def _shut_read(writer: asyncio.StreamWriter) -> None:
        sock = writer.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RD)

    def _reject(self, writer: asyncio.StreamWriter, reason: str, **context: Any) -> None:
        self._metrics.connections_rejected.labels(reason).inc()
        writer.close()
        now = time.monotonic()
        if now - self._last_reject_log >= REJECT_LOG_INTERVAL:
            self._log.warning(
                "sender connection refused",
                reason=reason,
                also_refused_since_last_warning=self._unlogged_rejects,
                **context,
            )
            self._last_reject_log = now
            self._unlogged_rejects = 0
        else:
            self._unlogged_rejects += 1

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = peer_credentials(writer.get_extra_info("socket"))
        if len(self._connections) >= self._config.max_connections:
            self._reject(writer, "too_many", limit=self._config.max_connections, peer_pid=peer.pid)
            return
        allowed = self._config.allowed_uids
        if allowed is not None and peer.uid not in allowed:
            self._reject(writer, "uid_not_allowed", peer_uid=peer.uid, peer_pid=peer.pid)
            return
        conn = _Connection(next(self._ids), peer, writer)
        conn.log = self._log.bind(
            conn=conn.id, peer_pid=peer.pid, peer_uid=peer.uid, peer_gid=peer.gid
        )
        self._connections[conn.id] = conn
        if self._draining:
            self._shut_read(writer)
        self._metrics.connections.inc()
        self._metrics.connections_current.inc()
        conn.log.info("sender connected")
        reason = "eof"
        try:
            reason = await self._read_loop(conn, reader)
        except (ConnectionResetError, BrokenPipeError) as exc:
            reason = "reset"
            conn.log.info("sender connection reset", error=str(exc))
        except asyncio.CancelledError:
            reason = "shutdown"
            raise
        finally:
            del self._connections[conn.id]
            self._metrics.connections_current.dec()
            self._metrics.connections_closed.labels(reason).inc()
            writer.close()
            conn.log.info(
                "sender disconnected",
                reason=reason,
                frames=conn.frames,
                events=conn.events,
                bad_frames=conn.bad_frames,
            )

    async def _read_loop(self, conn: _Connection, reader: asyncio.StreamReader) -> str:
        decoder = FrameDecoder()
        idle = self._config.idle_timeout
        stall = StallTimer(idle)
        writer = self._writer
        loop = asyncio.get_running_loop()
        while True:
            try:
                async with asyncio.timeout_at(stall.deadline(decoder.mid_frame, loop.time())):
                    data = await reader.read(READ_CHUNK_BYTES)
            except TimeoutError:
                self._count_bad_frame(conn)
                conn.log.warning(
                    "sender stalled inside a frame; closing its connection",
                    buffered_bytes=decoder.buffered,
                    idle_timeout_s=idle,
                )
                return "idle_timeout"
            if not data:
                try:
                    decoder.eof()
                except TruncatedFrameError as exc:
                    self._count_bad_frame(conn)
                    conn.log.warning("sender closed inside a frame", error=str(exc))
                    return "truncated"
                return "eof"
            try:
                frames = decoder.feed(data)
            except ProtocolError as exc:
                self._count_bad_frame(conn)
                conn.log.warning(
                    "protocol error from sender; closing its connection", error=str(exc)
                )
                return "protocol_error"
            if frames:
                stall.frame_completed()
            for tag, payload in frames:
                self._on_frame(conn, tag, payload)
            if decoder.error is not None:
                # Whole frames before the bad header were kept above.
                self._count_bad_frame(conn)
                conn.log.warning(
                    "protocol error from sender; closing its connection",
                    error=str(decoder.error),
                )
                return "protocol_error"
            await writer.wait_for_room()

    def _on_frame(self, conn: _Connection, tag: int, payload: bytes) -> None:
        conn.frames += 1
        self._frames_by_tag[tag].inc()
        meaning = interpret_frame(tag, payload)
        if isinstance(meaning, LogsFrame):
            conn.last_session = meaning.session_id
            if meaning.batch is not None:
                self._writer.submit(meaning.batch)
                conn.events += meaning.batch.events
                self._metrics.events_received.inc(meaning.batch.events)
        elif isinstance(meaning, StatusFrame):
            self._on_status(conn, meaning)
        else:
            self._bad_frame_seen(conn, meaning)

    def _on_status(self, conn: _Connection, status: StatusFrame) -> None:
        """Count what the sender dropped, attributed to its connection's last session."""
        session = conn.last_session or ""
        for reason, n in status.dropped.items():
            if n:
                self._metrics.dropped_events.labels(reason).inc(n)
                self._writer.record_drop(DropSource.BOUNDARY, session, reason, n)
        if any(status.dropped.values()):
            conn.log.warning(
                "sender reports events it dropped before reaching the agent",
                session_id=session or None,
                **{str(reason): n for reason, n in status.dropped.items()},
            )

    def _count_bad_frame(self, conn: _Connection) -> None:
        """Metric and the connection's own tally, so its closing line says why it ended."""
        conn.bad_frames += 1
        self._bad_frame.inc()

    def _bad_frame_seen(self, conn: _Connection, bad: BadFrame) -> None:
        self._count_bad_frame(conn)
        if conn.bad_frames <= MAX_BAD_FRAME_WARNINGS:
            conn.log.warning(
                "skipping a frame that does not decode",
                error=bad.why,
                further_ones_only_counted=conn.bad_frames == MAX_BAD_FRAME_WARNINGS,
            )

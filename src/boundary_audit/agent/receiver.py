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
import os
import socket
import time
from dataclasses import dataclass, field
from typing import Any

from ..logs import get_logger
from ..wire import DropReason, DropSource, FrameDecoder, ProtocolError, Tag, TruncatedFrameError
from .acks import AckBook
from .config import READ_CHUNK_BYTES, AgentConfig
from .deadletter import DeadLetterFile, EvidenceLimiter, refused_frame_line
from .frames import (
    BadFrame,
    LogsFrame,
    StallTimer,
    StatusFrame,
    ack_frame,
    interpret_frame,
    session_record,
)
from .metrics import AgentMetrics
from .sessions import PeerCounts, PeerCredentials, SessionOwners, peer_credentials
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
#: An ack is skipped (a later one covers it) while this much already waits
#: unsent on the connection: a sender that asked for acks but never reads
#: them cannot make the agent buffer without bound.
ACK_MAX_BUFFERED_BYTES = 4096
#: Forged frames and clamped statuses logged per connection before the rest
#: are only counted.
MAX_ATTACK_WARNINGS = 3


@dataclass(eq=False)
class _Connection:
    id: int
    peer: PeerCredentials
    #: None for frames that come from a spill file, not a socket.
    writer: asyncio.StreamWriter | None
    last_session: str | None = None
    process_name: str = ""
    frames: int = 0
    events: int = 0
    bad_frames: int = 0
    forged: int = 0
    clamped: int = 0
    #: Set when the first frame asked for acknowledgements.
    acks: AckBook | None = None
    #: Sessions this connection opened (bound to its peer).
    opened: set[str] = field(default_factory=set)
    log: Any = field(default=None)

    @property
    def key(self) -> tuple[int | None, int | None]:
        return (self.peer.pid, self.peer.uid)


class Receiver:
    """Accepts sender connections and hands decoded batches to the spool writer."""

    def __init__(
        self,
        config: AgentConfig,
        metrics: AgentMetrics,
        writer: SpoolWriter,
        dead_letter: DeadLetterFile | None = None,
    ) -> None:
        self._config = config
        self._dead_letter = dead_letter
        self._evidence = EvidenceLimiter()
        self._evidence_tasks: set[asyncio.Task[bool]] = set()
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
        self._owners = SessionOwners()
        self._peers = PeerCounts(config.max_connections_per_pid, config.max_connections_per_uid)
        writer.on_committed = self._committed

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
            if conn.writer is not None:
                self._shut_read(conn.writer)
        if self._evidence_tasks:
            await asyncio.wait(set(self._evidence_tasks), timeout=grace)
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
        refused = self._peers.admit(peer.pid, peer.uid)
        if refused is not None:
            self._reject(writer, f"too_many_{refused}", peer_uid=peer.uid, peer_pid=peer.pid)
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
            if conn.acks is not None:
                conn.acks.closing = True
            del self._connections[conn.id]
            self._peers.release(peer.pid, peer.uid)
            self._owners.closed(conn.id, conn.opened)
            self._metrics.connections_current.dec()
            self._metrics.connections_closed.labels(reason).inc()
            writer.close()
            conn.log.info(
                "sender disconnected",
                reason=reason,
                frames=conn.frames,
                events=conn.events,
                bad_frames=conn.bad_frames,
                forged_frames=conn.forged or None,
                acked_frames=conn.acks.acked if conn.acks is not None else None,
            )

    async def _read_loop(self, conn: _Connection, reader: asyncio.StreamReader) -> str:
        decoder = FrameDecoder()
        idle = self._config.idle_timeout
        stall = StallTimer(idle)
        writer = self._writer
        loop = asyncio.get_running_loop()
        first_frame_by = loop.time() + self._config.first_frame_timeout
        while True:
            deadline = stall.deadline(decoder.mid_frame, loop.time())
            if conn.frames == 0:
                deadline = first_frame_by if deadline is None else min(deadline, first_frame_by)
            try:
                async with asyncio.timeout_at(deadline):
                    data = await reader.read(READ_CHUNK_BYTES)
            except TimeoutError:
                return self._timed_out(conn, decoder)
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
            if conn.acks is not None and decoder.error is None:
                self._ack(conn)
            if decoder.error is not None:
                # Whole frames before the bad header were kept above.
                self._count_bad_frame(conn)
                conn.log.warning(
                    "protocol error from sender; closing its connection",
                    error=str(decoder.error),
                )
                return "protocol_error"
            await writer.wait_for_room()

    def ingest(self, frames: list[tuple[int, bytes]], source: str) -> int:
        """Take frames that did not come on a socket (a spill file) as one connection's.

        The same checks, relaying and counting as a connection's frames;
        the frames count as the agent's own (its pid and uid), so a session
        a live sender holds open still refuses them. Returns the writer
        ticket that ``committed`` must reach for all of them to be stored.
        """
        me = PeerCredentials(os.getpid(), os.getuid(), os.getgid())
        conn = _Connection(next(self._ids), me, None)
        conn.log = self._log.bind(conn=conn.id, source=source)
        try:
            for tag, payload in frames:
                self._on_frame(conn, tag, payload)
        finally:
            self._owners.closed(conn.id, conn.opened)
        return self._writer.ticket()

    def _timed_out(self, conn: _Connection, decoder: FrameDecoder) -> str:
        """Why the read timed out, logged and counted: the connection closes."""
        if conn.frames == 0 and not decoder.mid_frame:
            conn.log.info(
                "closing a connection that sent no frame",
                first_frame_timeout_s=self._config.first_frame_timeout,
            )
            return "no_frame_timeout"
        self._count_bad_frame(conn)
        conn.log.warning(
            "sender stalled inside a frame; closing its connection",
            buffered_bytes=decoder.buffered,
            idle_timeout_s=self._config.idle_timeout,
        )
        return "idle_timeout"

    def _on_frame(self, conn: _Connection, tag: int, payload: bytes) -> None:
        conn.frames += 1
        self._frames_by_tag[tag].inc()
        meaning = interpret_frame(tag, payload)
        if (
            conn.frames == 1
            and isinstance(meaning, StatusFrame)
            and meaning.open is not None
            and meaning.open.want_acks
        ):
            conn.acks = AckBook()
        if isinstance(meaning, LogsFrame):
            self._on_logs(conn, meaning)
        elif isinstance(meaning, StatusFrame):
            self._on_status(conn, meaning)
        else:
            self._bad_frame_seen(conn, meaning)
            self._keep_evidence(conn, meaning, payload)
        if conn.acks is not None:
            conn.acks.handled(conn.frames, self._writer.ticket())

    def _on_logs(self, conn: _Connection, logs: LogsFrame) -> None:
        if logs.process_name:
            conn.process_name = logs.process_name
        if logs.batch is None:
            conn.last_session = logs.session_id
            return
        if not self._owners.allows(logs.session_id, conn.id, conn.key):
            self._forged(conn, logs.session_id, logs.batch.events)
            return
        conn.last_session = logs.session_id
        self._writer.submit(logs.batch)
        conn.events += logs.batch.events
        self._metrics.events_received.inc(logs.batch.events)

    def _on_status(self, conn: _Connection, status: StatusFrame) -> None:
        """Relay opens and seals; count what the sender dropped, attributed to its session."""
        session = status.session_id or conn.last_session or ""
        if status.clamped:
            conn.clamped += 1
            self._metrics.dropped_frames.labels(DropReason.INVALID_STATUS).inc()
            if conn.clamped <= MAX_ATTACK_WARNINGS:
                conn.log.warning(
                    "sender status with counts out of range; clamped",
                    session_id=session or None,
                )
        if status.session_id:
            if status.open is not None:
                if not self._owners.open(status.session_id, conn.id, conn.key):
                    self._forged(conn, status.session_id, 0)
                    return
                conn.opened.add(status.session_id)
            elif not self._owners.allows(status.session_id, conn.id, conn.key):
                self._forged(conn, status.session_id, 0)
                return
            conn.last_session = status.session_id
        record = session_record(status, time.time_ns(), conn.process_name)
        if record is not None:
            self._writer.submit(record)
        urgent = conn.acks is not None
        for reason, n in status.dropped.items():
            if n:
                self._metrics.dropped_events.labels(reason).inc(n)
                self._writer.record_drop(DropSource.BOUNDARY, session, reason, n, urgent=urgent)
        if any(status.dropped.values()):
            conn.log.warning(
                "sender reports events it dropped before reaching the agent",
                session_id=session or None,
                **{str(reason): n for reason, n in status.dropped.items()},
            )

    def _forged(self, conn: _Connection, session_id: str, events: int) -> None:
        """A frame for a session another live peer opened: refused, counted, never stored."""
        conn.forged += 1
        self._metrics.dropped_frames.labels(DropReason.FORGED).inc()
        if events:
            self._metrics.dropped_events.labels(DropReason.FORGED).inc(events)
        if conn.forged <= MAX_ATTACK_WARNINGS:
            owner = self._owners.owner(session_id)
            conn.log.error(
                "refusing a frame for a session another live sender opened (forged?)",
                session_id=session_id,
                events=events,
                owner_pid=owner[0] if owner else None,
                owner_uid=owner[1] if owner else None,
                further_ones_only_counted=conn.forged == MAX_ATTACK_WARNINGS,
            )

    def _keep_evidence(self, conn: _Connection, bad: BadFrame, payload: bytes) -> None:
        """Dead-letter a refused frame: the first few per sender per window, never thousands."""
        if self._dead_letter is None or not self._evidence.allow(conn.key, time.monotonic()):
            return
        line = refused_frame_line(
            payload, bad.why, bad.session_id, pid=conn.peer.pid, uid=conn.peer.uid, now=time.time()
        )
        task = asyncio.create_task(asyncio.to_thread(self._dead_letter.write_lines, [line]))
        self._evidence_tasks.add(task)
        task.add_done_callback(self._evidence_written)

    def _evidence_written(self, task: asyncio.Task[bool]) -> None:
        self._evidence_tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            self._metrics.errors.labels("dead_letter").inc()
            self._log.error("cannot write the dead-letter file", error=repr(task.exception()))

    def _committed(self, committed: int) -> None:
        """The writer committed up to ``committed``: acknowledge what that covers."""
        for conn in self._connections.values():
            if conn.acks is not None:
                self._ack(conn)

    def _ack(self, conn: _Connection) -> None:
        assert conn.acks is not None
        writer = conn.writer
        if writer is None or writer.is_closing():
            conn.acks.closing = True
            return
        transport = writer.transport
        if transport.get_write_buffer_size() > ACK_MAX_BUFFERED_BYTES:
            return  # a later ack covers these frames
        upto = conn.acks.due(self._writer.committed)
        if upto is not None:
            writer.write(ack_frame(upto))

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

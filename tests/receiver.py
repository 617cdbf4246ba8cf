"""A real Unix-socket receiver for tests, built on the shared wire decoder.

Not a second implementation of the protocol: it feeds raw bytes to
``boundary_audit.wire.FrameDecoder`` and decodes payloads with
``decode_payload``, exactly as the agent does.

Two kinds, as a sender meets them:

- ``Receiver(path)`` never writes to the socket, like Coder's agent;
- ``Receiver(path, acks=True)`` acknowledges like ours: on a connection
  whose first frame is an ``open`` with ``want_acks``, it writes
  ``Ack{frames=N}`` once it has *committed* (recorded) frames 1..N.
  ``hold()`` stops committing (frames are read and kept aside, unacked, like
  an agent whose spool commit is stuck); ``stop()`` then loses them, like an
  agent that dies before its commit.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path

from boundary_audit.wire import (
    BoundaryMessage,
    Frame,
    FrameDecoder,
    Tag,
    as_envelope,
    decode_payload,
    encode_frame,
)
from tests.support import eventually

#: Bytes asked for per recv: more than a whole frame, so one call takes
#: whatever the sender wrote since the last.
READ_CHUNK = 65536
#: How often the accept and read loops look up from a blocking call to see
#: whether stop() was called: short next to any wait a test makes.
STOP_POLL_S = 0.05
#: Connections the listener queues: far more than any test opens at once.
LISTEN_BACKLOG = 64
#: How long stop() waits for each loop thread (they notice within STOP_POLL_S).
JOIN_TIMEOUT_S = 5.0
#: Default bound of wait_for() (tests.support.eventually's default).
WAIT_TIMEOUT_S = 20.0


def ack_frame(frames: int) -> bytes:
    """The frame our agent writes back: ``status{ack{frames}}``."""
    msg = BoundaryMessage()
    msg.status.ack.frames = frames
    return encode_frame(Tag.V2_ENVELOPE, msg.SerializeToString())


class _Connection:
    """One accepted connection: what was read, committed and acknowledged on it."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.decoder = FrameDecoder()
        self.frames = 0  # frames read on this connection
        self.committed = 0  # of those, recorded (and acknowledged, when asked)
        self.wants_acks = False
        self.held: list[tuple[Frame, BoundaryMessage]] = []


class Receiver:
    """Accepts connections on ``path`` and records every frame and message."""

    def __init__(self, path: Path, *, acks: bool = False) -> None:
        self.path = path
        self.acks = acks
        self.frames: list[Frame] = []
        self.messages: list[BoundaryMessage] = []
        #: time.monotonic() when each message was committed (same order).
        self.committed_at: list[float] = []
        self.connections = 0
        #: Bytes read, over every connection (a squatter-style count).
        self.bytes_read = 0
        self.acks_sent = 0
        # Cleared by pause(): connections are accepted but not read, so the
        # sender's writes fill the socket buffers and stall, like a hung agent.
        self._reading = threading.Event()
        self._reading.set()
        # Held around every read, so pause() can wait until none is under way.
        self._read_gate = threading.Lock()
        self._holding = False
        self._lock = threading.Lock()
        self._listener: socket.socket | None = None
        self._conns: list[_Connection] = []
        self._threads: list[threading.Thread] = []
        self._stop = threading.Event()

    def start(self) -> Receiver:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(str(self.path))
        listener.listen(LISTEN_BACKLOG)
        listener.settimeout(STOP_POLL_S)
        self._listener = listener
        self._stop.clear()
        t = threading.Thread(target=self._accept_loop, daemon=True)
        t.start()
        self._threads.append(t)
        return self

    def stop(self) -> None:
        """Close the listener and every connection, like an agent exiting.

        Frames read but not committed (hold()) are lost, as they would be in
        an agent that died before its spool commit. Frames the sender wrote
        and nobody read are discarded by the kernel with the sockets.
        """
        self._stop.set()
        for t in self._threads:
            t.join(JOIN_TIMEOUT_S)
        self._threads.clear()
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        with self._lock:
            for c in self._conns:
                c.held.clear()
                with contextlib.suppress(OSError):
                    c.sock.close()
            self._conns.clear()
            self._holding = False
        self._reading.set()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)

    def pause(self) -> None:
        """Keep connections open but stop reading them (a stalled agent).

        Returns once no read is under way: nothing written after this is read
        until resume().
        """
        self._reading.clear()
        with self._read_gate:
            pass

    def resume(self) -> None:
        self._reading.set()

    def hold(self) -> None:
        """Keep reading but stop committing and acknowledging (a stuck spool)."""
        with self._lock:
            self._holding = True

    def release(self) -> None:
        """Commit (and acknowledge) what hold() kept aside, and go on committing."""
        with self._lock:
            self._holding = False
            for c in self._conns:
                self._commit(c)

    def _accept_loop(self) -> None:
        assert self._listener is not None
        while not self._stop.is_set():
            try:
                sock, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            sock.settimeout(STOP_POLL_S)
            conn = _Connection(sock)
            with self._lock:
                self._conns.append(conn)
                self.connections += 1
            t = threading.Thread(target=self._read_loop, args=(conn,), daemon=True)
            t.start()
            self._threads.append(t)

    def _read_loop(self, conn: _Connection) -> None:
        while not self._stop.is_set():
            if not self._reading.wait(STOP_POLL_S):
                continue
            with self._read_gate:
                if not self._reading.is_set():
                    continue
                try:
                    data = conn.sock.recv(READ_CHUNK)
                except TimeoutError:
                    continue
                except OSError:
                    return
            if not data:
                return
            with self._lock:
                if self._stop.is_set():
                    return  # dying: what was just read is lost with us
                self.bytes_read += len(data)
                for frame in conn.decoder.feed(data):
                    msg = as_envelope(decode_payload(frame.tag, frame.payload))
                    if conn.frames == 0 and msg.WhichOneof("msg") == "status":
                        conn.wants_acks = self.acks and msg.status.open.want_acks
                    conn.frames += 1
                    conn.held.append((frame, msg))
                if not self._holding:
                    self._commit(conn)

    def _commit(self, conn: _Connection) -> None:
        """Record what ``conn`` read and acknowledge it (caller holds the lock)."""
        if not conn.held:
            return
        now = time.monotonic()
        for frame, msg in conn.held:
            self.frames.append(frame)
            self.messages.append(msg)
            self.committed_at.append(now)
        conn.committed += len(conn.held)
        conn.held.clear()
        if conn.wants_acks:
            with contextlib.suppress(OSError):
                conn.sock.sendall(ack_frame(conn.committed))
                self.acks_sent += 1

    # -- views ----------------------------------------------------------------

    def log_batches(self) -> list[BoundaryMessage]:
        with self._lock:
            return [m for m in self.messages if m.WhichOneof("msg") == "logs"]

    def statuses(self) -> list[BoundaryMessage]:
        """Drop reports: status frames carrying neither an open nor a seal."""
        with self._lock:
            return [
                m
                for m in self.messages
                if m.WhichOneof("msg") == "status"
                and not m.status.HasField("open")
                and not m.status.HasField("seal")
            ]

    def frames_read(self) -> int:
        """Frames read over every connection (committed or held)."""
        with self._lock:
            return sum(c.frames for c in self._conns)

    def opens(self) -> list[BoundaryMessage]:
        with self._lock:
            return [m for m in self.messages if m.status.HasField("open")]

    def seals(self) -> list[BoundaryMessage]:
        with self._lock:
            return [m for m in self.messages if m.status.HasField("seal")]

    def sequence_numbers(self, session_id: str | None = None) -> list[int]:
        """Every event's number, in arrival order; of one session when given."""
        return [
            log.sequence_number
            for m in self.log_batches()
            if session_id is None or m.logs.session_id == session_id
            for log in m.logs.logs
        ]

    def wait_for(
        self, predicate: Callable[[], object], timeout: float = WAIT_TIMEOUT_S, what: str = ""
    ) -> bool:
        """Poll ``predicate`` (tests.support.eventually); True, or AssertionError at ``timeout``."""
        eventually(predicate, what or None, within=timeout)
        return True

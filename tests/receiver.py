"""A real Unix-socket receiver for tests, built on the shared wire decoder.

Not a second implementation of the protocol: it feeds raw bytes to
``boundary_audit.wire.FrameDecoder`` and decodes payloads with
``decode_payload``, exactly as the agent does.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
from collections.abc import Callable
from pathlib import Path

from boundary_audit.wire import (
    BoundaryMessage,
    Frame,
    FrameDecoder,
    as_envelope,
    decode_payload,
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


class Receiver:
    """Accepts connections on ``path`` and records every frame and message."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.frames: list[Frame] = []
        self.messages: list[BoundaryMessage] = []
        self.connections = 0
        # Cleared by pause(): connections are accepted but not read, so the
        # sender's writes fill the socket buffers and stall, like a hung agent.
        self._reading = threading.Event()
        self._reading.set()
        self._lock = threading.Lock()
        self._listener: socket.socket | None = None
        self._conns: list[socket.socket] = []
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
        """Close the listener and every connection, like an agent exiting."""
        self._stop.set()
        for t in self._threads:
            t.join(JOIN_TIMEOUT_S)
        self._threads.clear()
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        for c in self._conns:
            with contextlib.suppress(OSError):
                c.close()
        self._conns.clear()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)

    def pause(self) -> None:
        """Keep connections open but stop reading them (a stalled agent)."""
        self._reading.clear()

    def resume(self) -> None:
        self._reading.set()

    def _accept_loop(self) -> None:
        assert self._listener is not None
        while not self._stop.is_set():
            try:
                conn, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            conn.settimeout(STOP_POLL_S)
            self._conns.append(conn)
            self.connections += 1
            t = threading.Thread(target=self._read_loop, args=(conn,), daemon=True)
            t.start()
            self._threads.append(t)

    def _read_loop(self, conn: socket.socket) -> None:
        decoder = FrameDecoder()
        while not self._stop.is_set():
            if not self._reading.wait(STOP_POLL_S):
                continue
            try:
                data = conn.recv(READ_CHUNK)
            except TimeoutError:
                continue
            except OSError:
                return
            if not data:
                return
            for frame in decoder.feed(data):
                msg = as_envelope(decode_payload(frame.tag, frame.payload))
                with self._lock:
                    self.frames.append(frame)
                    self.messages.append(msg)

    # -- views ----------------------------------------------------------------

    def log_batches(self) -> list[BoundaryMessage]:
        with self._lock:
            return [m for m in self.messages if m.WhichOneof("msg") == "logs"]

    def statuses(self) -> list[BoundaryMessage]:
        with self._lock:
            return [m for m in self.messages if m.WhichOneof("msg") == "status"]

    def sequence_numbers(self) -> list[int]:
        return [log.sequence_number for m in self.log_batches() for log in m.logs.logs]

    def wait_for(
        self, predicate: Callable[[], object], timeout: float = WAIT_TIMEOUT_S, what: str = ""
    ) -> bool:
        """Poll ``predicate`` (tests.support.eventually); True, or AssertionError at ``timeout``."""
        eventually(predicate, what or None, within=timeout)
        return True

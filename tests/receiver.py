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
import time
from collections.abc import Callable
from pathlib import Path

from boundary_audit.wire import (
    BoundaryMessage,
    Frame,
    FrameDecoder,
    as_envelope,
    decode_payload,
)

READ_CHUNK = 65536


class Receiver:
    """Accepts connections on ``path`` and records every frame and message."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.frames: list[Frame] = []
        self.messages: list[BoundaryMessage] = []
        self.connections = 0
        self.paused = threading.Event()  # set: accept but stop reading
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
        listener.listen(64)
        listener.settimeout(0.05)
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
            t.join(5)
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

    def _accept_loop(self) -> None:
        assert self._listener is not None
        while not self._stop.is_set():
            try:
                conn, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            conn.settimeout(0.05)
            self._conns.append(conn)
            self.connections += 1
            t = threading.Thread(target=self._read_loop, args=(conn,), daemon=True)
            t.start()
            self._threads.append(t)

    def _read_loop(self, conn: socket.socket) -> None:
        decoder = FrameDecoder()
        while not self._stop.is_set():
            if self.paused.is_set():
                time.sleep(0.01)
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

    def wait_for(self, predicate: Callable[[], bool], timeout: float = 20.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return True
            time.sleep(0.01)
        return predicate()

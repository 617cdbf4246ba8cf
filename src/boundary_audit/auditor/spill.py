"""The sender's side of spill files: writing its own at close, delivering others' when connected.

The format and the file handling are in :mod:`boundary_audit.wire.spill`
(shared with the agent, which delivers the same files). Here: which files a
connected sender delivers and when each may be removed. Frames of a spill
file go out behind the session's own events (a backlog of old sessions never
costs the current one its events) and are held like any frame; a file is
removed once every frame of it is delivered (acknowledged, or read per
SIOCOUTQ by an agent that never acknowledges). A lost connection releases the
file; the next connection delivers it again from its start.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from google.protobuf.message import DecodeError

from ..wire import BoundaryMessage, encode_frame
from ..wire.spill import SpillClaim, SpillError, claim_spill, list_spills
from .delivery import Kind, Sent
from .stats import Counters


class SpillFile:
    """One claimed spill file being delivered."""

    __slots__ = ("claim", "delivered", "events", "frames", "next")

    def __init__(self, claim: SpillClaim, frames: list[Sent]) -> None:
        self.claim = claim
        self.frames = frames
        self.next = 0  # index of the next frame to write
        self.delivered = 0
        self.events = sum(s.events for s in frames)


def _sent_frames(claim: SpillClaim, origin: object) -> list[Sent]:
    """The file's frames as Sent, with event counts read from the payloads."""
    frames = []
    for frame in claim.frames():
        msg = BoundaryMessage.FromString(frame.payload)
        logs = msg.logs.logs if msg.WhichOneof("msg") == "logs" else []
        kind = Kind.LOGS if logs else Kind.STATUS
        first = logs[0].sequence_number if logs else -1
        raw = encode_frame(frame.tag, frame.payload)
        frames.append(Sent(raw, kind, len(logs), first, origin))
    return frames


class SpillDeliveries:
    """Other sessions' spill files, delivered on this sender's connections, oldest first."""

    def __init__(self, directory: Path | None, counters: Counters, log: Any) -> None:
        self.directory = directory
        self.c = counters
        self.log = log
        self._todo: list[Path] = []
        self._current: SpillFile | None = None
        #: Files written in full, waiting for their last frames' delivery.
        self._writing: list[SpillFile] = []

    def start(self) -> None:
        """A new connection: look for files to deliver."""
        self.abandon()
        if self.directory is None:
            return
        try:
            self._todo = list_spills(self.directory)
        except OSError as exc:
            self.c.spill_errors += 1
            self.log.error(
                "cannot read the spill directory; its files are not delivered",
                spill_dir=str(self.directory),
                error=str(exc),
            )
            self._todo = []

    @property
    def pending(self) -> bool:
        """Frames wait to be written (a file in progress, or files not yet opened)."""
        return self._current is not None or bool(self._todo)

    def peek(self) -> Sent | None:
        """The next frame to write, opening the next file when needed."""
        while self._current is None or self._current.next >= len(self._current.frames):
            if self._current is not None:
                self._current = None
            if not self._todo:
                return None
            self._current = self._open(self._todo.pop(0))
        return self._current.frames[self._current.next]

    def advance(self) -> None:
        """The frame peek() returned was written."""
        current = self._current
        assert current is not None
        current.next += 1
        if current.next == len(current.frames):
            self._writing.append(current)
            self._current = None

    def delivered(self, sent: Sent) -> None:
        """A spill frame reached the agent; the file goes once all of it has."""
        spill = sent.origin
        assert isinstance(spill, SpillFile)
        spill.delivered += 1
        if spill.delivered == len(spill.frames):
            spill.claim.remove()
            if spill in self._writing:
                self._writing.remove(spill)
            self.c.spill_files_delivered += 1
            self.c.spill_events_delivered += spill.events
            self.log.info(
                "spill file delivered and removed", spill=str(spill.claim.path), events=spill.events
            )

    def abandon(self) -> None:
        """Release every claim (connection lost, or closing): the files stay."""
        for spill in [*self._writing, *([self._current] if self._current else [])]:
            spill.claim.release()
        self._writing.clear()
        self._current = None
        self._todo = []

    def _open(self, path: Path) -> SpillFile | None:
        try:
            claim = claim_spill(path)
        except OSError as exc:
            self.c.spill_errors += 1
            self.log.error(
                "spill file is not private or not readable; not delivered",
                spill=str(path),
                error=str(exc),
            )
            return None
        if claim is None:  # another deliverer has it, or it is gone
            return None
        spill = SpillFile(claim, [])
        try:
            spill.frames = _sent_frames(claim, spill)
        except (SpillError, DecodeError) as exc:
            self.c.spill_errors += 1
            kept = claim.quarantine()
            self.log.error(
                "spill file does not decode; moved aside and not delivered",
                spill=str(path),
                kept_as=str(kept),
                error=str(exc),
            )
            return None
        spill.events = sum(s.events for s in spill.frames)
        if not spill.frames:
            claim.remove()
            return None
        return spill

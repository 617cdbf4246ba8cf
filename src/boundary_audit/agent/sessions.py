"""Peers: who is connected (SO_PEERCRED), which live peer a session belongs to, how many
connections each peer holds. All but :func:`peer_credentials` is pure state.

A sender's ``open`` binds its session to the peer of that connection (the
pid and uid from SO_PEERCRED) for as long as one of that peer's connections
that opened it lives. Frames for a bound session from any other peer are
*forged*: refused and counted, never stored, so a confined process that
learnt its session id cannot put events into the trail or take a real
event's sequence number first. Sessions nobody opened (Coder's ``boundary``
sends no opens) are not bound and flow as they always did.
"""

from __future__ import annotations

import socket
import struct
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

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


#: A peer as SO_PEERCRED names it: (pid, uid); (None, None) where unknown.
Peer = tuple[int | None, int | None]


@dataclass(slots=True)
class _Binding:
    peer: Peer
    connections: set[int] = field(default_factory=set)


class SessionOwners:
    """Session id -> the peer that opened it, while that peer's opening connection lives."""

    def __init__(self) -> None:
        self._bindings: dict[str, _Binding] = {}

    def __len__(self) -> int:
        return len(self._bindings)

    def open(self, session_id: str, conn_id: int, peer: Peer) -> bool:
        """Bind ``session_id`` to ``peer`` (again); False when another live peer holds it."""
        binding = self._bindings.get(session_id)
        if binding is None:
            self._bindings[session_id] = _Binding(peer, {conn_id})
            return True
        if conn_id in binding.connections or (peer == binding.peer and peer != (None, None)):
            binding.connections.add(conn_id)
            return True
        return False

    def allows(self, session_id: str, conn_id: int, peer: Peer) -> bool:
        """May this connection carry frames for ``session_id``?"""
        binding = self._bindings.get(session_id)
        if binding is None:
            return True
        if conn_id in binding.connections:
            return True
        return peer == binding.peer and peer != (None, None)

    def owner(self, session_id: str) -> Peer | None:
        binding = self._bindings.get(session_id)
        return binding.peer if binding is not None else None

    def closed(self, conn_id: int, sessions: set[str]) -> None:
        """A connection ended: the sessions it opened are free once no connection holds them."""
        for session_id in sessions:
            binding = self._bindings.get(session_id)
            if binding is None:
                continue
            binding.connections.discard(conn_id)
            if not binding.connections:
                del self._bindings[session_id]


class PeerCounts:
    """Open connections per pid and per uid, to refuse one peer that takes them all."""

    def __init__(self, max_per_pid: int, max_per_uid: int) -> None:
        self.max_per_pid = max_per_pid
        self.max_per_uid = max_per_uid
        self._pids: Counter[int] = Counter()
        self._uids: Counter[int] = Counter()

    def admit(self, pid: int | None, uid: int | None) -> str | None:
        """Count the connection in; or the reason it is refused (``per_pid``/``per_uid``)."""
        if pid is not None and self._pids[pid] >= self.max_per_pid:
            return "per_pid"
        if uid is not None and self._uids[uid] >= self.max_per_uid:
            return "per_uid"
        if pid is not None:
            self._pids[pid] += 1
        if uid is not None:
            self._uids[uid] += 1
        return None

    def release(self, pid: int | None, uid: int | None) -> None:
        for counter, key in ((self._pids, pid), (self._uids, uid)):
            if key is None:
                continue
            counter[key] -= 1
            if counter[key] <= 0:
                del counter[key]


__all__ = ["Peer", "PeerCounts", "PeerCredentials", "SessionOwners", "peer_credentials"]

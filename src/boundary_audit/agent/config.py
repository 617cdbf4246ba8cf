"""Agent settings: one frozen dataclass, with every default named and explained."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import platformdirs

from ..wire import resolve_socket_path
from ..wire.spill import resolve_spill_dir

#: Environment variables the CLI reads when the matching flag is absent.
COLLECTOR_URL_ENV = "BOUNDARY_AUDIT_COLLECTOR_URL"
CREDENTIAL_ENV = "BOUNDARY_AUDIT_AGENT_TOKEN"
SPOOL_DIR_ENV = "BOUNDARY_AUDIT_SPOOL_DIR"
METRICS_LISTEN_ENV = "BOUNDARY_AUDIT_METRICS_LISTEN"

#: Path of the ingest endpoint under the collector's base URL.
INGEST_PATH = "/api/v1/boundary-logs"
#: Content type of an ingest request body (a serialized IngestRequest).
INGEST_CONTENT_TYPE = "application/x-protobuf"

#: Socket permissions: owner and group may connect, nobody else. A wider mode
#: would let any local process forge audit events.
DEFAULT_SOCKET_MODE = 0o660
#: Bits a socket mode may never carry: "other" access (forgery by any user).
FORBIDDEN_SOCKET_MODE_BITS = 0o007

#: Spool bound (stored payload bytes). 256 MiB holds roughly 1.5 million
#: typical events (~170 bytes each) - hours of a busy workspace while the
#: collector is down - and still fits comfortably on a workspace disk.
DEFAULT_SPOOL_MAX_BYTES = 256 * 1024 * 1024
#: Bytes kept free beyond the bound for drop reports only, so the counts of
#: refused events can be stored even while the spool refuses events. A report
#: is ~100 bytes, so this holds hundreds of them.
DROP_REPORT_HEADROOM_BYTES = 64 * 1024

#: Events accepted from the sockets but not yet committed to the spool. When
#: the writer falls this far behind, readers stop reading, so back-pressure
#: reaches the senders' sockets instead of growing the agent's memory. 8 MiB
#: is several commits' worth at 100k events/s.
DEFAULT_MAX_PENDING_BYTES = 8 * 1024 * 1024

#: Concurrent socket connections. A workspace runs a handful of confined
#: processes, each with one connection; 256 leaves ample room while a flood
#: of idle connections cannot exhaust file descriptors.
DEFAULT_MAX_CONNECTIONS = 256
#: Connections one process (SO_PEERCRED pid) may hold at once. A sender uses
#: one (plus one briefly while reconnecting); 16 leaves room for a launcher
#: running several auditors, while one process holding hundreds of idle
#: connections cannot lock the others out.
DEFAULT_MAX_CONNECTIONS_PER_PID = 16
#: Connections one uid may hold at once: half the overall cap, so one user
#: (e.g. a daemonised child forking many holders) cannot take every slot
#: from the other users of a shared agent.
DEFAULT_MAX_CONNECTIONS_PER_UID = 128
#: A connection that has not completed its first frame this long after
#: connecting is closed: our sender writes its open at once, Coder's writes
#: when it has events and reconnects when the write fails; an idle holder
#: of a slot frees it.
DEFAULT_FIRST_FRAME_TIMEOUT = 60.0
#: How often the agent looks for spill files (frames a sender could not
#: deliver before its close timeout) besides at start: a session that ended
#: while the agent was frozen reaches the collector within this long of the
#: agent running again, and an idle scan of an empty directory is one
#: directory read.
DEFAULT_SPILL_SCAN_INTERVAL = 10.0
#: A connection that stops in the middle of a frame for this long is closed.
#: Senders write whole frames at once, so a partial frame that waits 30 s is
#: a stuck or hostile peer holding a buffer.
DEFAULT_IDLE_TIMEOUT = 30.0
#: Bytes asked of the socket per read: large enough to take many 1-2 KiB
#: frames per wake-up at high rates, small next to the pending bound.
READ_CHUNK_BYTES = 64 * 1024

#: Largest ingest request body the agent sends. The collector accepts 4 MiB;
#: staying at a quarter of that keeps request latency and memory predictable.
DEFAULT_MAX_REQUEST_BYTES = 1024 * 1024
#: Most events in one ingest request, so one request never turns into a
#: database transaction long enough to stall the collector for others.
DEFAULT_MAX_REQUEST_EVENTS = 5000
#: Per-request HTTP timeout (connect, read, write, pool).
DEFAULT_REQUEST_TIMEOUT = 10.0
#: First retry delay after a failed forward, doubled per consecutive failure.
DEFAULT_BACKOFF_INITIAL = 0.2
#: Retry delays never exceed this, so the agent notices a recovered collector
#: within half a minute.
DEFAULT_BACKOFF_MAX = 30.0
#: Longest ``Retry-After`` the agent honours; a larger value (or a hostile
#: one) is capped so forwarding resumes within five minutes.
DEFAULT_RETRY_AFTER_MAX = 300.0

#: On shutdown, how long to keep reading what connections already sent.
DEFAULT_DRAIN_TIMEOUT = 5.0
#: On shutdown, how long to keep forwarding the spool before leaving the
#: rest for the next start.
DEFAULT_FLUSH_TIMEOUT = 10.0
#: How often accumulated drop counts become a stored drop report: often
#: enough that the central side learns of loss promptly, rare enough that a
#: sustained overload makes one report per second, not one per batch.
DEFAULT_DROP_REPORT_INTERVAL = 1.0

#: The smallest ``max_request_bytes``: one frame of the largest size senders
#: write (32 KiB) with room for the request around it.
MIN_REQUEST_BYTES = 64 * 1024

SpoolSync = Literal["normal", "full"]

#: Settings that must be above zero (sizes, counts, timeouts, intervals).
_POSITIVE_SETTINGS = (
    "spool_max_bytes",
    "max_connections",
    "max_pending_bytes",
    "max_request_events",
    "idle_timeout",
    "max_connections_per_pid",
    "max_connections_per_uid",
    "first_frame_timeout",
    "spill_scan_interval",
    "request_timeout",
    "backoff_initial",
    "backoff_max",
    "retry_after_max",
    "drop_report_interval",
)


def default_spool_dir() -> Path:
    """Per-user state directory: survives reboots, unlike the runtime dir."""
    return platformdirs.user_state_path("boundary-audit") / "agent"


@dataclass(frozen=True, slots=True)
class AgentConfig:
    """Everything an :class:`~boundary_audit.agent.Agent` needs to run.

    ``spool_sync`` is SQLite's ``synchronous`` setting in WAL mode:
    ``"normal"`` (default) survives a crash or SIGKILL of the agent, since
    committed transactions are in the WAL file; ``"full"`` also fsyncs every
    commit so they survive a power loss, at a throughput cost.
    """

    collector_url: str
    token: str
    socket_path: Path = field(default_factory=resolve_socket_path)
    spool_dir: Path = field(default_factory=default_spool_dir)
    spool_max_bytes: int = DEFAULT_SPOOL_MAX_BYTES
    spool_sync: SpoolSync = "normal"
    metrics_listen: tuple[str, int] | None = None
    socket_mode: int = DEFAULT_SOCKET_MODE
    socket_group: str | int | None = None
    allowed_uids: frozenset[int] | None = None
    max_connections: int = DEFAULT_MAX_CONNECTIONS
    idle_timeout: float = DEFAULT_IDLE_TIMEOUT
    max_connections_per_pid: int = DEFAULT_MAX_CONNECTIONS_PER_PID
    max_connections_per_uid: int = DEFAULT_MAX_CONNECTIONS_PER_UID
    first_frame_timeout: float = DEFAULT_FIRST_FRAME_TIMEOUT
    #: Spill files to deliver (None: do not look for any).
    spill_dir: Path | None = field(default_factory=resolve_spill_dir)
    spill_scan_interval: float = DEFAULT_SPILL_SCAN_INTERVAL
    max_pending_bytes: int = DEFAULT_MAX_PENDING_BYTES
    max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES
    max_request_events: int = DEFAULT_MAX_REQUEST_EVENTS
    request_timeout: float = DEFAULT_REQUEST_TIMEOUT
    backoff_initial: float = DEFAULT_BACKOFF_INITIAL
    backoff_max: float = DEFAULT_BACKOFF_MAX
    retry_after_max: float = DEFAULT_RETRY_AFTER_MAX
    drain_timeout: float = DEFAULT_DRAIN_TIMEOUT
    flush_timeout: float = DEFAULT_FLUSH_TIMEOUT
    drop_report_interval: float = DEFAULT_DROP_REPORT_INTERVAL

    def __post_init__(self) -> None:
        if not self.collector_url.startswith(("http://", "https://")):
            raise ValueError(
                f"collector URL must be http:// or https://, got {self.collector_url!r}"
            )
        if not self.token:
            raise ValueError("an agent token is required (flag --token or $" + CREDENTIAL_ENV + ")")
        if self.socket_mode & ~0o777:
            raise ValueError(f"socket mode {self.socket_mode:#o} has bits beyond 0o777")
        if self.socket_mode & FORBIDDEN_SOCKET_MODE_BITS:
            raise ValueError(
                f"socket mode {self.socket_mode:#o} grants access to other users; "
                "any local process could forge audit events (use at most 0o770)"
            )
        for name in _POSITIVE_SETTINGS:
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if self.max_request_bytes < MIN_REQUEST_BYTES:
            raise ValueError("max_request_bytes must hold at least one 32 KiB frame with room")
        for name in ("drain_timeout", "flush_timeout"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must not be negative, got {getattr(self, name)}")

    @property
    def ingest_url(self) -> str:
        base = self.collector_url.rstrip("/")
        return base if base.endswith(INGEST_PATH) else base + INGEST_PATH

    @property
    def spool_path(self) -> Path:
        return self.spool_dir / "spool.sqlite3"

    @property
    def dead_letter_path(self) -> Path:
        return self.spool_dir / "dead-letter.jsonl"


def parse_listen(value: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[v6]:PORT`` too) -> ``(host, port)`` with a clear error."""
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"expected HOST:PORT, got {value!r}")
    return host.strip("[]"), int(port)


def env_or(value: str | None, env_name: str) -> str | None:
    """Flag wins; else the environment variable; else None."""
    return value if value else (os.environ.get(env_name) or None)

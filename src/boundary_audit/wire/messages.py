"""Which protobuf message each tag carries, and the socket-path convention.

Payload codec helpers are pure functions, like the framing they sit on.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping
from pathlib import Path

from google.protobuf.message import DecodeError

from .errors import UndecodablePayloadError, UnknownTagError
from .framing import Tag, encode_frame
from .pb.boundary_log_pb2 import BoundaryLog, ReportBoundaryLogsRequest
from .pb.boundary_message_pb2 import BoundaryMessage, BoundaryStatus

#: Env variable that sets the socket path for both sides (shared with Coder's
#: boundary and agent, so one setting serves a mixed deployment).
SOCKET_PATH_ENV = "CODER_AGENT_BOUNDARY_LOG_PROXY_SOCKET_PATH"
#: File name of the socket when no path is configured (Coder's default name).
DEFAULT_SOCKET_NAME = "boundary-audit.sock"

#: boundary-audit's fields in BoundaryStatus start here. Coder's agent reads
#: only fields 1 and 2 and ignores unknown ones; 3..15 stay free for Coder.
EXTENSION_FIRST_FIELD = 16

WireMessage = ReportBoundaryLogsRequest | BoundaryMessage


def default_socket_path() -> Path:
    """Where the agent binds and a sender looks first when nothing says otherwise.

    ``boundary-audit.sock`` in the OS temp dir as Python resolves it
    (``tempfile.gettempdir()``: ``TMPDIR`` and friends, then the platform's
    usual places), never an assumed ``/tmp``. Coder's agent and boundary use
    the same place (``os.TempDir()``), so the two find each other without the
    shared variable. That dir is usually shared and world-writable: a sender
    checks who listens there before it writes a byte (see the auditor's
    listener checks), and an agent must bind there safely.
    """
    return Path(tempfile.gettempdir()) / DEFAULT_SOCKET_NAME


def legacy_socket_path(env: Mapping[str, str] | None = None) -> Path | None:
    """boundary-audit's default before 0.2: ``$XDG_RUNTIME_DIR/boundary-audit.sock``.

    None when ``XDG_RUNTIME_DIR`` is unset or not a directory. Senders still
    look here (after :func:`default_socket_path`), so an agent started by an
    older release is found; agents no longer bind here by default.
    """
    env = os.environ if env is None else env
    runtime = env.get("XDG_RUNTIME_DIR")
    if runtime and Path(runtime).is_dir():
        return Path(runtime) / DEFAULT_SOCKET_NAME
    return None


def resolve_socket_path(
    explicit: str | os.PathLike[str] | None = None, env: Mapping[str, str] | None = None
) -> Path:
    """The one path to bind (agent) or to use when configured (sender).

    The explicit argument, else ``$CODER_AGENT_BOUNDARY_LOG_PROXY_SOCKET_PATH``,
    else :func:`default_socket_path`: the order Coder's agent and boundary
    use. An agent binds exactly here; a sender with nothing configured also
    tries :func:`legacy_socket_path` (:func:`socket_path_candidates`).
    """
    if explicit:
        return Path(explicit)
    env = os.environ if env is None else env
    configured = env.get(SOCKET_PATH_ENV)
    if configured:
        return Path(configured)
    return default_socket_path()


def socket_path_candidates(
    explicit: str | os.PathLike[str] | None = None, env: Mapping[str, str] | None = None
) -> list[Path]:
    """Where a sender looks for an agent, in order of preference.

    A configured path (argument or variable) is the only candidate. Without
    one: Coder's default (the temp dir), then our old default in
    ``$XDG_RUNTIME_DIR``; the sender takes the first where a trusted agent
    listens.
    """
    env = os.environ if env is None else env
    if explicit or env.get(SOCKET_PATH_ENV):
        return [resolve_socket_path(explicit, env)]
    paths = [default_socket_path()]
    legacy = legacy_socket_path(env)
    if legacy is not None and legacy != paths[0]:
        paths.append(legacy)
    return paths


def tag_for(message: WireMessage) -> Tag:
    if isinstance(message, BoundaryMessage):
        return Tag.V2_ENVELOPE
    if isinstance(message, ReportBoundaryLogsRequest):
        return Tag.V1_LOGS
    raise TypeError(f"not a wire message: {type(message).__name__}")


def encode_message(message: WireMessage) -> bytes:
    """A whole frame for ``message``, tagged by its type."""
    return encode_frame(tag_for(message), message.SerializeToString())


def decode_payload(tag: int, payload: bytes) -> WireMessage:
    """Parse a frame's payload into the message its tag names."""
    message: WireMessage
    if tag == Tag.V2_ENVELOPE:
        message = BoundaryMessage()
    elif tag == Tag.V1_LOGS:
        message = ReportBoundaryLogsRequest()
    else:
        raise UnknownTagError(tag, len(payload))
    try:
        message.ParseFromString(payload)
    except DecodeError as exc:
        raise UndecodablePayloadError(tag, len(payload), str(exc) or "malformed protobuf") from exc
    return message


def as_envelope(message: WireMessage) -> BoundaryMessage:
    """Receivers handle one shape: a v1 bare request becomes a v2 envelope."""
    if isinstance(message, BoundaryMessage):
        return message
    envelope = BoundaryMessage()
    envelope.logs.CopyFrom(message)
    return envelope


__all__ = [
    "DEFAULT_SOCKET_NAME",
    "EXTENSION_FIRST_FIELD",
    "SOCKET_PATH_ENV",
    "BoundaryLog",
    "BoundaryMessage",
    "BoundaryStatus",
    "ReportBoundaryLogsRequest",
    "WireMessage",
    "as_envelope",
    "decode_payload",
    "default_socket_path",
    "encode_message",
    "legacy_socket_path",
    "resolve_socket_path",
    "socket_path_candidates",
    "tag_for",
]

"""Which protobuf message each tag carries, and the socket-path convention.

Payload codec helpers are pure functions, like the framing they sit on.
"""

from __future__ import annotations

import os
import tempfile
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


def default_socket_path(env: dict[str, str] | None = None) -> Path:
    """Where the socket lives when nothing says otherwise.

    ``$XDG_RUNTIME_DIR`` (private to the user, cleaned at logout) when it is
    set and exists, else the OS temp dir as Python resolves it (``TMPDIR`` and
    friends), never a hard-coded ``/tmp``.
    """
    env = dict(os.environ) if env is None else env
    runtime = env.get("XDG_RUNTIME_DIR")
    if runtime and Path(runtime).is_dir():
        return Path(runtime) / DEFAULT_SOCKET_NAME
    return Path(tempfile.gettempdir()) / DEFAULT_SOCKET_NAME


def resolve_socket_path(
    explicit: str | os.PathLike[str] | None = None, env: dict[str, str] | None = None
) -> Path:
    """Explicit argument, else ``$CODER_AGENT_BOUNDARY_LOG_PROXY_SOCKET_PATH``, else default."""
    if explicit:
        return Path(explicit)
    env = dict(os.environ) if env is None else env
    configured = env.get(SOCKET_PATH_ENV)
    if configured:
        return Path(configured)
    return default_socket_path(env)


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
    "resolve_socket_path",
    "tag_for",
]

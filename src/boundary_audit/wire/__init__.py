"""The boundary -> agent wire protocol: framing, schema, socket path.

Compatible with Coder's boundary and workspace agent. Sans-I/O core
(:func:`encode_frame`, :class:`FrameDecoder`) with thin blocking helpers
(re-exported here) and asyncio helpers (:mod:`boundary_audit.wire.aio`).
Spill files (:mod:`boundary_audit.wire.spill`) hold the same frames on disk.
"""

from . import aio, blocking, private, spill
from .blocking import read_frame, read_message, write_frame, write_message
from .drops import DropReason, DropSource
from .errors import (
    OversizeFrameError,
    ProtocolError,
    TruncatedFrameError,
    UndecodablePayloadError,
    UnknownTagError,
    WireError,
)
from .framing import (
    HEADER_SIZE,
    KNOWN_TAGS,
    LENGTH_BITS,
    LENGTH_MASK,
    MAX_EVENTS_PER_FRAME,
    MAX_FRAME_SIZE,
    MAX_PAYLOAD_SIZE,
    Frame,
    FrameDecoder,
    Tag,
    encode_frame,
    encode_header,
    parse_header,
)
from .messages import (
    DEFAULT_SOCKET_NAME,
    EXTENSION_FIRST_FIELD,
    SOCKET_PATH_ENV,
    BoundaryLog,
    BoundaryMessage,
    BoundaryStatus,
    ReportBoundaryLogsRequest,
    WireMessage,
    as_envelope,
    decode_payload,
    default_socket_path,
    encode_message,
    legacy_socket_path,
    resolve_socket_path,
    socket_path_candidates,
    tag_for,
)
from .pb.boundary_message_pb2 import Ack, SessionOpen, SessionSeal
from .pb.ingest_pb2 import DropReport, IngestRequest, SessionRecord

__all__ = [
    "DEFAULT_SOCKET_NAME",
    "EXTENSION_FIRST_FIELD",
    "HEADER_SIZE",
    "KNOWN_TAGS",
    "LENGTH_BITS",
    "LENGTH_MASK",
    "MAX_EVENTS_PER_FRAME",
    "MAX_FRAME_SIZE",
    "MAX_PAYLOAD_SIZE",
    "SOCKET_PATH_ENV",
    "Ack",
    "BoundaryLog",
    "BoundaryMessage",
    "BoundaryStatus",
    "DropReason",
    "DropReport",
    "DropSource",
    "Frame",
    "FrameDecoder",
    "IngestRequest",
    "OversizeFrameError",
    "ProtocolError",
    "ReportBoundaryLogsRequest",
    "SessionOpen",
    "SessionRecord",
    "SessionSeal",
    "Tag",
    "TruncatedFrameError",
    "UndecodablePayloadError",
    "UnknownTagError",
    "WireError",
    "WireMessage",
    "aio",
    "as_envelope",
    "blocking",
    "decode_payload",
    "default_socket_path",
    "encode_frame",
    "encode_header",
    "encode_message",
    "legacy_socket_path",
    "parse_header",
    "private",
    "read_frame",
    "read_message",
    "resolve_socket_path",
    "socket_path_candidates",
    "spill",
    "tag_for",
    "write_frame",
    "write_message",
]

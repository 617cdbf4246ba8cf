import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from boundary_audit.wire.pb import boundary_log_pb2 as _boundary_log_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class BoundaryMessage(_message.Message):
    __slots__ = ("logs", "status")
    LOGS_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    logs: _boundary_log_pb2.ReportBoundaryLogsRequest
    status: BoundaryStatus
    def __init__(self, logs: _Optional[_Union[_boundary_log_pb2.ReportBoundaryLogsRequest, _Mapping]] = ..., status: _Optional[_Union[BoundaryStatus, _Mapping]] = ...) -> None: ...

class BoundaryStatus(_message.Message):
    __slots__ = ("dropped_channel_full", "dropped_batch_full", "session_id", "open", "seal", "ack")
    DROPPED_CHANNEL_FULL_FIELD_NUMBER: _ClassVar[int]
    DROPPED_BATCH_FULL_FIELD_NUMBER: _ClassVar[int]
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    OPEN_FIELD_NUMBER: _ClassVar[int]
    SEAL_FIELD_NUMBER: _ClassVar[int]
    ACK_FIELD_NUMBER: _ClassVar[int]
    dropped_channel_full: int
    dropped_batch_full: int
    session_id: str
    open: SessionOpen
    seal: SessionSeal
    ack: Ack
    def __init__(self, dropped_channel_full: _Optional[int] = ..., dropped_batch_full: _Optional[int] = ..., session_id: _Optional[str] = ..., open: _Optional[_Union[SessionOpen, _Mapping]] = ..., seal: _Optional[_Union[SessionSeal, _Mapping]] = ..., ack: _Optional[_Union[Ack, _Mapping]] = ...) -> None: ...

class SessionOpen(_message.Message):
    __slots__ = ("want_acks", "sender", "first_sequence_number")
    WANT_ACKS_FIELD_NUMBER: _ClassVar[int]
    SENDER_FIELD_NUMBER: _ClassVar[int]
    FIRST_SEQUENCE_NUMBER_FIELD_NUMBER: _ClassVar[int]
    want_acks: bool
    sender: str
    first_sequence_number: int
    def __init__(self, want_acks: _Optional[bool] = ..., sender: _Optional[str] = ..., first_sequence_number: _Optional[int] = ...) -> None: ...

class Ack(_message.Message):
    __slots__ = ("frames",)
    FRAMES_FIELD_NUMBER: _ClassVar[int]
    frames: int
    def __init__(self, frames: _Optional[int] = ...) -> None: ...

class SessionSeal(_message.Message):
    __slots__ = ("events_made", "events_sent", "dropped", "undelivered", "spilled", "sealed_at", "chain_head", "chain_count")
    class DroppedEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    EVENTS_MADE_FIELD_NUMBER: _ClassVar[int]
    EVENTS_SENT_FIELD_NUMBER: _ClassVar[int]
    DROPPED_FIELD_NUMBER: _ClassVar[int]
    UNDELIVERED_FIELD_NUMBER: _ClassVar[int]
    SPILLED_FIELD_NUMBER: _ClassVar[int]
    SEALED_AT_FIELD_NUMBER: _ClassVar[int]
    CHAIN_HEAD_FIELD_NUMBER: _ClassVar[int]
    CHAIN_COUNT_FIELD_NUMBER: _ClassVar[int]
    events_made: int
    events_sent: int
    dropped: _containers.ScalarMap[str, int]
    undelivered: int
    spilled: int
    sealed_at: _timestamp_pb2.Timestamp
    chain_head: bytes
    chain_count: int
    def __init__(self, events_made: _Optional[int] = ..., events_sent: _Optional[int] = ..., dropped: _Optional[_Mapping[str, int]] = ..., undelivered: _Optional[int] = ..., spilled: _Optional[int] = ..., sealed_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., chain_head: _Optional[bytes] = ..., chain_count: _Optional[int] = ...) -> None: ...

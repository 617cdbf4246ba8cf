import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from boundary_audit.wire.pb import boundary_log_pb2 as _boundary_log_pb2
from boundary_audit.wire.pb import boundary_message_pb2 as _boundary_message_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class DropReport(_message.Message):
    __slots__ = ("report_id", "session_id", "dropped", "time", "source")
    class DroppedEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    REPORT_ID_FIELD_NUMBER: _ClassVar[int]
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    DROPPED_FIELD_NUMBER: _ClassVar[int]
    TIME_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    report_id: str
    session_id: str
    dropped: _containers.ScalarMap[str, int]
    time: _timestamp_pb2.Timestamp
    source: str
    def __init__(self, report_id: _Optional[str] = ..., session_id: _Optional[str] = ..., dropped: _Optional[_Mapping[str, int]] = ..., time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., source: _Optional[str] = ...) -> None: ...

class SessionRecord(_message.Message):
    __slots__ = ("record_id", "session_id", "open", "seal", "observed_at", "confined_process_name")
    RECORD_ID_FIELD_NUMBER: _ClassVar[int]
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    OPEN_FIELD_NUMBER: _ClassVar[int]
    SEAL_FIELD_NUMBER: _ClassVar[int]
    OBSERVED_AT_FIELD_NUMBER: _ClassVar[int]
    CONFINED_PROCESS_NAME_FIELD_NUMBER: _ClassVar[int]
    record_id: str
    session_id: str
    open: _boundary_message_pb2.SessionOpen
    seal: _boundary_message_pb2.SessionSeal
    observed_at: _timestamp_pb2.Timestamp
    confined_process_name: str
    def __init__(self, record_id: _Optional[str] = ..., session_id: _Optional[str] = ..., open: _Optional[_Union[_boundary_message_pb2.SessionOpen, _Mapping]] = ..., seal: _Optional[_Union[_boundary_message_pb2.SessionSeal, _Mapping]] = ..., observed_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., confined_process_name: _Optional[str] = ...) -> None: ...

class IngestRequest(_message.Message):
    __slots__ = ("batch_id", "logs", "drops", "sessions")
    BATCH_ID_FIELD_NUMBER: _ClassVar[int]
    LOGS_FIELD_NUMBER: _ClassVar[int]
    DROPS_FIELD_NUMBER: _ClassVar[int]
    SESSIONS_FIELD_NUMBER: _ClassVar[int]
    batch_id: str
    logs: _containers.RepeatedCompositeFieldContainer[_boundary_log_pb2.ReportBoundaryLogsRequest]
    drops: _containers.RepeatedCompositeFieldContainer[DropReport]
    sessions: _containers.RepeatedCompositeFieldContainer[SessionRecord]
    def __init__(self, batch_id: _Optional[str] = ..., logs: _Optional[_Iterable[_Union[_boundary_log_pb2.ReportBoundaryLogsRequest, _Mapping]]] = ..., drops: _Optional[_Iterable[_Union[DropReport, _Mapping]]] = ..., sessions: _Optional[_Iterable[_Union[SessionRecord, _Mapping]]] = ...) -> None: ...

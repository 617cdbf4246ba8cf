import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class BoundaryLog(_message.Message):
    __slots__ = ("allowed", "time", "http_request", "sequence_number", "chain_digest")
    class HttpRequest(_message.Message):
        __slots__ = ("method", "url", "matched_rule")
        METHOD_FIELD_NUMBER: _ClassVar[int]
        URL_FIELD_NUMBER: _ClassVar[int]
        MATCHED_RULE_FIELD_NUMBER: _ClassVar[int]
        method: str
        url: str
        matched_rule: str
        def __init__(self, method: _Optional[str] = ..., url: _Optional[str] = ..., matched_rule: _Optional[str] = ...) -> None: ...
    ALLOWED_FIELD_NUMBER: _ClassVar[int]
    TIME_FIELD_NUMBER: _ClassVar[int]
    HTTP_REQUEST_FIELD_NUMBER: _ClassVar[int]
    SEQUENCE_NUMBER_FIELD_NUMBER: _ClassVar[int]
    CHAIN_DIGEST_FIELD_NUMBER: _ClassVar[int]
    allowed: bool
    time: _timestamp_pb2.Timestamp
    http_request: BoundaryLog.HttpRequest
    sequence_number: int
    chain_digest: bytes
    def __init__(self, allowed: _Optional[bool] = ..., time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., http_request: _Optional[_Union[BoundaryLog.HttpRequest, _Mapping]] = ..., sequence_number: _Optional[int] = ..., chain_digest: _Optional[bytes] = ...) -> None: ...

class ReportBoundaryLogsRequest(_message.Message):
    __slots__ = ("logs", "session_id", "confined_process_name")
    LOGS_FIELD_NUMBER: _ClassVar[int]
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    CONFINED_PROCESS_NAME_FIELD_NUMBER: _ClassVar[int]
    logs: _containers.RepeatedCompositeFieldContainer[BoundaryLog]
    session_id: str
    confined_process_name: str
    def __init__(self, logs: _Optional[_Iterable[_Union[BoundaryLog, _Mapping]]] = ..., session_id: _Optional[str] = ..., confined_process_name: _Optional[str] = ...) -> None: ...

import datetime

from google.api import annotations_pb2 as _annotations_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ForwarderHealthRequest(_message.Message):
    __slots__ = ("tenant", "sink")
    TENANT_FIELD_NUMBER: _ClassVar[int]
    SINK_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    sink: str
    def __init__(self, tenant: _Optional[str] = ..., sink: _Optional[str] = ...) -> None: ...

class ForwarderHealth(_message.Message):
    __slots__ = ("sink", "tenant", "cursor_seq", "head_seq", "lag_events", "lag_seconds", "last_success_at", "last_error", "last_error_at", "dead_letters", "lease_holder", "lease_expires_at")
    SINK_FIELD_NUMBER: _ClassVar[int]
    TENANT_FIELD_NUMBER: _ClassVar[int]
    CURSOR_SEQ_FIELD_NUMBER: _ClassVar[int]
    HEAD_SEQ_FIELD_NUMBER: _ClassVar[int]
    LAG_EVENTS_FIELD_NUMBER: _ClassVar[int]
    LAG_SECONDS_FIELD_NUMBER: _ClassVar[int]
    LAST_SUCCESS_AT_FIELD_NUMBER: _ClassVar[int]
    LAST_ERROR_FIELD_NUMBER: _ClassVar[int]
    LAST_ERROR_AT_FIELD_NUMBER: _ClassVar[int]
    DEAD_LETTERS_FIELD_NUMBER: _ClassVar[int]
    LEASE_HOLDER_FIELD_NUMBER: _ClassVar[int]
    LEASE_EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    sink: str
    tenant: str
    cursor_seq: int
    head_seq: int
    lag_events: int
    lag_seconds: float
    last_success_at: _timestamp_pb2.Timestamp
    last_error: str
    last_error_at: _timestamp_pb2.Timestamp
    dead_letters: int
    lease_holder: str
    lease_expires_at: _timestamp_pb2.Timestamp
    def __init__(self, sink: _Optional[str] = ..., tenant: _Optional[str] = ..., cursor_seq: _Optional[int] = ..., head_seq: _Optional[int] = ..., lag_events: _Optional[int] = ..., lag_seconds: _Optional[float] = ..., last_success_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., last_error: _Optional[str] = ..., last_error_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., dead_letters: _Optional[int] = ..., lease_holder: _Optional[str] = ..., lease_expires_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class ForwarderHealthResponse(_message.Message):
    __slots__ = ("forwarders",)
    FORWARDERS_FIELD_NUMBER: _ClassVar[int]
    forwarders: _containers.RepeatedCompositeFieldContainer[ForwarderHealth]
    def __init__(self, forwarders: _Optional[_Iterable[_Union[ForwarderHealth, _Mapping]]] = ...) -> None: ...

class ListDeadLettersRequest(_message.Message):
    __slots__ = ("tenant", "sink", "include_replayed")
    TENANT_FIELD_NUMBER: _ClassVar[int]
    SINK_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_REPLAYED_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    sink: str
    include_replayed: bool
    def __init__(self, tenant: _Optional[str] = ..., sink: _Optional[str] = ..., include_replayed: _Optional[bool] = ...) -> None: ...

class DeadLetter(_message.Message):
    __slots__ = ("id", "tenant", "sink", "from_seq", "to_seq", "reason", "attempts", "created_at", "replayed_at")
    ID_FIELD_NUMBER: _ClassVar[int]
    TENANT_FIELD_NUMBER: _ClassVar[int]
    SINK_FIELD_NUMBER: _ClassVar[int]
    FROM_SEQ_FIELD_NUMBER: _ClassVar[int]
    TO_SEQ_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    REPLAYED_AT_FIELD_NUMBER: _ClassVar[int]
    id: int
    tenant: str
    sink: str
    from_seq: int
    to_seq: int
    reason: str
    attempts: int
    created_at: _timestamp_pb2.Timestamp
    replayed_at: _timestamp_pb2.Timestamp
    def __init__(self, id: _Optional[int] = ..., tenant: _Optional[str] = ..., sink: _Optional[str] = ..., from_seq: _Optional[int] = ..., to_seq: _Optional[int] = ..., reason: _Optional[str] = ..., attempts: _Optional[int] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., replayed_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class ListDeadLettersResponse(_message.Message):
    __slots__ = ("dead_letters",)
    DEAD_LETTERS_FIELD_NUMBER: _ClassVar[int]
    dead_letters: _containers.RepeatedCompositeFieldContainer[DeadLetter]
    def __init__(self, dead_letters: _Optional[_Iterable[_Union[DeadLetter, _Mapping]]] = ...) -> None: ...

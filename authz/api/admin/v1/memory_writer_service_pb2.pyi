import datetime

from google.api import annotations_pb2 as _annotations_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class MemoryWriter(_message.Message):
    __slots__ = ("tenant", "writer_id", "public_key", "sources", "expires_at", "created_at", "created_by", "updated_at", "disabled", "disabled_at", "disabled_by", "previous_public_key", "previous_key_until")
    TENANT_FIELD_NUMBER: _ClassVar[int]
    WRITER_ID_FIELD_NUMBER: _ClassVar[int]
    PUBLIC_KEY_FIELD_NUMBER: _ClassVar[int]
    SOURCES_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    CREATED_BY_FIELD_NUMBER: _ClassVar[int]
    UPDATED_AT_FIELD_NUMBER: _ClassVar[int]
    DISABLED_FIELD_NUMBER: _ClassVar[int]
    DISABLED_AT_FIELD_NUMBER: _ClassVar[int]
    DISABLED_BY_FIELD_NUMBER: _ClassVar[int]
    PREVIOUS_PUBLIC_KEY_FIELD_NUMBER: _ClassVar[int]
    PREVIOUS_KEY_UNTIL_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    writer_id: str
    public_key: bytes
    sources: _containers.RepeatedScalarFieldContainer[str]
    expires_at: _timestamp_pb2.Timestamp
    created_at: _timestamp_pb2.Timestamp
    created_by: str
    updated_at: _timestamp_pb2.Timestamp
    disabled: bool
    disabled_at: _timestamp_pb2.Timestamp
    disabled_by: str
    previous_public_key: bytes
    previous_key_until: _timestamp_pb2.Timestamp
    def __init__(self, tenant: _Optional[str] = ..., writer_id: _Optional[str] = ..., public_key: _Optional[bytes] = ..., sources: _Optional[_Iterable[str]] = ..., expires_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., created_by: _Optional[str] = ..., updated_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., disabled: _Optional[bool] = ..., disabled_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., disabled_by: _Optional[str] = ..., previous_public_key: _Optional[bytes] = ..., previous_key_until: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class RegisterMemoryWriterRequest(_message.Message):
    __slots__ = ("tenant", "writer_id", "public_key", "sources", "expires_at")
    TENANT_FIELD_NUMBER: _ClassVar[int]
    WRITER_ID_FIELD_NUMBER: _ClassVar[int]
    PUBLIC_KEY_FIELD_NUMBER: _ClassVar[int]
    SOURCES_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    writer_id: str
    public_key: bytes
    sources: _containers.RepeatedScalarFieldContainer[str]
    expires_at: _timestamp_pb2.Timestamp
    def __init__(self, tenant: _Optional[str] = ..., writer_id: _Optional[str] = ..., public_key: _Optional[bytes] = ..., sources: _Optional[_Iterable[str]] = ..., expires_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class RegisterMemoryWriterResponse(_message.Message):
    __slots__ = ("writer",)
    WRITER_FIELD_NUMBER: _ClassVar[int]
    writer: MemoryWriter
    def __init__(self, writer: _Optional[_Union[MemoryWriter, _Mapping]] = ...) -> None: ...

class ListMemoryWritersRequest(_message.Message):
    __slots__ = ("tenant",)
    TENANT_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    def __init__(self, tenant: _Optional[str] = ...) -> None: ...

class ListMemoryWritersResponse(_message.Message):
    __slots__ = ("writers",)
    WRITERS_FIELD_NUMBER: _ClassVar[int]
    writers: _containers.RepeatedCompositeFieldContainer[MemoryWriter]
    def __init__(self, writers: _Optional[_Iterable[_Union[MemoryWriter, _Mapping]]] = ...) -> None: ...

class DisableMemoryWriterRequest(_message.Message):
    __slots__ = ("tenant", "writer_id")
    TENANT_FIELD_NUMBER: _ClassVar[int]
    WRITER_ID_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    writer_id: str
    def __init__(self, tenant: _Optional[str] = ..., writer_id: _Optional[str] = ...) -> None: ...

class DisableMemoryWriterResponse(_message.Message):
    __slots__ = ("writer",)
    WRITER_FIELD_NUMBER: _ClassVar[int]
    writer: MemoryWriter
    def __init__(self, writer: _Optional[_Union[MemoryWriter, _Mapping]] = ...) -> None: ...

class RotateMemoryWriterRequest(_message.Message):
    __slots__ = ("tenant", "writer_id", "public_key", "previous_key_grace_s")
    TENANT_FIELD_NUMBER: _ClassVar[int]
    WRITER_ID_FIELD_NUMBER: _ClassVar[int]
    PUBLIC_KEY_FIELD_NUMBER: _ClassVar[int]
    PREVIOUS_KEY_GRACE_S_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    writer_id: str
    public_key: bytes
    previous_key_grace_s: int
    def __init__(self, tenant: _Optional[str] = ..., writer_id: _Optional[str] = ..., public_key: _Optional[bytes] = ..., previous_key_grace_s: _Optional[int] = ...) -> None: ...

class RotateMemoryWriterResponse(_message.Message):
    __slots__ = ("writer",)
    WRITER_FIELD_NUMBER: _ClassVar[int]
    writer: MemoryWriter
    def __init__(self, writer: _Optional[_Union[MemoryWriter, _Mapping]] = ...) -> None: ...

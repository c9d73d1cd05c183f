import datetime

from google.api import annotations_pb2 as _annotations_pb2
from google.api import httpbody_pb2 as _httpbody_pb2
from google.protobuf import struct_pb2 as _struct_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class AuditDecision(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    AUDIT_DECISION_UNSPECIFIED: _ClassVar[AuditDecision]
    AUDIT_DECISION_ALLOW: _ClassVar[AuditDecision]
    AUDIT_DECISION_DENY: _ClassVar[AuditDecision]
    AUDIT_DECISION_ESCALATE: _ClassVar[AuditDecision]
    AUDIT_DECISION_ADMIN: _ClassVar[AuditDecision]

class ExportFormat(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    EXPORT_FORMAT_UNSPECIFIED: _ClassVar[ExportFormat]
    EXPORT_FORMAT_NDJSON: _ClassVar[ExportFormat]
    EXPORT_FORMAT_CSV: _ClassVar[ExportFormat]
AUDIT_DECISION_UNSPECIFIED: AuditDecision
AUDIT_DECISION_ALLOW: AuditDecision
AUDIT_DECISION_DENY: AuditDecision
AUDIT_DECISION_ESCALATE: AuditDecision
AUDIT_DECISION_ADMIN: AuditDecision
EXPORT_FORMAT_UNSPECIFIED: ExportFormat
EXPORT_FORMAT_NDJSON: ExportFormat
EXPORT_FORMAT_CSV: ExportFormat

class AuditEvent(_message.Message):
    __slots__ = ("tenant", "seq", "time", "decision", "agent", "prev_hash", "hash", "event")
    TENANT_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    TIME_FIELD_NUMBER: _ClassVar[int]
    DECISION_FIELD_NUMBER: _ClassVar[int]
    AGENT_FIELD_NUMBER: _ClassVar[int]
    PREV_HASH_FIELD_NUMBER: _ClassVar[int]
    HASH_FIELD_NUMBER: _ClassVar[int]
    EVENT_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    seq: int
    time: _timestamp_pb2.Timestamp
    decision: AuditDecision
    agent: str
    prev_hash: str
    hash: str
    event: _struct_pb2.Struct
    def __init__(self, tenant: _Optional[str] = ..., seq: _Optional[int] = ..., time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., decision: _Optional[_Union[AuditDecision, str]] = ..., agent: _Optional[str] = ..., prev_hash: _Optional[str] = ..., hash: _Optional[str] = ..., event: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ...) -> None: ...

class QueryAuditEventsRequest(_message.Message):
    __slots__ = ("tenant", "since", "until", "agent", "decision", "page_size", "page_token")
    TENANT_FIELD_NUMBER: _ClassVar[int]
    SINCE_FIELD_NUMBER: _ClassVar[int]
    UNTIL_FIELD_NUMBER: _ClassVar[int]
    AGENT_FIELD_NUMBER: _ClassVar[int]
    DECISION_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    since: _timestamp_pb2.Timestamp
    until: _timestamp_pb2.Timestamp
    agent: str
    decision: AuditDecision
    page_size: int
    page_token: str
    def __init__(self, tenant: _Optional[str] = ..., since: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., until: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., agent: _Optional[str] = ..., decision: _Optional[_Union[AuditDecision, str]] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class QueryAuditEventsResponse(_message.Message):
    __slots__ = ("events", "next_page_token")
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    events: _containers.RepeatedCompositeFieldContainer[AuditEvent]
    next_page_token: str
    def __init__(self, events: _Optional[_Iterable[_Union[AuditEvent, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class VerifyAuditChainRequest(_message.Message):
    __slots__ = ("tenant", "checkpoint")
    TENANT_FIELD_NUMBER: _ClassVar[int]
    CHECKPOINT_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    checkpoint: str
    def __init__(self, tenant: _Optional[str] = ..., checkpoint: _Optional[str] = ...) -> None: ...

class ChainVerification(_message.Message):
    __slots__ = ("tenant", "ok", "events_checked", "head_seq", "chain_seq", "chain_hash", "first_bad_seq", "problem", "checkpoints_checked", "summary")
    TENANT_FIELD_NUMBER: _ClassVar[int]
    OK_FIELD_NUMBER: _ClassVar[int]
    EVENTS_CHECKED_FIELD_NUMBER: _ClassVar[int]
    HEAD_SEQ_FIELD_NUMBER: _ClassVar[int]
    CHAIN_SEQ_FIELD_NUMBER: _ClassVar[int]
    CHAIN_HASH_FIELD_NUMBER: _ClassVar[int]
    FIRST_BAD_SEQ_FIELD_NUMBER: _ClassVar[int]
    PROBLEM_FIELD_NUMBER: _ClassVar[int]
    CHECKPOINTS_CHECKED_FIELD_NUMBER: _ClassVar[int]
    SUMMARY_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    ok: bool
    events_checked: int
    head_seq: int
    chain_seq: int
    chain_hash: str
    first_bad_seq: int
    problem: str
    checkpoints_checked: int
    summary: str
    def __init__(self, tenant: _Optional[str] = ..., ok: _Optional[bool] = ..., events_checked: _Optional[int] = ..., head_seq: _Optional[int] = ..., chain_seq: _Optional[int] = ..., chain_hash: _Optional[str] = ..., first_bad_seq: _Optional[int] = ..., problem: _Optional[str] = ..., checkpoints_checked: _Optional[int] = ..., summary: _Optional[str] = ...) -> None: ...

class VerifyAuditChainResponse(_message.Message):
    __slots__ = ("results", "ok")
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    OK_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[ChainVerification]
    ok: bool
    def __init__(self, results: _Optional[_Iterable[_Union[ChainVerification, _Mapping]]] = ..., ok: _Optional[bool] = ...) -> None: ...

class ExportAuditEventsRequest(_message.Message):
    __slots__ = ("tenant", "format", "since", "until", "agent", "decision")
    TENANT_FIELD_NUMBER: _ClassVar[int]
    FORMAT_FIELD_NUMBER: _ClassVar[int]
    SINCE_FIELD_NUMBER: _ClassVar[int]
    UNTIL_FIELD_NUMBER: _ClassVar[int]
    AGENT_FIELD_NUMBER: _ClassVar[int]
    DECISION_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    format: ExportFormat
    since: _timestamp_pb2.Timestamp
    until: _timestamp_pb2.Timestamp
    agent: str
    decision: AuditDecision
    def __init__(self, tenant: _Optional[str] = ..., format: _Optional[_Union[ExportFormat, str]] = ..., since: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., until: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., agent: _Optional[str] = ..., decision: _Optional[_Union[AuditDecision, str]] = ...) -> None: ...

class AuditCheckpoint(_message.Message):
    __slots__ = ("tenant", "seq", "hash", "created_at", "public_key", "signature", "exported")
    TENANT_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    HASH_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    PUBLIC_KEY_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    EXPORTED_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    seq: int
    hash: str
    created_at: str
    public_key: str
    signature: str
    exported: str
    def __init__(self, tenant: _Optional[str] = ..., seq: _Optional[int] = ..., hash: _Optional[str] = ..., created_at: _Optional[str] = ..., public_key: _Optional[str] = ..., signature: _Optional[str] = ..., exported: _Optional[str] = ...) -> None: ...

class CreateAuditCheckpointRequest(_message.Message):
    __slots__ = ("tenant",)
    TENANT_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    def __init__(self, tenant: _Optional[str] = ...) -> None: ...

class CreateAuditCheckpointResponse(_message.Message):
    __slots__ = ("checkpoint",)
    CHECKPOINT_FIELD_NUMBER: _ClassVar[int]
    checkpoint: AuditCheckpoint
    def __init__(self, checkpoint: _Optional[_Union[AuditCheckpoint, _Mapping]] = ...) -> None: ...

class ListAuditCheckpointsRequest(_message.Message):
    __slots__ = ("tenant",)
    TENANT_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    def __init__(self, tenant: _Optional[str] = ...) -> None: ...

class ListAuditCheckpointsResponse(_message.Message):
    __slots__ = ("checkpoints",)
    CHECKPOINTS_FIELD_NUMBER: _ClassVar[int]
    checkpoints: _containers.RepeatedCompositeFieldContainer[AuditCheckpoint]
    def __init__(self, checkpoints: _Optional[_Iterable[_Union[AuditCheckpoint, _Mapping]]] = ...) -> None: ...

import datetime

from google.api import annotations_pb2 as _annotations_pb2
from google.protobuf import struct_pb2 as _struct_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Sink(_message.Message):
    __slots__ = ("name", "kind", "options", "secret", "version", "created_at", "updated_at", "forwarder_sink")
    NAME_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    SECRET_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    UPDATED_AT_FIELD_NUMBER: _ClassVar[int]
    FORWARDER_SINK_FIELD_NUMBER: _ClassVar[int]
    name: str
    kind: str
    options: _struct_pb2.Struct
    secret: str
    version: int
    created_at: _timestamp_pb2.Timestamp
    updated_at: _timestamp_pb2.Timestamp
    forwarder_sink: str
    def __init__(self, name: _Optional[str] = ..., kind: _Optional[str] = ..., options: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., secret: _Optional[str] = ..., version: _Optional[int] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., updated_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., forwarder_sink: _Optional[str] = ...) -> None: ...

class NotificationMatch(_message.Message):
    __slots__ = ("decisions", "checks", "codes", "tools", "actions")
    DECISIONS_FIELD_NUMBER: _ClassVar[int]
    CHECKS_FIELD_NUMBER: _ClassVar[int]
    CODES_FIELD_NUMBER: _ClassVar[int]
    TOOLS_FIELD_NUMBER: _ClassVar[int]
    ACTIONS_FIELD_NUMBER: _ClassVar[int]
    decisions: _containers.RepeatedScalarFieldContainer[str]
    checks: _containers.RepeatedScalarFieldContainer[str]
    codes: _containers.RepeatedScalarFieldContainer[int]
    tools: _containers.RepeatedScalarFieldContainer[str]
    actions: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, decisions: _Optional[_Iterable[str]] = ..., checks: _Optional[_Iterable[str]] = ..., codes: _Optional[_Iterable[int]] = ..., tools: _Optional[_Iterable[str]] = ..., actions: _Optional[_Iterable[str]] = ...) -> None: ...

class RateRule(_message.Message):
    __slots__ = ("more_than", "minutes")
    MORE_THAN_FIELD_NUMBER: _ClassVar[int]
    MINUTES_FIELD_NUMBER: _ClassVar[int]
    more_than: int
    minutes: int
    def __init__(self, more_than: _Optional[int] = ..., minutes: _Optional[int] = ...) -> None: ...

class NotificationRoute(_message.Message):
    __slots__ = ("name", "kind", "secret", "match", "rate", "link_template", "approval_link_template", "options", "version", "created_at", "updated_at", "forwarder_sink")
    NAME_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    SECRET_FIELD_NUMBER: _ClassVar[int]
    MATCH_FIELD_NUMBER: _ClassVar[int]
    RATE_FIELD_NUMBER: _ClassVar[int]
    LINK_TEMPLATE_FIELD_NUMBER: _ClassVar[int]
    APPROVAL_LINK_TEMPLATE_FIELD_NUMBER: _ClassVar[int]
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    UPDATED_AT_FIELD_NUMBER: _ClassVar[int]
    FORWARDER_SINK_FIELD_NUMBER: _ClassVar[int]
    name: str
    kind: str
    secret: str
    match: NotificationMatch
    rate: RateRule
    link_template: str
    approval_link_template: str
    options: _struct_pb2.Struct
    version: int
    created_at: _timestamp_pb2.Timestamp
    updated_at: _timestamp_pb2.Timestamp
    forwarder_sink: str
    def __init__(self, name: _Optional[str] = ..., kind: _Optional[str] = ..., secret: _Optional[str] = ..., match: _Optional[_Union[NotificationMatch, _Mapping]] = ..., rate: _Optional[_Union[RateRule, _Mapping]] = ..., link_template: _Optional[str] = ..., approval_link_template: _Optional[str] = ..., options: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., version: _Optional[int] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., updated_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., forwarder_sink: _Optional[str] = ...) -> None: ...

class CreateSinkRequest(_message.Message):
    __slots__ = ("tenant", "sink")
    TENANT_FIELD_NUMBER: _ClassVar[int]
    SINK_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    sink: Sink
    def __init__(self, tenant: _Optional[str] = ..., sink: _Optional[_Union[Sink, _Mapping]] = ...) -> None: ...

class CreateSinkResponse(_message.Message):
    __slots__ = ("sink",)
    SINK_FIELD_NUMBER: _ClassVar[int]
    sink: Sink
    def __init__(self, sink: _Optional[_Union[Sink, _Mapping]] = ...) -> None: ...

class ListSinksRequest(_message.Message):
    __slots__ = ("tenant",)
    TENANT_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    def __init__(self, tenant: _Optional[str] = ...) -> None: ...

class ListSinksResponse(_message.Message):
    __slots__ = ("sinks",)
    SINKS_FIELD_NUMBER: _ClassVar[int]
    sinks: _containers.RepeatedCompositeFieldContainer[Sink]
    def __init__(self, sinks: _Optional[_Iterable[_Union[Sink, _Mapping]]] = ...) -> None: ...

class GetSinkRequest(_message.Message):
    __slots__ = ("tenant", "name")
    TENANT_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    name: str
    def __init__(self, tenant: _Optional[str] = ..., name: _Optional[str] = ...) -> None: ...

class GetSinkResponse(_message.Message):
    __slots__ = ("sink",)
    SINK_FIELD_NUMBER: _ClassVar[int]
    sink: Sink
    def __init__(self, sink: _Optional[_Union[Sink, _Mapping]] = ...) -> None: ...

class UpdateSinkRequest(_message.Message):
    __slots__ = ("tenant", "name", "sink", "expected_version")
    TENANT_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    SINK_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_VERSION_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    name: str
    sink: Sink
    expected_version: int
    def __init__(self, tenant: _Optional[str] = ..., name: _Optional[str] = ..., sink: _Optional[_Union[Sink, _Mapping]] = ..., expected_version: _Optional[int] = ...) -> None: ...

class UpdateSinkResponse(_message.Message):
    __slots__ = ("sink",)
    SINK_FIELD_NUMBER: _ClassVar[int]
    sink: Sink
    def __init__(self, sink: _Optional[_Union[Sink, _Mapping]] = ...) -> None: ...

class DeleteSinkRequest(_message.Message):
    __slots__ = ("tenant", "name")
    TENANT_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    name: str
    def __init__(self, tenant: _Optional[str] = ..., name: _Optional[str] = ...) -> None: ...

class DeleteSinkResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class CreateNotificationRouteRequest(_message.Message):
    __slots__ = ("tenant", "route")
    TENANT_FIELD_NUMBER: _ClassVar[int]
    ROUTE_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    route: NotificationRoute
    def __init__(self, tenant: _Optional[str] = ..., route: _Optional[_Union[NotificationRoute, _Mapping]] = ...) -> None: ...

class CreateNotificationRouteResponse(_message.Message):
    __slots__ = ("route",)
    ROUTE_FIELD_NUMBER: _ClassVar[int]
    route: NotificationRoute
    def __init__(self, route: _Optional[_Union[NotificationRoute, _Mapping]] = ...) -> None: ...

class ListNotificationRoutesRequest(_message.Message):
    __slots__ = ("tenant",)
    TENANT_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    def __init__(self, tenant: _Optional[str] = ...) -> None: ...

class ListNotificationRoutesResponse(_message.Message):
    __slots__ = ("routes",)
    ROUTES_FIELD_NUMBER: _ClassVar[int]
    routes: _containers.RepeatedCompositeFieldContainer[NotificationRoute]
    def __init__(self, routes: _Optional[_Iterable[_Union[NotificationRoute, _Mapping]]] = ...) -> None: ...

class GetNotificationRouteRequest(_message.Message):
    __slots__ = ("tenant", "name")
    TENANT_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    name: str
    def __init__(self, tenant: _Optional[str] = ..., name: _Optional[str] = ...) -> None: ...

class GetNotificationRouteResponse(_message.Message):
    __slots__ = ("route",)
    ROUTE_FIELD_NUMBER: _ClassVar[int]
    route: NotificationRoute
    def __init__(self, route: _Optional[_Union[NotificationRoute, _Mapping]] = ...) -> None: ...

class UpdateNotificationRouteRequest(_message.Message):
    __slots__ = ("tenant", "name", "route", "expected_version")
    TENANT_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    ROUTE_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_VERSION_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    name: str
    route: NotificationRoute
    expected_version: int
    def __init__(self, tenant: _Optional[str] = ..., name: _Optional[str] = ..., route: _Optional[_Union[NotificationRoute, _Mapping]] = ..., expected_version: _Optional[int] = ...) -> None: ...

class UpdateNotificationRouteResponse(_message.Message):
    __slots__ = ("route",)
    ROUTE_FIELD_NUMBER: _ClassVar[int]
    route: NotificationRoute
    def __init__(self, route: _Optional[_Union[NotificationRoute, _Mapping]] = ...) -> None: ...

class DeleteNotificationRouteRequest(_message.Message):
    __slots__ = ("tenant", "name")
    TENANT_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    name: str
    def __init__(self, tenant: _Optional[str] = ..., name: _Optional[str] = ...) -> None: ...

class DeleteNotificationRouteResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ReplayDeadLetterRequest(_message.Message):
    __slots__ = ("tenant", "id")
    TENANT_FIELD_NUMBER: _ClassVar[int]
    ID_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    id: int
    def __init__(self, tenant: _Optional[str] = ..., id: _Optional[int] = ...) -> None: ...

class ReplayDeadLetterResponse(_message.Message):
    __slots__ = ("sink", "from_seq", "to_seq", "replay_requested_at")
    SINK_FIELD_NUMBER: _ClassVar[int]
    FROM_SEQ_FIELD_NUMBER: _ClassVar[int]
    TO_SEQ_FIELD_NUMBER: _ClassVar[int]
    REPLAY_REQUESTED_AT_FIELD_NUMBER: _ClassVar[int]
    sink: str
    from_seq: int
    to_seq: int
    replay_requested_at: _timestamp_pb2.Timestamp
    def __init__(self, sink: _Optional[str] = ..., from_seq: _Optional[int] = ..., to_seq: _Optional[int] = ..., replay_requested_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

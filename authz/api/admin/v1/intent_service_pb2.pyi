import datetime

from google.api import annotations_pb2 as _annotations_pb2
from google.protobuf import field_mask_pb2 as _field_mask_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class UndeterminedAction(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    UNDETERMINED_ACTION_UNSPECIFIED: _ClassVar[UndeterminedAction]
    UNDETERMINED_ACTION_DENY: _ClassVar[UndeterminedAction]
    UNDETERMINED_ACTION_POLICY: _ClassVar[UndeterminedAction]
UNDETERMINED_ACTION_UNSPECIFIED: UndeterminedAction
UNDETERMINED_ACTION_DENY: UndeterminedAction
UNDETERMINED_ACTION_POLICY: UndeterminedAction

class IntentSettings(_message.Message):
    __slots__ = ("undetermined", "tools_url", "refresh_interval_s")
    UNDETERMINED_FIELD_NUMBER: _ClassVar[int]
    TOOLS_URL_FIELD_NUMBER: _ClassVar[int]
    REFRESH_INTERVAL_S_FIELD_NUMBER: _ClassVar[int]
    undetermined: UndeterminedAction
    tools_url: str
    refresh_interval_s: int
    def __init__(self, undetermined: _Optional[_Union[UndeterminedAction, str]] = ..., tools_url: _Optional[str] = ..., refresh_interval_s: _Optional[int] = ...) -> None: ...

class IntentCatalogState(_message.Message):
    __slots__ = ("upstream_tools", "fetched", "catalog_tools", "overrides")
    UPSTREAM_TOOLS_FIELD_NUMBER: _ClassVar[int]
    FETCHED_FIELD_NUMBER: _ClassVar[int]
    CATALOG_TOOLS_FIELD_NUMBER: _ClassVar[int]
    OVERRIDES_FIELD_NUMBER: _ClassVar[int]
    upstream_tools: int
    fetched: bool
    catalog_tools: _containers.RepeatedScalarFieldContainer[str]
    overrides: int
    def __init__(self, upstream_tools: _Optional[int] = ..., fetched: _Optional[bool] = ..., catalog_tools: _Optional[_Iterable[str]] = ..., overrides: _Optional[int] = ...) -> None: ...

class GetIntentSettingsRequest(_message.Message):
    __slots__ = ("tenant", "server")
    TENANT_FIELD_NUMBER: _ClassVar[int]
    SERVER_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    server: str
    def __init__(self, tenant: _Optional[str] = ..., server: _Optional[str] = ...) -> None: ...

class GetIntentSettingsResponse(_message.Message):
    __slots__ = ("settings", "catalog")
    SETTINGS_FIELD_NUMBER: _ClassVar[int]
    CATALOG_FIELD_NUMBER: _ClassVar[int]
    settings: IntentSettings
    catalog: IntentCatalogState
    def __init__(self, settings: _Optional[_Union[IntentSettings, _Mapping]] = ..., catalog: _Optional[_Union[IntentCatalogState, _Mapping]] = ...) -> None: ...

class UpdateIntentSettingsRequest(_message.Message):
    __slots__ = ("tenant", "settings", "update_mask")
    TENANT_FIELD_NUMBER: _ClassVar[int]
    SETTINGS_FIELD_NUMBER: _ClassVar[int]
    UPDATE_MASK_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    settings: IntentSettings
    update_mask: _field_mask_pb2.FieldMask
    def __init__(self, tenant: _Optional[str] = ..., settings: _Optional[_Union[IntentSettings, _Mapping]] = ..., update_mask: _Optional[_Union[_field_mask_pb2.FieldMask, _Mapping]] = ...) -> None: ...

class UpdateIntentSettingsResponse(_message.Message):
    __slots__ = ("settings", "catalog")
    SETTINGS_FIELD_NUMBER: _ClassVar[int]
    CATALOG_FIELD_NUMBER: _ClassVar[int]
    settings: IntentSettings
    catalog: IntentCatalogState
    def __init__(self, settings: _Optional[_Union[IntentSettings, _Mapping]] = ..., catalog: _Optional[_Union[IntentCatalogState, _Mapping]] = ...) -> None: ...

class RefreshIntentCatalogRequest(_message.Message):
    __slots__ = ("tenant", "server")
    TENANT_FIELD_NUMBER: _ClassVar[int]
    SERVER_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    server: str
    def __init__(self, tenant: _Optional[str] = ..., server: _Optional[str] = ...) -> None: ...

class RefreshIntentCatalogResponse(_message.Message):
    __slots__ = ("outcome", "catalog", "fetched_at")
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    CATALOG_FIELD_NUMBER: _ClassVar[int]
    FETCHED_AT_FIELD_NUMBER: _ClassVar[int]
    outcome: str
    catalog: IntentCatalogState
    fetched_at: _timestamp_pb2.Timestamp
    def __init__(self, outcome: _Optional[str] = ..., catalog: _Optional[_Union[IntentCatalogState, _Mapping]] = ..., fetched_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

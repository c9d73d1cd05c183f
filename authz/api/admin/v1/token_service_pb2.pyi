import datetime

from google.api import annotations_pb2 as _annotations_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class RevocationKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    REVOCATION_KIND_UNSPECIFIED: _ClassVar[RevocationKind]
    REVOCATION_KIND_JTI: _ClassVar[RevocationKind]
    REVOCATION_KIND_TOKEN_ID: _ClassVar[RevocationKind]
REVOCATION_KIND_UNSPECIFIED: RevocationKind
REVOCATION_KIND_JTI: RevocationKind
REVOCATION_KIND_TOKEN_ID: RevocationKind

class MintTokenRequest(_message.Message):
    __slots__ = ("tenant", "agent", "tools", "expires_at", "ttl_seconds", "not_before", "max_calls", "max_cost", "args", "prompt_sha256", "caveats", "jti")
    TENANT_FIELD_NUMBER: _ClassVar[int]
    AGENT_FIELD_NUMBER: _ClassVar[int]
    TOOLS_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    TTL_SECONDS_FIELD_NUMBER: _ClassVar[int]
    NOT_BEFORE_FIELD_NUMBER: _ClassVar[int]
    MAX_CALLS_FIELD_NUMBER: _ClassVar[int]
    MAX_COST_FIELD_NUMBER: _ClassVar[int]
    ARGS_FIELD_NUMBER: _ClassVar[int]
    PROMPT_SHA256_FIELD_NUMBER: _ClassVar[int]
    CAVEATS_FIELD_NUMBER: _ClassVar[int]
    JTI_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    agent: str
    tools: _containers.RepeatedScalarFieldContainer[str]
    expires_at: _timestamp_pb2.Timestamp
    ttl_seconds: int
    not_before: _timestamp_pb2.Timestamp
    max_calls: int
    max_cost: str
    args: _containers.RepeatedScalarFieldContainer[str]
    prompt_sha256: str
    caveats: _containers.RepeatedScalarFieldContainer[str]
    jti: str
    def __init__(self, tenant: _Optional[str] = ..., agent: _Optional[str] = ..., tools: _Optional[_Iterable[str]] = ..., expires_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., ttl_seconds: _Optional[int] = ..., not_before: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., max_calls: _Optional[int] = ..., max_cost: _Optional[str] = ..., args: _Optional[_Iterable[str]] = ..., prompt_sha256: _Optional[str] = ..., caveats: _Optional[_Iterable[str]] = ..., jti: _Optional[str] = ...) -> None: ...

class MintTokenResponse(_message.Message):
    __slots__ = ("token", "tenant", "kid", "jti", "token_id", "caveats", "expires_at")
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    TENANT_FIELD_NUMBER: _ClassVar[int]
    KID_FIELD_NUMBER: _ClassVar[int]
    JTI_FIELD_NUMBER: _ClassVar[int]
    TOKEN_ID_FIELD_NUMBER: _ClassVar[int]
    CAVEATS_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    token: str
    tenant: str
    kid: str
    jti: str
    token_id: str
    caveats: _containers.RepeatedScalarFieldContainer[str]
    expires_at: _timestamp_pb2.Timestamp
    def __init__(self, token: _Optional[str] = ..., tenant: _Optional[str] = ..., kid: _Optional[str] = ..., jti: _Optional[str] = ..., token_id: _Optional[str] = ..., caveats: _Optional[_Iterable[str]] = ..., expires_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class AttenuateTokenRequest(_message.Message):
    __slots__ = ("token", "caveats")
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    CAVEATS_FIELD_NUMBER: _ClassVar[int]
    token: str
    caveats: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, token: _Optional[str] = ..., caveats: _Optional[_Iterable[str]] = ...) -> None: ...

class AttenuateTokenResponse(_message.Message):
    __slots__ = ("token", "token_id", "caveats")
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    TOKEN_ID_FIELD_NUMBER: _ClassVar[int]
    CAVEATS_FIELD_NUMBER: _ClassVar[int]
    token: str
    token_id: str
    caveats: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, token: _Optional[str] = ..., token_id: _Optional[str] = ..., caveats: _Optional[_Iterable[str]] = ...) -> None: ...

class InspectTokenRequest(_message.Message):
    __slots__ = ("token",)
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    token: str
    def __init__(self, token: _Optional[str] = ...) -> None: ...

class InspectTokenResponse(_message.Message):
    __slots__ = ("version", "tenant", "kid", "jti", "token_id", "caveats", "agent", "tools", "tools_restricted", "expires_at", "not_before", "problems", "signature_valid", "rejection", "revoked")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    TENANT_FIELD_NUMBER: _ClassVar[int]
    KID_FIELD_NUMBER: _ClassVar[int]
    JTI_FIELD_NUMBER: _ClassVar[int]
    TOKEN_ID_FIELD_NUMBER: _ClassVar[int]
    CAVEATS_FIELD_NUMBER: _ClassVar[int]
    AGENT_FIELD_NUMBER: _ClassVar[int]
    TOOLS_FIELD_NUMBER: _ClassVar[int]
    TOOLS_RESTRICTED_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    NOT_BEFORE_FIELD_NUMBER: _ClassVar[int]
    PROBLEMS_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_VALID_FIELD_NUMBER: _ClassVar[int]
    REJECTION_FIELD_NUMBER: _ClassVar[int]
    REVOKED_FIELD_NUMBER: _ClassVar[int]
    version: int
    tenant: str
    kid: str
    jti: str
    token_id: str
    caveats: _containers.RepeatedScalarFieldContainer[str]
    agent: str
    tools: _containers.RepeatedScalarFieldContainer[str]
    tools_restricted: bool
    expires_at: _timestamp_pb2.Timestamp
    not_before: _timestamp_pb2.Timestamp
    problems: _containers.RepeatedScalarFieldContainer[str]
    signature_valid: bool
    rejection: str
    revoked: bool
    def __init__(self, version: _Optional[int] = ..., tenant: _Optional[str] = ..., kid: _Optional[str] = ..., jti: _Optional[str] = ..., token_id: _Optional[str] = ..., caveats: _Optional[_Iterable[str]] = ..., agent: _Optional[str] = ..., tools: _Optional[_Iterable[str]] = ..., tools_restricted: _Optional[bool] = ..., expires_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., not_before: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., problems: _Optional[_Iterable[str]] = ..., signature_valid: _Optional[bool] = ..., rejection: _Optional[str] = ..., revoked: _Optional[bool] = ...) -> None: ...

class RevokeTokenRequest(_message.Message):
    __slots__ = ("tenant", "jti", "token_id", "token", "family", "reason")
    TENANT_FIELD_NUMBER: _ClassVar[int]
    JTI_FIELD_NUMBER: _ClassVar[int]
    TOKEN_ID_FIELD_NUMBER: _ClassVar[int]
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    FAMILY_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    jti: str
    token_id: str
    token: str
    family: bool
    reason: str
    def __init__(self, tenant: _Optional[str] = ..., jti: _Optional[str] = ..., token_id: _Optional[str] = ..., token: _Optional[str] = ..., family: _Optional[bool] = ..., reason: _Optional[str] = ...) -> None: ...

class RevokeTokenResponse(_message.Message):
    __slots__ = ("revocation",)
    REVOCATION_FIELD_NUMBER: _ClassVar[int]
    revocation: Revocation
    def __init__(self, revocation: _Optional[_Union[Revocation, _Mapping]] = ...) -> None: ...

class ListRevocationsRequest(_message.Message):
    __slots__ = ("tenant",)
    TENANT_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    def __init__(self, tenant: _Optional[str] = ...) -> None: ...

class ListRevocationsResponse(_message.Message):
    __slots__ = ("revocations",)
    REVOCATIONS_FIELD_NUMBER: _ClassVar[int]
    revocations: _containers.RepeatedCompositeFieldContainer[Revocation]
    def __init__(self, revocations: _Optional[_Iterable[_Union[Revocation, _Mapping]]] = ...) -> None: ...

class Revocation(_message.Message):
    __slots__ = ("tenant", "kind", "value", "reason", "revoked_at", "revoked_by")
    TENANT_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    REVOKED_AT_FIELD_NUMBER: _ClassVar[int]
    REVOKED_BY_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    kind: RevocationKind
    value: str
    reason: str
    revoked_at: _timestamp_pb2.Timestamp
    revoked_by: str
    def __init__(self, tenant: _Optional[str] = ..., kind: _Optional[_Union[RevocationKind, str]] = ..., value: _Optional[str] = ..., reason: _Optional[str] = ..., revoked_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., revoked_by: _Optional[str] = ...) -> None: ...

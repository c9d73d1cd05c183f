import datetime

from google.api import annotations_pb2 as _annotations_pb2
from google.protobuf import struct_pb2 as _struct_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class PolicyOutcome(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    POLICY_OUTCOME_UNSPECIFIED: _ClassVar[PolicyOutcome]
    POLICY_OUTCOME_ALLOW: _ClassVar[PolicyOutcome]
    POLICY_OUTCOME_DENY: _ClassVar[PolicyOutcome]
    POLICY_OUTCOME_ESCALATE: _ClassVar[PolicyOutcome]
POLICY_OUTCOME_UNSPECIFIED: PolicyOutcome
POLICY_OUTCOME_ALLOW: PolicyOutcome
POLICY_OUTCOME_DENY: PolicyOutcome
POLICY_OUTCOME_ESCALATE: PolicyOutcome

class PolicyDraft(_message.Message):
    __slots__ = ("tenant", "name", "source", "content_hash", "created_at", "updated_at", "updated_by")
    TENANT_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    CONTENT_HASH_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    UPDATED_AT_FIELD_NUMBER: _ClassVar[int]
    UPDATED_BY_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    name: str
    source: str
    content_hash: str
    created_at: _timestamp_pb2.Timestamp
    updated_at: _timestamp_pb2.Timestamp
    updated_by: str
    def __init__(self, tenant: _Optional[str] = ..., name: _Optional[str] = ..., source: _Optional[str] = ..., content_hash: _Optional[str] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., updated_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., updated_by: _Optional[str] = ...) -> None: ...

class PolicyVersion(_message.Message):
    __slots__ = ("tenant", "version", "source", "content_hash", "created_at", "created_by", "active")
    TENANT_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    CONTENT_HASH_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    CREATED_BY_FIELD_NUMBER: _ClassVar[int]
    ACTIVE_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    version: int
    source: str
    content_hash: str
    created_at: _timestamp_pb2.Timestamp
    created_by: str
    active: bool
    def __init__(self, tenant: _Optional[str] = ..., version: _Optional[int] = ..., source: _Optional[str] = ..., content_hash: _Optional[str] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., created_by: _Optional[str] = ..., active: _Optional[bool] = ...) -> None: ...

class Diagnostic(_message.Message):
    __slots__ = ("line", "column", "message")
    LINE_FIELD_NUMBER: _ClassVar[int]
    COLUMN_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    line: int
    column: int
    message: str
    def __init__(self, line: _Optional[int] = ..., column: _Optional[int] = ..., message: _Optional[str] = ...) -> None: ...

class CreateDraftRequest(_message.Message):
    __slots__ = ("tenant", "name", "source")
    TENANT_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    name: str
    source: str
    def __init__(self, tenant: _Optional[str] = ..., name: _Optional[str] = ..., source: _Optional[str] = ...) -> None: ...

class CreateDraftResponse(_message.Message):
    __slots__ = ("draft",)
    DRAFT_FIELD_NUMBER: _ClassVar[int]
    draft: PolicyDraft
    def __init__(self, draft: _Optional[_Union[PolicyDraft, _Mapping]] = ...) -> None: ...

class UpdateDraftRequest(_message.Message):
    __slots__ = ("tenant", "name", "source", "expected_hash")
    TENANT_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_HASH_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    name: str
    source: str
    expected_hash: str
    def __init__(self, tenant: _Optional[str] = ..., name: _Optional[str] = ..., source: _Optional[str] = ..., expected_hash: _Optional[str] = ...) -> None: ...

class UpdateDraftResponse(_message.Message):
    __slots__ = ("draft",)
    DRAFT_FIELD_NUMBER: _ClassVar[int]
    draft: PolicyDraft
    def __init__(self, draft: _Optional[_Union[PolicyDraft, _Mapping]] = ...) -> None: ...

class GetDraftRequest(_message.Message):
    __slots__ = ("tenant", "name")
    TENANT_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    name: str
    def __init__(self, tenant: _Optional[str] = ..., name: _Optional[str] = ...) -> None: ...

class GetDraftResponse(_message.Message):
    __slots__ = ("draft",)
    DRAFT_FIELD_NUMBER: _ClassVar[int]
    draft: PolicyDraft
    def __init__(self, draft: _Optional[_Union[PolicyDraft, _Mapping]] = ...) -> None: ...

class ListDraftsRequest(_message.Message):
    __slots__ = ("tenant",)
    TENANT_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    def __init__(self, tenant: _Optional[str] = ...) -> None: ...

class ListDraftsResponse(_message.Message):
    __slots__ = ("drafts",)
    DRAFTS_FIELD_NUMBER: _ClassVar[int]
    drafts: _containers.RepeatedCompositeFieldContainer[PolicyDraft]
    def __init__(self, drafts: _Optional[_Iterable[_Union[PolicyDraft, _Mapping]]] = ...) -> None: ...

class DeleteDraftRequest(_message.Message):
    __slots__ = ("tenant", "name")
    TENANT_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    name: str
    def __init__(self, tenant: _Optional[str] = ..., name: _Optional[str] = ...) -> None: ...

class DeleteDraftResponse(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class ValidatePolicyRequest(_message.Message):
    __slots__ = ("tenant", "draft", "source")
    TENANT_FIELD_NUMBER: _ClassVar[int]
    DRAFT_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    draft: str
    source: str
    def __init__(self, tenant: _Optional[str] = ..., draft: _Optional[str] = ..., source: _Optional[str] = ...) -> None: ...

class ValidatePolicyResponse(_message.Message):
    __slots__ = ("valid", "diagnostics", "content_hash")
    VALID_FIELD_NUMBER: _ClassVar[int]
    DIAGNOSTICS_FIELD_NUMBER: _ClassVar[int]
    CONTENT_HASH_FIELD_NUMBER: _ClassVar[int]
    valid: bool
    diagnostics: _containers.RepeatedCompositeFieldContainer[Diagnostic]
    content_hash: str
    def __init__(self, valid: _Optional[bool] = ..., diagnostics: _Optional[_Iterable[_Union[Diagnostic, _Mapping]]] = ..., content_hash: _Optional[str] = ...) -> None: ...

class DryRunPolicyRequest(_message.Message):
    __slots__ = ("tenant", "draft", "source", "inputs", "replay_last")
    TENANT_FIELD_NUMBER: _ClassVar[int]
    DRAFT_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    INPUTS_FIELD_NUMBER: _ClassVar[int]
    REPLAY_LAST_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    draft: str
    source: str
    inputs: _containers.RepeatedCompositeFieldContainer[_struct_pb2.Struct]
    replay_last: int
    def __init__(self, tenant: _Optional[str] = ..., draft: _Optional[str] = ..., source: _Optional[str] = ..., inputs: _Optional[_Iterable[_Union[_struct_pb2.Struct, _Mapping]]] = ..., replay_last: _Optional[int] = ...) -> None: ...

class DryRunResult(_message.Message):
    __slots__ = ("index", "input", "active_outcome", "active_reason", "candidate_outcome", "candidate_reason", "candidate_error", "changed", "audit_seq", "recorded_decision", "decision_id")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    INPUT_FIELD_NUMBER: _ClassVar[int]
    ACTIVE_OUTCOME_FIELD_NUMBER: _ClassVar[int]
    ACTIVE_REASON_FIELD_NUMBER: _ClassVar[int]
    CANDIDATE_OUTCOME_FIELD_NUMBER: _ClassVar[int]
    CANDIDATE_REASON_FIELD_NUMBER: _ClassVar[int]
    CANDIDATE_ERROR_FIELD_NUMBER: _ClassVar[int]
    CHANGED_FIELD_NUMBER: _ClassVar[int]
    AUDIT_SEQ_FIELD_NUMBER: _ClassVar[int]
    RECORDED_DECISION_FIELD_NUMBER: _ClassVar[int]
    DECISION_ID_FIELD_NUMBER: _ClassVar[int]
    index: int
    input: _struct_pb2.Struct
    active_outcome: PolicyOutcome
    active_reason: str
    candidate_outcome: PolicyOutcome
    candidate_reason: str
    candidate_error: bool
    changed: bool
    audit_seq: int
    recorded_decision: str
    decision_id: str
    def __init__(self, index: _Optional[int] = ..., input: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., active_outcome: _Optional[_Union[PolicyOutcome, str]] = ..., active_reason: _Optional[str] = ..., candidate_outcome: _Optional[_Union[PolicyOutcome, str]] = ..., candidate_reason: _Optional[str] = ..., candidate_error: _Optional[bool] = ..., changed: _Optional[bool] = ..., audit_seq: _Optional[int] = ..., recorded_decision: _Optional[str] = ..., decision_id: _Optional[str] = ...) -> None: ...

class DryRunPolicyResponse(_message.Message):
    __slots__ = ("candidate_hash", "active_version", "active_hash", "evaluated", "changed", "candidate_errors", "replayed", "changes", "results")
    CANDIDATE_HASH_FIELD_NUMBER: _ClassVar[int]
    ACTIVE_VERSION_FIELD_NUMBER: _ClassVar[int]
    ACTIVE_HASH_FIELD_NUMBER: _ClassVar[int]
    EVALUATED_FIELD_NUMBER: _ClassVar[int]
    CHANGED_FIELD_NUMBER: _ClassVar[int]
    CANDIDATE_ERRORS_FIELD_NUMBER: _ClassVar[int]
    REPLAYED_FIELD_NUMBER: _ClassVar[int]
    CHANGES_FIELD_NUMBER: _ClassVar[int]
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    candidate_hash: str
    active_version: int
    active_hash: str
    evaluated: int
    changed: int
    candidate_errors: int
    replayed: bool
    changes: _containers.RepeatedCompositeFieldContainer[DryRunResult]
    results: _containers.RepeatedCompositeFieldContainer[DryRunResult]
    def __init__(self, candidate_hash: _Optional[str] = ..., active_version: _Optional[int] = ..., active_hash: _Optional[str] = ..., evaluated: _Optional[int] = ..., changed: _Optional[int] = ..., candidate_errors: _Optional[int] = ..., replayed: _Optional[bool] = ..., changes: _Optional[_Iterable[_Union[DryRunResult, _Mapping]]] = ..., results: _Optional[_Iterable[_Union[DryRunResult, _Mapping]]] = ...) -> None: ...

class PromotePolicyRequest(_message.Message):
    __slots__ = ("tenant", "draft", "source")
    TENANT_FIELD_NUMBER: _ClassVar[int]
    DRAFT_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    draft: str
    source: str
    def __init__(self, tenant: _Optional[str] = ..., draft: _Optional[str] = ..., source: _Optional[str] = ...) -> None: ...

class PromotePolicyResponse(_message.Message):
    __slots__ = ("policy", "previous_version")
    POLICY_FIELD_NUMBER: _ClassVar[int]
    PREVIOUS_VERSION_FIELD_NUMBER: _ClassVar[int]
    policy: PolicyVersion
    previous_version: int
    def __init__(self, policy: _Optional[_Union[PolicyVersion, _Mapping]] = ..., previous_version: _Optional[int] = ...) -> None: ...

class RollbackPolicyRequest(_message.Message):
    __slots__ = ("tenant", "version")
    TENANT_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    version: int
    def __init__(self, tenant: _Optional[str] = ..., version: _Optional[int] = ...) -> None: ...

class RollbackPolicyResponse(_message.Message):
    __slots__ = ("policy", "previous_version")
    POLICY_FIELD_NUMBER: _ClassVar[int]
    PREVIOUS_VERSION_FIELD_NUMBER: _ClassVar[int]
    policy: PolicyVersion
    previous_version: int
    def __init__(self, policy: _Optional[_Union[PolicyVersion, _Mapping]] = ..., previous_version: _Optional[int] = ...) -> None: ...

class GetActivePolicyRequest(_message.Message):
    __slots__ = ("tenant",)
    TENANT_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    def __init__(self, tenant: _Optional[str] = ...) -> None: ...

class GetActivePolicyResponse(_message.Message):
    __slots__ = ("policy",)
    POLICY_FIELD_NUMBER: _ClassVar[int]
    policy: PolicyVersion
    def __init__(self, policy: _Optional[_Union[PolicyVersion, _Mapping]] = ...) -> None: ...

class ListPolicyHistoryRequest(_message.Message):
    __slots__ = ("tenant", "include_source")
    TENANT_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_SOURCE_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    include_source: bool
    def __init__(self, tenant: _Optional[str] = ..., include_source: _Optional[bool] = ...) -> None: ...

class ListPolicyHistoryResponse(_message.Message):
    __slots__ = ("versions",)
    VERSIONS_FIELD_NUMBER: _ClassVar[int]
    versions: _containers.RepeatedCompositeFieldContainer[PolicyVersion]
    def __init__(self, versions: _Optional[_Iterable[_Union[PolicyVersion, _Mapping]]] = ...) -> None: ...

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

class IntentMode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    INTENT_MODE_UNSPECIFIED: _ClassVar[IntentMode]
    INTENT_MODE_OFF: _ClassVar[IntentMode]
    INTENT_MODE_ADVISORY: _ClassVar[IntentMode]
    INTENT_MODE_ENFORCE: _ClassVar[IntentMode]

class BudgetScope(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    BUDGET_SCOPE_UNSPECIFIED: _ClassVar[BudgetScope]
    BUDGET_SCOPE_TENANT: _ClassVar[BudgetScope]
    BUDGET_SCOPE_AGENT: _ClassVar[BudgetScope]

class BudgetWindow(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    BUDGET_WINDOW_UNSPECIFIED: _ClassVar[BudgetWindow]
    BUDGET_WINDOW_MINUTE: _ClassVar[BudgetWindow]
    BUDGET_WINDOW_HOUR: _ClassVar[BudgetWindow]
    BUDGET_WINDOW_DAY: _ClassVar[BudgetWindow]
INTENT_MODE_UNSPECIFIED: IntentMode
INTENT_MODE_OFF: IntentMode
INTENT_MODE_ADVISORY: IntentMode
INTENT_MODE_ENFORCE: IntentMode
BUDGET_SCOPE_UNSPECIFIED: BudgetScope
BUDGET_SCOPE_TENANT: BudgetScope
BUDGET_SCOPE_AGENT: BudgetScope
BUDGET_WINDOW_UNSPECIFIED: BudgetWindow
BUDGET_WINDOW_MINUTE: BudgetWindow
BUDGET_WINDOW_HOUR: BudgetWindow
BUDGET_WINDOW_DAY: BudgetWindow

class CatalogTool(_message.Message):
    __slots__ = ("description", "verbs", "keywords", "phrases")
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    VERBS_FIELD_NUMBER: _ClassVar[int]
    KEYWORDS_FIELD_NUMBER: _ClassVar[int]
    PHRASES_FIELD_NUMBER: _ClassVar[int]
    description: str
    verbs: _containers.RepeatedScalarFieldContainer[str]
    keywords: _containers.RepeatedScalarFieldContainer[str]
    phrases: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, description: _Optional[str] = ..., verbs: _Optional[_Iterable[str]] = ..., keywords: _Optional[_Iterable[str]] = ..., phrases: _Optional[_Iterable[str]] = ...) -> None: ...

class ToolCatalog(_message.Message):
    __slots__ = ("tools", "negations")
    class ToolsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: CatalogTool
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[CatalogTool, _Mapping]] = ...) -> None: ...
    TOOLS_FIELD_NUMBER: _ClassVar[int]
    NEGATIONS_FIELD_NUMBER: _ClassVar[int]
    tools: _containers.MessageMap[str, CatalogTool]
    negations: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, tools: _Optional[_Mapping[str, CatalogTool]] = ..., negations: _Optional[_Iterable[str]] = ...) -> None: ...

class BudgetRule(_message.Message):
    __slots__ = ("scope", "window", "agent", "max_calls", "max_cost")
    SCOPE_FIELD_NUMBER: _ClassVar[int]
    WINDOW_FIELD_NUMBER: _ClassVar[int]
    AGENT_FIELD_NUMBER: _ClassVar[int]
    MAX_CALLS_FIELD_NUMBER: _ClassVar[int]
    MAX_COST_FIELD_NUMBER: _ClassVar[int]
    scope: BudgetScope
    window: BudgetWindow
    agent: str
    max_calls: float
    max_cost: float
    def __init__(self, scope: _Optional[_Union[BudgetScope, str]] = ..., window: _Optional[_Union[BudgetWindow, str]] = ..., agent: _Optional[str] = ..., max_calls: _Optional[float] = ..., max_cost: _Optional[float] = ...) -> None: ...

class TenantSettings(_message.Message):
    __slots__ = ("intent_mode", "require_prompt", "provenance_required_tools", "catalog", "tool_costs", "budget_rules", "approval_webhook_url", "policy_engine")
    class ToolCostsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    INTENT_MODE_FIELD_NUMBER: _ClassVar[int]
    REQUIRE_PROMPT_FIELD_NUMBER: _ClassVar[int]
    PROVENANCE_REQUIRED_TOOLS_FIELD_NUMBER: _ClassVar[int]
    CATALOG_FIELD_NUMBER: _ClassVar[int]
    TOOL_COSTS_FIELD_NUMBER: _ClassVar[int]
    BUDGET_RULES_FIELD_NUMBER: _ClassVar[int]
    APPROVAL_WEBHOOK_URL_FIELD_NUMBER: _ClassVar[int]
    POLICY_ENGINE_FIELD_NUMBER: _ClassVar[int]
    intent_mode: IntentMode
    require_prompt: bool
    provenance_required_tools: _containers.RepeatedScalarFieldContainer[str]
    catalog: ToolCatalog
    tool_costs: _containers.ScalarMap[str, float]
    budget_rules: _containers.RepeatedCompositeFieldContainer[BudgetRule]
    approval_webhook_url: str
    policy_engine: PolicyEngine
    def __init__(self, intent_mode: _Optional[_Union[IntentMode, str]] = ..., require_prompt: _Optional[bool] = ..., provenance_required_tools: _Optional[_Iterable[str]] = ..., catalog: _Optional[_Union[ToolCatalog, _Mapping]] = ..., tool_costs: _Optional[_Mapping[str, float]] = ..., budget_rules: _Optional[_Iterable[_Union[BudgetRule, _Mapping]]] = ..., approval_webhook_url: _Optional[str] = ..., policy_engine: _Optional[_Union[PolicyEngine, _Mapping]] = ...) -> None: ...

class PolicyEngine(_message.Message):
    __slots__ = ("engine", "url", "path", "timeout_ms", "push")
    ENGINE_FIELD_NUMBER: _ClassVar[int]
    URL_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_MS_FIELD_NUMBER: _ClassVar[int]
    PUSH_FIELD_NUMBER: _ClassVar[int]
    engine: str
    url: str
    path: str
    timeout_ms: int
    push: bool
    def __init__(self, engine: _Optional[str] = ..., url: _Optional[str] = ..., path: _Optional[str] = ..., timeout_ms: _Optional[int] = ..., push: _Optional[bool] = ...) -> None: ...

class DecisionCounts(_message.Message):
    __slots__ = ("allow", "deny", "escalate")
    ALLOW_FIELD_NUMBER: _ClassVar[int]
    DENY_FIELD_NUMBER: _ClassVar[int]
    ESCALATE_FIELD_NUMBER: _ClassVar[int]
    allow: int
    deny: int
    escalate: int
    def __init__(self, allow: _Optional[int] = ..., deny: _Optional[int] = ..., escalate: _Optional[int] = ...) -> None: ...

class Tenant(_message.Message):
    __slots__ = ("name", "settings", "active_policy_version", "active_policy_hash", "pending_approvals", "last_hour")
    NAME_FIELD_NUMBER: _ClassVar[int]
    SETTINGS_FIELD_NUMBER: _ClassVar[int]
    ACTIVE_POLICY_VERSION_FIELD_NUMBER: _ClassVar[int]
    ACTIVE_POLICY_HASH_FIELD_NUMBER: _ClassVar[int]
    PENDING_APPROVALS_FIELD_NUMBER: _ClassVar[int]
    LAST_HOUR_FIELD_NUMBER: _ClassVar[int]
    name: str
    settings: TenantSettings
    active_policy_version: int
    active_policy_hash: str
    pending_approvals: int
    last_hour: DecisionCounts
    def __init__(self, name: _Optional[str] = ..., settings: _Optional[_Union[TenantSettings, _Mapping]] = ..., active_policy_version: _Optional[int] = ..., active_policy_hash: _Optional[str] = ..., pending_approvals: _Optional[int] = ..., last_hour: _Optional[_Union[DecisionCounts, _Mapping]] = ...) -> None: ...

class CreateTenantRequest(_message.Message):
    __slots__ = ("tenant", "settings")
    TENANT_FIELD_NUMBER: _ClassVar[int]
    SETTINGS_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    settings: TenantSettings
    def __init__(self, tenant: _Optional[str] = ..., settings: _Optional[_Union[TenantSettings, _Mapping]] = ...) -> None: ...

class CreateTenantResponse(_message.Message):
    __slots__ = ("tenant",)
    TENANT_FIELD_NUMBER: _ClassVar[int]
    tenant: Tenant
    def __init__(self, tenant: _Optional[_Union[Tenant, _Mapping]] = ...) -> None: ...

class ListTenantsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListTenantsResponse(_message.Message):
    __slots__ = ("tenants",)
    TENANTS_FIELD_NUMBER: _ClassVar[int]
    tenants: _containers.RepeatedCompositeFieldContainer[Tenant]
    def __init__(self, tenants: _Optional[_Iterable[_Union[Tenant, _Mapping]]] = ...) -> None: ...

class GetTenantRequest(_message.Message):
    __slots__ = ("tenant",)
    TENANT_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    def __init__(self, tenant: _Optional[str] = ...) -> None: ...

class GetTenantResponse(_message.Message):
    __slots__ = ("tenant",)
    TENANT_FIELD_NUMBER: _ClassVar[int]
    tenant: Tenant
    def __init__(self, tenant: _Optional[_Union[Tenant, _Mapping]] = ...) -> None: ...

class UpdateTenantSettingsRequest(_message.Message):
    __slots__ = ("tenant", "settings", "update_mask")
    TENANT_FIELD_NUMBER: _ClassVar[int]
    SETTINGS_FIELD_NUMBER: _ClassVar[int]
    UPDATE_MASK_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    settings: TenantSettings
    update_mask: _field_mask_pb2.FieldMask
    def __init__(self, tenant: _Optional[str] = ..., settings: _Optional[_Union[TenantSettings, _Mapping]] = ..., update_mask: _Optional[_Union[_field_mask_pb2.FieldMask, _Mapping]] = ...) -> None: ...

class UpdateTenantSettingsResponse(_message.Message):
    __slots__ = ("settings",)
    SETTINGS_FIELD_NUMBER: _ClassVar[int]
    settings: TenantSettings
    def __init__(self, settings: _Optional[_Union[TenantSettings, _Mapping]] = ...) -> None: ...

class GetTenantBudgetsRequest(_message.Message):
    __slots__ = ("tenant", "agent")
    TENANT_FIELD_NUMBER: _ClassVar[int]
    AGENT_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    agent: str
    def __init__(self, tenant: _Optional[str] = ..., agent: _Optional[str] = ...) -> None: ...

class BudgetUsage(_message.Message):
    __slots__ = ("agent", "kind", "used", "limit", "counter_key")
    AGENT_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    USED_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    COUNTER_KEY_FIELD_NUMBER: _ClassVar[int]
    agent: str
    kind: str
    used: float
    limit: float
    counter_key: str
    def __init__(self, agent: _Optional[str] = ..., kind: _Optional[str] = ..., used: _Optional[float] = ..., limit: _Optional[float] = ..., counter_key: _Optional[str] = ...) -> None: ...

class BudgetRuleUsage(_message.Message):
    __slots__ = ("rule", "window_start", "window_end", "usage")
    RULE_FIELD_NUMBER: _ClassVar[int]
    WINDOW_START_FIELD_NUMBER: _ClassVar[int]
    WINDOW_END_FIELD_NUMBER: _ClassVar[int]
    USAGE_FIELD_NUMBER: _ClassVar[int]
    rule: BudgetRule
    window_start: _timestamp_pb2.Timestamp
    window_end: _timestamp_pb2.Timestamp
    usage: _containers.RepeatedCompositeFieldContainer[BudgetUsage]
    def __init__(self, rule: _Optional[_Union[BudgetRule, _Mapping]] = ..., window_start: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., window_end: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., usage: _Optional[_Iterable[_Union[BudgetUsage, _Mapping]]] = ...) -> None: ...

class GetTenantBudgetsResponse(_message.Message):
    __slots__ = ("rules", "tool_costs")
    class ToolCostsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    RULES_FIELD_NUMBER: _ClassVar[int]
    TOOL_COSTS_FIELD_NUMBER: _ClassVar[int]
    rules: _containers.RepeatedCompositeFieldContainer[BudgetRuleUsage]
    tool_costs: _containers.ScalarMap[str, float]
    def __init__(self, rules: _Optional[_Iterable[_Union[BudgetRuleUsage, _Mapping]]] = ..., tool_costs: _Optional[_Mapping[str, float]] = ...) -> None: ...

class GetWebhookSecretRequest(_message.Message):
    __slots__ = ("tenant",)
    TENANT_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    def __init__(self, tenant: _Optional[str] = ...) -> None: ...

class GetWebhookSecretResponse(_message.Message):
    __slots__ = ("secret_hex", "header")
    SECRET_HEX_FIELD_NUMBER: _ClassVar[int]
    HEADER_FIELD_NUMBER: _ClassVar[int]
    secret_hex: str
    header: str
    def __init__(self, secret_hex: _Optional[str] = ..., header: _Optional[str] = ...) -> None: ...

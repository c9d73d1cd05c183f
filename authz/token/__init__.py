"""Capability tokens: macaroons minted, attenuated and verified by Tessera (ARCHITECTURE §3).

A token is a pymacaroons-compatible macaroon, V2 binary, base64url without padding (padded input is
accepted). Its identifier is ``{"v":1,"tenant":...,"kid":...,"jti":...}``; its root key is derived per
(tenant, kid) from the master secret (:class:`KeyRing`). All caveats are first party and must hold; the
grammar and semantics are in :mod:`authz.token._caveats` (see :func:`parse_caveat`).

Anyone holding a token can narrow it offline with :func:`attenuate` or any macaroon library
(``Macaroon.deserialize`` + ``add_first_party_caveat`` + V2 binary serialization, base64url).

Verification has two steps: :meth:`TokenAuthenticator.authenticate` (signature chain and caveat parsing,
cached by token string) and :meth:`AuthenticatedToken.check` (time, tenant, agent, tool, arguments and
prompt, per request). Rejections are :class:`TokenRejection` values, never exceptions. Revocation
(``jti``, ``ancestor_ids``) and budgets (``budget_counters``) are enforced by later stages.

Everything here is pure: no I/O, no clock (callers pass ``now``), no global state.
"""

from ._caveats import (
    ARG_OPERATORS,
    DEFAULT_SERVER,
    MAX_CAVEAT_LENGTH,
    AgentCaveat,
    ArgCaveat,
    Caveat,
    ExpiresCaveat,
    MaxCallsCaveat,
    MaxCostCaveat,
    NotBeforeCaveat,
    PromptCaveat,
    PromptsCaveat,
    ResourcesCaveat,
    ServersCaveat,
    TenantCaveat,
    ToolsCaveat,
    format_time,
    parse_caveat,
)
from ._keys import MIN_MASTER_BYTES, KeyRing, valid_name
from ._mint import TokenInfo, attenuate, hash_prompt, inspect, mint
from ._verify import (
    ANY_SERVER,
    AuthenticatedToken,
    BudgetCounter,
    TokenAuthenticator,
    TokenRejection,
    item_violation,
)
from ._wire import MAX_CAVEATS, MAX_TOKEN_LENGTH, valid_jti

__all__ = [
    "ANY_SERVER",
    "ARG_OPERATORS",
    "DEFAULT_SERVER",
    "MAX_CAVEATS",
    "MAX_CAVEAT_LENGTH",
    "MAX_TOKEN_LENGTH",
    "MIN_MASTER_BYTES",
    "AgentCaveat",
    "ArgCaveat",
    "AuthenticatedToken",
    "BudgetCounter",
    "Caveat",
    "ExpiresCaveat",
    "KeyRing",
    "MaxCallsCaveat",
    "MaxCostCaveat",
    "NotBeforeCaveat",
    "PromptCaveat",
    "PromptsCaveat",
    "ResourcesCaveat",
    "ServersCaveat",
    "TenantCaveat",
    "TokenAuthenticator",
    "TokenInfo",
    "TokenRejection",
    "ToolsCaveat",
    "attenuate",
    "format_time",
    "hash_prompt",
    "inspect",
    "item_violation",
    "mint",
    "parse_caveat",
    "valid_jti",
    "valid_name",
]

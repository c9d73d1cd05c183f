"""OAuth 2.1 access tokens (JWT) accepted beside Tessera's macaroons, as the MCP authorization spec asks.

An agent may present an access token from an authorization server the operator trusts instead of a
capability token. :class:`OAuthAuthenticator` verifies it against the issuer's JWKS (cached; refreshed
on a timer and when an unknown key id appears, so key rotation needs no restart), with the audience
bound to this resource (RFC 8707) and the algorithm pinned to the issuer's allow list (never ``none``
or HMAC), then maps its claims to what a macaroon would carry: the issuer's tenant, the agent (a claim,
``sub`` by default) and the tools (a claim, ``scope`` by default: space-separated or a list), with the
token's ``exp``/``nbf`` as ``expires``/``not_before`` caveats. The result is an
:class:`authz.token.AuthenticatedToken`, so every later stage (revocation by ``jti``, intent, policy,
budget, audit) treats both kinds of token alike.

Trusted issuers come from a YAML file (``TESSERA_OAUTH_ISSUERS_FILE``)::

    issuers:
      - issuer: https://login.example.com/tenant-a      # the exact ``iss``
        jwks_uri: https://login.example.com/tenant-a/jwks
        audience: https://gateway.example.com/v1/mcp   # this resource; the token's ``aud`` must hold it
        tenant: acme                                    # the Tessera tenant its tokens act in
        agent_claim: sub                                # default sub
        tools_claim: scope                              # default scope; absent claim: no tools caveat
        algorithms: [RS256, ES256, EdDSA]               # default
        exchange:                                       # token exchange (absent: refused)
          tools: [read_invoice, list_invoices]          # the tenant's allowance (default: claims only)
          max_ttl_s: 3600                               # lifetime cap (never past the JWT's exp)
          max_calls: 100                                # budget caveats on every exchanged token
          max_cost: "50"
          servers: [billing]                            # /v1/mcp/<name> an RFC 8693 resource may name
          max_exchanges_per_jti: 5                      # tokens one subject token may be traded for

:class:`TokenExchange` turns such an access token into a Tessera capability token (RFC 8693 style),
bounded by its claims and by the issuer's ``exchange`` allowance; the admin service serves it at
``POST /v1/oauth/token`` (``TokenExchangeService``), including RFC 8693's ``resource`` / ``audience``
(bound to a server the tenant serves, else ``invalid_target``) and ``actor_token`` (delegation, no
wider than both tokens, the actor recorded).
"""

from ._exchange import (
    ACCESS_TOKEN_TYPE,
    JWT_TOKEN_TYPE,
    REPEATABLE_PARAMETERS,
    TOKEN_EXCHANGE_GRANT,
    ExchangedToken,
    TokenExchange,
)
from ._jwt import (
    ExchangeAllowance,
    JwksCache,
    OAuthAuthenticator,
    TrustedIssuer,
    accept_access_tokens,
    load_issuers,
)

__all__ = [
    "ACCESS_TOKEN_TYPE",
    "JWT_TOKEN_TYPE",
    "REPEATABLE_PARAMETERS",
    "TOKEN_EXCHANGE_GRANT",
    "ExchangeAllowance",
    "ExchangedToken",
    "JwksCache",
    "OAuthAuthenticator",
    "TokenExchange",
    "TrustedIssuer",
    "accept_access_tokens",
    "load_issuers",
]

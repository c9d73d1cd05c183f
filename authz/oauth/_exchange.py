"""Token exchange (RFC 8693 style): an IdP access token in, a Tessera capability token out.

The agent presents the access token its organisation's authorization server gave it; Tessera verifies
it exactly as the check service would (:class:`~authz.oauth.OAuthAuthenticator`: trusted issuer, JWKS
signature, audience, algorithm), and mints a macaroon that carries no more than the token's claims and
the issuer's :class:`~authz.oauth.ExchangeAllowance` allow:

* ``tenant`` the issuer's tenant, ``agent`` the agent claim;
* ``tools`` the intersection of the claims' tools and the allowance's tools, narrowed further to the
  request's ``scope`` (a ``scope`` naming a tool outside that set is refused: ``invalid_scope``);
* ``expires`` the earliest of the subject token's ``exp`` and now + ``max_ttl_s``;
* ``max_calls`` / ``max_cost`` the tighter of the allowance's and the token's own (its budget claims);
* ``jti`` the subject token's ``jti`` (its SHA-256 when it has none or an unusable one), so revoking
  that jti revokes the access token and every capability token exchanged for it at once.

The agent can then attenuate the result offline (``authz.client.attenuate``) for its sub-agents.
Errors are :class:`authz.errors.InvalidArgument` whose metadata ``error`` is the RFC 6749 §5.2 error
code (and, once the subject token verified, ``tenant``, ``agent`` and ``issuer``); a subject token
that cannot be checked because its issuer's keys are unavailable raises
:class:`authz.errors.DependencyError` (fail closed).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from authz.errors import InvalidArgument
from authz.token import AuthenticatedToken, KeyRing, TokenRejection, inspect, mint, valid_jti

TOKEN_EXCHANGE_GRANT = "urn:ietf:params:oauth:grant-type:token-exchange"
ACCESS_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:access_token"
#: The parameters of RFC 8693 §2.1 that Tessera reads; any other parameter is ignored (as the RFC
#: allows), except these, which Tessera does not support and refuses rather than silently dropping.
_UNSUPPORTED = ("actor_token", "actor_token_type")


@dataclass(frozen=True, slots=True)
class ExchangedToken:
    """The capability token issued, and what the audit event records about the exchange."""

    token: str
    tenant: str
    agent: str | None
    jti: str
    token_id: str
    tools: tuple[str, ...] | None
    expires: datetime
    issuer: str
    subject_token_id: str
    caveats: tuple[str, ...]


def _refuse(error: str, message: str) -> InvalidArgument:
    return InvalidArgument(message, reason=error.upper(), metadata={"error": error})


class TokenExchange:
    """Verifies the subject token with ``authenticator`` (an :class:`~authz.oauth.OAuthAuthenticator`)
    and mints with ``keyring``."""

    def __init__(self, authenticator: Any, keyring: KeyRing):
        self._auth = authenticator
        self._keyring = keyring

    def exchange(self, form: Mapping[str, str], *, now: datetime) -> ExchangedToken:
        """``form``: the token request's parameters (each once). Raises InvalidArgument (with the RFC
        6749 error code in ``metadata["error"]``) or DependencyError; never returns a wider token."""
        grant = form.get("grant_type")
        if grant != TOKEN_EXCHANGE_GRANT:
            raise _refuse("unsupported_grant_type", f"grant_type must be {TOKEN_EXCHANGE_GRANT}")
        for name in _UNSUPPORTED:
            if form.get(name):
                raise _refuse("invalid_request", f"{name} is not supported (no delegation chains)")
        subject = form.get("subject_token")
        if not subject:
            raise _refuse("invalid_request", "subject_token is required")
        if form.get("subject_token_type") != ACCESS_TOKEN_TYPE:
            raise _refuse("invalid_request", f"subject_token_type must be {ACCESS_TOKEN_TYPE}")
        requested_type = form.get("requested_token_type")
        if requested_type and requested_type != ACCESS_TOKEN_TYPE:
            raise _refuse("invalid_request", f"requested_token_type must be {ACCESS_TOKEN_TYPE}")

        verified = self._auth.verify_access_token(subject)
        if isinstance(verified, TokenRejection):
            raise _refuse("invalid_grant", f"subject_token rejected: {verified.reason}")
        issuer, token = verified
        try:
            if issuer.exchange is None:
                raise _refuse("invalid_grant", "token exchange is not enabled for the subject token's issuer")
            rejection = token.check(now=now, tool=None, arguments=None, prompt=None)
            if rejection is not None:  # expired, not yet valid
                raise _refuse("invalid_grant", f"subject_token rejected: {rejection.reason}")
            allowance = issuer.exchange
            allowed = _intersect(token.tools, allowance.tools)
            tools = _requested_tools(form.get("scope"), allowed)
        except InvalidArgument as exc:
            # The subject verified: say whose request this was, so the refusal can be audited in the
            # tenant's chain (a widening attempt is worth a record). Nothing the caller does not hold.
            exc.metadata.update(tenant=issuer.tenant, agent=token.agent or "", issuer=issuer.issuer)
            raise
        expires = now + timedelta(seconds=allowance.max_ttl_s)
        if token.expires is not None and token.expires < expires:
            expires = token.expires
        jti = _family_jti(token)
        issued = mint(
            self._keyring,
            tenant=issuer.tenant,
            agent=token.agent,
            tools=list(tools) if tools is not None else None,
            expires=expires,
            max_calls=_least(allowance.max_calls, token, "calls"),
            max_cost=_least(allowance.max_cost, token, "cost"),
            jti=jti,
        )
        info = inspect(issued)
        return ExchangedToken(
            token=issued,
            tenant=issuer.tenant,
            agent=token.agent,
            jti=jti,
            token_id=info.token_id,
            tools=tools,
            expires=expires,
            issuer=issuer.issuer,
            subject_token_id=token.token_id,
            caveats=tuple(info.caveats),
        )


def _intersect(claims: frozenset[str] | None, allowance: tuple[str, ...] | None) -> frozenset[str] | None:
    if claims is None:
        return frozenset(allowance) if allowance is not None else None
    if allowance is None:
        return claims
    return claims & frozenset(allowance)


def _requested_tools(scope: str | None, allowed: frozenset[str] | None) -> tuple[str, ...] | None:
    """The tools of the issued token: the requested ``scope`` (which must stay within ``allowed``),
    else everything allowed (None: no tools caveat, neither the claims nor the tenant limit them)."""
    wanted = tuple(dict.fromkeys(scope.split())) if scope and scope.strip() else None
    if wanted is None:
        if allowed is not None and not allowed:
            raise _refuse("invalid_scope", "the subject token's claims and the allowance share no tool")
        return tuple(sorted(allowed)) if allowed is not None else None
    if any("," in name for name in wanted):
        raise _refuse("invalid_scope", "scope names tools separated by spaces")
    if allowed is not None:
        wider = [name for name in wanted if name not in allowed]
        if wider:
            raise _refuse(
                "invalid_scope",
                f"scope asks for tools the subject token or its tenant does not allow: {', '.join(wider)}",
            )
    return wanted


def _least(allowed: Any, token: AuthenticatedToken, kind: str) -> Any:
    """The tighter of the allowance's budget and the subject token's own (from its budget claim)."""
    limits = [Decimal(str(allowed))] if allowed is not None else []
    limits += [Decimal(str(c.limit)) for c in token.budget_counters if c.kind == kind]
    if not limits:
        return None
    least = min(limits)
    return int(least) if kind == "calls" else str(least)


def _family_jti(token: AuthenticatedToken) -> str:
    return token.jti if valid_jti(token.jti) else hashlib.sha256(token.jti.encode()).hexdigest()

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

RFC 8693 parameters beyond the subject token:

* ``resource`` (an absolute URI, RFC 8707) and ``audience`` (a server name or such a URI), each of
  which may be given several times (RFC 8693 §2.1), bind the token to the union of the MCP servers
  named: the issuer's ``audience`` (this gateway's ``/v1/mcp``, server
  ``default``) or ``<audience>/<name>`` for a name in the allowance's ``servers`` (``/v1/mcp/<name>``),
  through a ``servers`` caveat, enforced on every call. If any one of them names something the tenant
  does not serve, the request is refused with ``invalid_target``. The servers bound are also in
  :attr:`ExchangedToken.servers` (audited).
* ``actor_token`` / ``actor_token_type`` (delegation): the actor's JWT is verified exactly like the
  subject's and must act in the same tenant; the issued token is no wider than both (tools
  intersected, the earlier expiry, the tighter budgets) and :attr:`ExchangedToken.actor` records who
  acts (RFC 8693 ``act``: its agent, issuer and token id), for the audit event.

Token types: ``subject_token_type`` and ``actor_token_type`` are ``access_token`` or ``jwt`` (both a
JWT access token here); any other type is ``invalid_request``.

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
from urllib.parse import urlsplit

from authz.errors import InvalidArgument
from authz.token import (
    DEFAULT_SERVER,
    AuthenticatedToken,
    KeyRing,
    TokenRejection,
    inspect,
    mint,
    valid_jti,
)

TOKEN_EXCHANGE_GRANT = "urn:ietf:params:oauth:grant-type:token-exchange"
ACCESS_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:access_token"
JWT_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:jwt"
#: The token request parameters that may be given several times (RFC 8693 §2.1); the form parser hands
#: them over as a tuple of values, every other parameter as one string.
REPEATABLE_PARAMETERS = frozenset({"resource", "audience"})
#: The token types a subject or actor token may be (RFC 8693 §3): a JWT access token either way.
_JWT_TYPES = (ACCESS_TOKEN_TYPE, JWT_TOKEN_TYPE)


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
    #: The MCP servers the token is for (RFC 8693 ``resource`` / ``audience``; its ``servers`` caveat):
    #: ``default`` is ``/v1/mcp``, a name is ``/v1/mcp/<name>``; None: not bound (every server).
    servers: tuple[str, ...] | None = None
    #: Who acts for the subject (RFC 8693 ``act``): ``{"agent", "issuer", "token_id", "jti"}``; None
    #: without an actor token.
    actor: dict[str, str] | None = None
    #: The issuer allowance's ``max_exchanges_per_jti`` (None: no limit), counted per ``jti`` by the
    #: caller in the store (:meth:`authz.storage.protocols.ExchangeStore.count_exchange`) until
    #: ``subject_expires``.
    max_exchanges: int | None = None
    subject_expires: datetime | None = None


def _refuse(error: str, message: str) -> InvalidArgument:
    return InvalidArgument(message, reason=error.upper(), metadata={"error": error})


class TokenExchange:
    """Verifies the subject token with ``authenticator`` (an :class:`~authz.oauth.OAuthAuthenticator`)
    and mints with ``keyring``."""

    def __init__(self, authenticator: Any, keyring: KeyRing):
        self._auth = authenticator
        self._keyring = keyring

    def exchange(self, form: Mapping[str, str | tuple[str, ...]], *, now: datetime) -> ExchangedToken:
        """``form``: the token request's parameters (each once, but :data:`REPEATABLE_PARAMETERS` a
        string or a tuple of strings). Raises InvalidArgument (with the RFC
        6749 error code in ``metadata["error"]``) or DependencyError; never returns a wider token."""
        grant = form.get("grant_type")
        if grant != TOKEN_EXCHANGE_GRANT:
            raise _refuse("unsupported_grant_type", f"grant_type must be {TOKEN_EXCHANGE_GRANT}")
        subject = form.get("subject_token")
        if not subject:
            raise _refuse("invalid_request", "subject_token is required")
        _token_type(form, "subject_token_type")
        actor_jwt = form.get("actor_token")
        if actor_jwt:
            _token_type(form, "actor_token_type")
        elif form.get("actor_token_type"):
            raise _refuse("invalid_request", "actor_token_type without actor_token")
        requested_type = form.get("requested_token_type")
        if requested_type and requested_type != ACCESS_TOKEN_TYPE:
            raise _refuse("invalid_request", f"requested_token_type must be {ACCESS_TOKEN_TYPE}")

        issuer, token = self._verified(subject, "subject_token", now)
        actor = None
        try:
            if issuer.exchange is None:
                raise _refuse("invalid_grant", "token exchange is not enabled for the subject token's issuer")
            allowance = issuer.exchange
            servers = _bound_servers(form, issuer.audience, allowance.servers)
            allowed = _intersect(token.tools, allowance.tools)
            if actor_jwt:
                actor_issuer, actor = self._verified(actor_jwt, "actor_token", now)
                if actor_issuer.tenant != issuer.tenant:
                    raise _refuse("invalid_grant", "actor_token acts in another tenant than subject_token")
                # Delegation never widens: what the subject may, narrowed to what the actor may.
                allowed = _intersect(actor.tools, tuple(sorted(allowed)) if allowed is not None else None)
            tools = _requested_tools(form.get("scope"), allowed)
        except InvalidArgument as exc:
            # The subject verified: say whose request this was, so the refusal can be audited in the
            # tenant's chain (a widening attempt is worth a record). Nothing the caller does not hold.
            exc.metadata.update(tenant=issuer.tenant, agent=token.agent or "", issuer=issuer.issuer)
            raise
        expires = now + timedelta(seconds=allowance.max_ttl_s)
        for holder in (token, actor):
            if holder is not None and holder.expires is not None and holder.expires < expires:
                expires = holder.expires
        jti = _family_jti(token)
        issued = mint(
            self._keyring,
            tenant=issuer.tenant,
            agent=token.agent,
            tools=list(tools) if tools is not None else None,
            expires=expires,
            max_calls=_least(allowance.max_calls, (token, actor), "calls"),
            max_cost=_least(allowance.max_cost, (token, actor), "cost"),
            jti=jti,
            extra_caveats=[f"servers = {','.join(servers)}"] if servers else (),
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
            servers=servers,
            max_exchanges=allowance.max_exchanges_per_jti,
            subject_expires=token.expires,
            actor=(
                {
                    "agent": actor.agent or "",
                    "issuer": actor_issuer.issuer,
                    "token_id": actor.token_id,
                    "jti": actor.jti,
                }
                if actor is not None
                else None
            ),
        )

    def _verified(self, jwt_text: str, name: str, now: datetime) -> tuple[Any, AuthenticatedToken]:
        """A subject or actor token verified (trusted issuer, signature, audience) and valid ``now``."""
        verified = self._auth.verify_access_token(jwt_text)
        if isinstance(verified, TokenRejection):
            raise _refuse("invalid_grant", f"{name} rejected: {verified.reason}")
        issuer, token = verified
        rejection = token.check(now=now, tool=None, arguments=None, prompt=None)
        if rejection is not None:  # expired, not yet valid
            error = _refuse("invalid_grant", f"{name} rejected: {rejection.reason}")
            error.metadata.update(tenant=issuer.tenant, agent=token.agent or "", issuer=issuer.issuer)
            raise error
        return issuer, token


def _token_type(form: Mapping[str, Any], name: str) -> None:
    if form.get(name) not in _JWT_TYPES:
        raise _refuse(
            "invalid_request",
            f"{name} must be {ACCESS_TOKEN_TYPE} or {JWT_TOKEN_TYPE}, not {form.get(name)!r}",
        )


def _values(form: Mapping[str, Any], name: str) -> tuple[str, ...]:
    """Every value of a repeatable parameter (() when absent)."""
    value = form.get(name)
    if value is None:
        return ()
    return (value,) if isinstance(value, str) else tuple(value)


def _bound_servers(
    form: Mapping[str, Any], audience: str, servers: tuple[str, ...] | None
) -> tuple[str, ...] | None:
    """The union of the servers every ``resource`` and ``audience`` names, or None when neither is
    given; one that names nothing the tenant serves refuses the whole request. ``audience`` is the
    issuer's: this gateway's ``/v1/mcp`` (server ``default``); the tenant also serves
    ``<audience>/<name>`` for each name in ``servers``."""
    base = audience.rstrip("/")
    served = {DEFAULT_SERVER: base} | {name: f"{base}/{name}" for name in servers or ()}
    by_url = {url: name for name, url in served.items()}
    bound: list[str] = []
    for resource in _values(form, "resource"):
        url = urlsplit(resource)
        if not url.scheme or not url.netloc or url.fragment or "#" in resource:
            raise _refuse("invalid_target", "resource must be an absolute URI without a fragment (RFC 8707)")
        if resource.rstrip("/") not in by_url:
            raise _refuse("invalid_target", f"this tenant serves no resource {resource!r}")
        bound.append(by_url[resource.rstrip("/")])
    for target in _values(form, "audience"):
        name = target if target in served else by_url.get(target.rstrip("/"))
        if name is None:
            raise _refuse("invalid_target", f"this tenant serves no audience {target!r}")
        bound.append(name)
    return tuple(dict.fromkeys(bound)) or None


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


def _least(allowed: Any, tokens: tuple[AuthenticatedToken | None, ...], kind: str) -> Any:
    """The tightest of the allowance's budget and the subject's (and actor's) own budget claims."""
    limits = [Decimal(str(allowed))] if allowed is not None else []
    for token in tokens:
        if token is not None:
            limits += [Decimal(str(c.limit)) for c in token.budget_counters if c.kind == kind]
    if not limits:
        return None
    least = min(limits)
    return int(least) if kind == "calls" else str(least)


def _family_jti(token: AuthenticatedToken) -> str:
    return token.jti if valid_jti(token.jti) else hashlib.sha256(token.jti.encode()).hexdigest()

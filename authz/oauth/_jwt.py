"""JWT access-token verification against cached JWKS; see :mod:`authz.oauth`."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import re
import time
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jwt
import yaml

from authz.errors import ConfigError, DependencyError, InvalidArgument
from authz.outbound import OutboundClient, OutboundPolicy
from authz.token import (
    DEFAULT_SERVER,
    AuthenticatedToken,
    BudgetCounter,
    ExpiresCaveat,
    MaxCallsCaveat,
    TokenRejection,
    format_time,
    parse_caveat,
)

log = logging.getLogger("tessera.oauth")

#: An MCP server's name in ``/v1/mcp/<name>`` (as ``tessera envoy-config --mcp-server`` takes it).
_SERVER_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}")
_ASYMMETRIC = frozenset({"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "EdDSA"})


@dataclass(frozen=True, slots=True)
class ExchangeAllowance:
    """What a token exchange (:mod:`authz.oauth._exchange`) may issue for one issuer's tokens: the
    tenant's allowance, on top of what the subject token's claims allow.

    ``tools``: the tools an exchanged token may name (None: only the claims limit them);
    ``max_ttl_s``: the longest lifetime of an exchanged token (never past the subject token's ``exp``);
    ``max_calls`` / ``max_cost``: budget caveats every exchanged token carries (None: none);
    ``servers``: the named MCP servers (``/v1/mcp/<name>``) the tenant serves beside ``/v1/mcp``, which
    an exchange's RFC 8693 ``resource`` / ``audience`` may name (None: only ``/v1/mcp``);
    ``max_exchanges_per_jti``: how many tokens one subject token (by ``jti``) may be exchanged for
    (None: no limit)."""

    tools: tuple[str, ...] | None = None
    max_ttl_s: int = 3600
    max_calls: int | None = None
    max_cost: str | None = None
    servers: tuple[str, ...] | None = None
    max_exchanges_per_jti: int | None = None

    def __post_init__(self) -> None:
        if self.tools is not None and (
            not self.tools or not all(isinstance(t, str) and t and "," not in t for t in self.tools)
        ):
            raise ConfigError("exchange.tools must be a non-empty list of tool names")
        if isinstance(self.max_ttl_s, bool) or not isinstance(self.max_ttl_s, int) or self.max_ttl_s <= 0:
            raise ConfigError(f"exchange.max_ttl_s must be a positive int, got {self.max_ttl_s!r}")
        if self.max_calls is not None and (
            isinstance(self.max_calls, bool) or not isinstance(self.max_calls, int) or self.max_calls <= 0
        ):
            raise ConfigError(f"exchange.max_calls must be a positive int, got {self.max_calls!r}")
        if self.max_cost is not None:
            object.__setattr__(self, "max_cost", str(self.max_cost))
        if self.servers is not None and not all(
            isinstance(name, str) and _SERVER_NAME.fullmatch(name) and name != DEFAULT_SERVER
            for name in self.servers
        ):
            raise ConfigError(
                f"exchange.servers must be MCP server names (not {DEFAULT_SERVER!r}: /v1/mcp is always "
                f"served), got {self.servers!r}"
            )
        limit = self.max_exchanges_per_jti
        if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit <= 0):
            raise ConfigError(f"exchange.max_exchanges_per_jti must be a positive int, got {limit!r}")


@dataclass(frozen=True, slots=True)
class TrustedIssuer:
    issuer: str
    jwks_uri: str
    audience: str
    tenant: str
    agent_claim: str = "sub"
    tools_claim: str = "scope"
    algorithms: tuple[str, ...] = ("RS256", "ES256", "EdDSA")
    #: Token exchange for this issuer's tokens (None: refused).
    exchange: ExchangeAllowance | None = None
    #: Claims that set the token's own budget (``max_calls`` / ``max_cost`` caveats, counted per token
    #: like a macaroon's); None, or a token without the claim: no per-token budget (tenant rules apply).
    max_calls_claim: str | None = None
    max_cost_claim: str | None = None

    def __post_init__(self) -> None:
        for name in ("issuer", "jwks_uri", "audience", "tenant"):
            if not isinstance(getattr(self, name), str) or not getattr(self, name):
                raise ConfigError(f"trusted issuer: {name} is required")
        bad = [a for a in self.algorithms if a not in _ASYMMETRIC]
        if bad or not self.algorithms:
            raise ConfigError(f"trusted issuer {self.issuer}: algorithms must be asymmetric, got {bad}")


def load_issuers(path: Path) -> tuple[TrustedIssuer, ...]:
    try:
        doc = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot read the OAuth issuers file {path}: {exc}") from exc
    entries = doc.get("issuers") if isinstance(doc, dict) else None
    if not isinstance(entries, list):
        raise ConfigError(f"{path}: expected a mapping with an `issuers` list")
    issuers = []
    for entry in entries:
        if not isinstance(entry, dict):
            raise ConfigError(f"{path}: each issuer is a mapping")
        fields = dict(entry)
        if "algorithms" in fields:
            fields["algorithms"] = tuple(fields["algorithms"])
        try:
            exchange = fields.get("exchange")
            if exchange is not None:
                if not isinstance(exchange, dict):
                    raise ConfigError(f"{path}: `exchange` is a mapping")
                exchange = dict(exchange)
                for name in ("tools", "servers"):
                    if isinstance(exchange.get(name), list):
                        exchange[name] = tuple(exchange[name])
                fields["exchange"] = ExchangeAllowance(**exchange)
            issuers.append(TrustedIssuer(**fields))
        except TypeError as exc:
            raise ConfigError(f"{path}: {exc}") from None
    return tuple(issuers)


class JwksCache:
    """The signing keys of each trusted issuer, by key id. Read without locks on the hot path.

    :meth:`refresh` fetches every issuer's JWKS (on a timer, :meth:`run`); :meth:`want` asks for an early
    refresh when a token names a key id not seen yet (rotation), at most once per ``min_interval_s``.
    The fetch goes through ``outbound`` (:class:`authz.outbound.OutboundClient`), like every request to
    an operator-chosen URL: an issuer on a loopback or private address needs ``TESSERA_OUTBOUND_ALLOW``.
    A fetch that fails keeps the previous keys (a token signed with a key still published verifies);
    while an issuer's JWKS has never been fetched, :meth:`available` is False and its tokens are refused
    as "authorization unavailable" (fail closed), not as bad tokens.
    """

    def __init__(
        self,
        issuers: Sequence[TrustedIssuer],
        *,
        outbound: OutboundClient | None = None,
        interval_s: float = 300.0,
        min_interval_s: float = 5.0,
    ):
        self._issuers = tuple(issuers)
        self._keys: dict[str, dict[str, Any]] = {i.issuer: {} for i in self._issuers}
        self._loaded: set[str] = set()
        self._errors: dict[str, str] = {}
        self._outbound = outbound or OutboundClient(
            OutboundPolicy(), timeout_s=5.0, max_response_bytes=256 * 1024, purpose="OAuth JWKS"
        )
        self._interval_s = interval_s
        self._min_interval_s = min_interval_s
        self._last = 0.0
        self._wanted = asyncio.Event()

    def key(self, issuer: str, kid: str | None) -> Any | None:
        return self._keys.get(issuer, {}).get(kid or "")

    def sole_key(self, issuer: str) -> Any | None:
        """The issuer's one key when it publishes exactly one (a JWS may then omit ``kid``, OIDC Core
        §10.1), else None."""
        keys = self._keys.get(issuer, {})
        return next(iter(keys.values())) if len(keys) == 1 else None

    def available(self, issuer: str) -> bool:
        """Has the issuer's JWKS been fetched at least once?"""
        return issuer in self._loaded

    def error(self, issuer: str) -> str | None:
        """Why the last fetch of the issuer's JWKS failed (None after a successful one)."""
        return self._errors.get(issuer)

    def want(self) -> None:
        self._wanted.set()

    async def refresh(self) -> None:
        self._last = time.monotonic()
        for issuer in self._issuers:
            try:
                response = await self._outbound.request("GET", issuer.jwks_uri)
                if response.status_code != 200:
                    raise ValueError(f"HTTP {response.status_code}")
                keys = {}
                for jwk in response.json().get("keys", ()):
                    if jwk.get("use", "sig") != "sig":
                        continue
                    keys[jwk.get("kid", "")] = jwt.PyJWK.from_dict(jwk).key
            except (DependencyError, ValueError, AttributeError, jwt.PyJWTError) as exc:
                self._errors[issuer.issuer] = str(exc) or type(exc).__name__
                log.warning("JWKS of %s not refreshed: %s", issuer.issuer, self._errors[issuer.issuer])
                continue
            self._keys[issuer.issuer] = keys
            self._loaded.add(issuer.issuer)
            self._errors.pop(issuer.issuer, None)

    async def run(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):  # the timer, or an early refresh wanted
                await asyncio.wait_for(self._wanted.wait(), timeout=self._interval_s)
            self._wanted.clear()
            await asyncio.sleep(max(0.0, self._min_interval_s - (time.monotonic() - self._last)))
            await self.refresh()

    async def aclose(self) -> None:
        await self._outbound.aclose()


class OAuthAuthenticator:
    """Macaroons to ``macaroons``; a JWT from a trusted issuer verified here. Same interface."""

    def __init__(
        self,
        macaroons: Any,
        issuers: Sequence[TrustedIssuer],
        jwks: JwksCache,
        *,
        cache_size: int = 10_000,
    ):
        self._macaroons = macaroons
        self._issuers = {i.issuer: i for i in issuers}
        self._jwks = jwks
        # Verified tokens by token string (time-independent: exp/nbf are caveats). Rejections are not
        # cached: one for an unknown key id must be retried once the rotated JWKS arrives.
        self._cache: OrderedDict[str, AuthenticatedToken] = OrderedDict()
        self._cache_size = cache_size

    def authenticate(self, token: str) -> AuthenticatedToken | TokenRejection:
        if not (token.count(".") == 2 and token.startswith("eyJ")):
            return self._macaroons.authenticate(token)
        cached = self._cache.get(token)
        if cached is not None:
            self._cache.move_to_end(token)
            return cached
        result = self._verify_jwt(token)[1]
        if isinstance(result, AuthenticatedToken) and self._cache_size > 0:
            self._cache[token] = result
            if len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return result

    def verify_access_token(self, token: str) -> tuple[TrustedIssuer, AuthenticatedToken] | TokenRejection:
        """A JWT access token (never a macaroon) verified, with the issuer it came from; not cached.
        For the token exchange, which needs the issuer's allowance."""
        if not (token.count(".") == 2 and token.startswith("eyJ")):
            return TokenRejection("not a JWT access token")
        issuer, result = self._verify_jwt(token)
        if issuer is None or not isinstance(result, AuthenticatedToken):
            return result if isinstance(result, TokenRejection) else TokenRejection("access token rejected")
        return issuer, result

    def _verify_jwt(self, token: str) -> tuple[TrustedIssuer | None, AuthenticatedToken | TokenRejection]:
        try:
            header = jwt.get_unverified_header(token)
            claims = jwt.decode(token, options={"verify_signature": False})
        except jwt.PyJWTError as exc:
            return None, TokenRejection(f"malformed access token: {exc}")
        issuer = self._issuers.get(claims.get("iss")) if isinstance(claims.get("iss"), str) else None
        if issuer is None:
            return None, TokenRejection("access token from an untrusted issuer")
        return issuer, self._verify_signed(issuer, header, token)

    def _verify_signed(
        self, issuer: TrustedIssuer, header: Mapping[str, Any], token: str
    ) -> AuthenticatedToken | TokenRejection:
        algorithm = header.get("alg")
        if algorithm not in issuer.algorithms:
            return TokenRejection(f"access token algorithm {algorithm!r} is not allowed for its issuer")
        key = self._jwks.key(issuer.issuer, header.get("kid"))
        if key is None and not self._jwks.available(issuer.issuer):
            self._jwks.want()
            # Fail closed, as "unavailable" (the pipeline's one boundary turns it into a deny, -32018):
            # the token may be fine, Tessera cannot tell without the issuer's keys.
            raise DependencyError(
                f"the signing keys of {issuer.issuer} could not be fetched: {self._jwks.error(issuer.issuer)}"
            )
        if key is None:
            self._jwks.want()  # maybe the issuer rotated its keys
            return TokenRejection("access token signed with an unknown key")
        try:
            # exp/nbf become caveats, checked per request like a macaroon's (so this result is cacheable).
            verified = jwt.decode(
                token,
                key,
                algorithms=[algorithm],
                audience=issuer.audience,
                issuer=issuer.issuer,
                options={"verify_exp": False, "verify_nbf": False, "require": ["exp", "iss", "aud"]},
            )
        except jwt.PyJWTError as exc:
            return TokenRejection(f"access token rejected: {exc}")
        return _authenticated(issuer, verified, token)


def _authenticated(
    issuer: TrustedIssuer, claims: Mapping[str, Any], token: str
) -> AuthenticatedToken | TokenRejection:
    token_id = hashlib.sha256(token.encode()).hexdigest()
    agent = claims.get(issuer.agent_claim)
    raw = [f"tenant = {issuer.tenant}"]
    if agent is not None:
        raw.append(f"agent = {agent}")
    tools = claims.get(issuer.tools_claim)
    if tools is not None:
        names = tools.split() if isinstance(tools, str) else tools
        if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
            return TokenRejection(f"access token claim {issuer.tools_claim!r} names no tools")
        raw.append("tools = " + ",".join(names))
    for claim, template in (("exp", "expires < {}"), ("nbf", "not_before > {}")):
        value = claims.get(claim)
        if value is not None:
            if not isinstance(value, int | float) or isinstance(value, bool):
                return TokenRejection(f"access token claim {claim!r} is not a time")
            raw.append(template.format(format_time(datetime.fromtimestamp(value, UTC))))
    budgets = []
    for claim, kind in ((issuer.max_calls_claim, "calls"), (issuer.max_cost_claim, "cost")):
        value = claims.get(claim) if claim else None
        if value is None:
            continue
        if (
            isinstance(value, bool)
            or not isinstance(value, int | str)
            or (kind == "calls" and type(value) is not int)
        ):
            return TokenRejection(f"access token claim {claim!r} is not a budget")
        raw.append(f"max_{kind} = {value}")
        budgets.append(len(raw) - 1)
    try:
        caveats = tuple(parse_caveat(c) for c in raw)
    except InvalidArgument as exc:
        return TokenRejection(f"access token claims cannot be mapped: {exc}")
    expires = next((c.at for c in caveats if isinstance(c, ExpiresCaveat)), None)
    # One counter per token and kind (a JWT has no chain to nest counters in): every call made with this
    # access token spends from it, until the token expires.
    counters = tuple(
        BudgetCounter(
            hashlib.sha256(f"oauth:{token_id}:{caveats[i].raw}".encode()).hexdigest(),
            "calls" if isinstance(caveats[i], MaxCallsCaveat) else "cost",
            caveats[i].limit,
            expires,
        )
        for i in budgets
    )
    jti = claims.get("jti") if isinstance(claims.get("jti"), str) else token_id
    return AuthenticatedToken(
        tenant=issuer.tenant,
        kid="oauth",
        jti=jti,
        agent=agent if isinstance(agent, str) else None,
        token_id=token_id,
        caveats=caveats,
        ancestor_ids=(token_id,),
        budget_counters=counters,
    )


def accept_access_tokens(
    issuers_file: Path | None, macaroons: Any, *, outbound: OutboundClient | None = None
) -> tuple[Any, JwksCache | None]:
    """The check service's authenticator: ``macaroons`` alone, or with the issuers of ``issuers_file``
    (their JWKS fetched through ``outbound``)."""
    if issuers_file is None:
        return macaroons, None
    issuers = load_issuers(issuers_file)
    jwks = JwksCache(issuers, outbound=outbound)
    return OAuthAuthenticator(macaroons, issuers, jwks), jwks

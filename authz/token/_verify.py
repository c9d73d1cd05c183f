"""Token verification in two steps: authenticate once per token string (cached), check per request."""

from __future__ import annotations

import functools
import hashlib
import hmac
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any, Literal

from authz.echo import echo
from authz.errors import InvalidArgument

from ._caveats import (
    DEFAULT_SERVER,
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
    parse_caveat,
    show,
)
from ._keys import KeyRing
from ._wire import b64url_decode, decode_identifier, decode_macaroon, malformed

#: ``AuthenticatedToken.check(server=...)`` default: the ``servers`` caveats are not evaluated.
ANY_SERVER = "*"


@dataclass(frozen=True, slots=True)
class TokenRejection:
    """Why a token was refused: a value, never raised.

    ``reason`` is human readable and specific ("token expired at 2026-01-01T00:00:00Z", "bad signature",
    "tool 'x' not allowed by caveat 'tools = a,b'"); it never contains the token, a signature or key
    material, and argument values only when they are numbers, booleans or null.
    """

    reason: str

    def __str__(self) -> str:
        return self.reason


@dataclass(frozen=True, slots=True)
class BudgetCounter:
    """One budget a call under this token consumes (ARCHITECTURE §3, budget nesting).

    ``key`` is the SHA-256 hex of the chain signature right after the ``max_calls``/``max_cost`` caveat,
    i.e. the token id of the token prefix ending with that caveat. Every descendant of that prefix carries
    the same caveat at the same position with the same signature, so parent and children share the counter
    and each attenuation that adds a limit adds a counter of its own. (Hashed, not the raw signature: the
    raw signature would be a bearer credential for the prefix token, and keys end up in stores and APIs.)
    ``limit`` is an int for ``calls``, an exact Decimal for ``cost``.
    """

    key: str
    kind: Literal["calls", "cost"]
    limit: int | Decimal
    #: The earliest ``expires`` caveat *before* this counter's caveat: it binds every token that shares
    #: the counter, so after it the counter can never be charged again (None: no such caveat).
    expires: datetime | None = None


@dataclass(frozen=True, slots=True)
class AuthenticatedToken:
    """A token whose signature chain verified and whose caveats all parsed; time-independent.

    Produced by :meth:`TokenAuthenticator.authenticate`; cached by token string, so it holds no
    per-request state. Per request, call :meth:`check`. Revocation and budgets are not checked here:
    revoked if ``jti`` or any of ``ancestor_ids`` is revoked; ``budget_counters`` go to the budget stage.
    """

    tenant: str
    kid: str
    jti: str
    #: The agent the token is bound to (value of its ``agent`` caveats), None if unbound.
    agent: str | None
    #: SHA-256 hex of the final signature: identifies this exact token.
    token_id: str
    #: Every caveat, parsed, in chain order (``c.raw`` is the caveat text).
    caveats: tuple[Caveat, ...]
    #: Token ids of every prefix of the chain: after the identifier (sig0), then after each caveat; the
    #: last one is ``token_id``. Revoking any of them (a parent token) revokes this token.
    ancestor_ids: tuple[str, ...]
    #: In chain order; see :class:`BudgetCounter`.
    budget_counters: tuple[BudgetCounter, ...]
    #: Intersection of every ``tools`` caveat; None if there is none.
    tools: frozenset[str] | None = field(init=False)
    #: Intersection of every ``prompts`` caveat; None if there is none.
    prompts: frozenset[str] | None = field(init=False)
    #: The URI prefixes of each ``resources`` caveat (a resource must match one of each); () if none.
    resources: tuple[tuple[str, ...], ...] = field(init=False)
    #: Intersection of every ``servers`` caveat (``default`` is the main endpoint); None if there is none.
    servers: frozenset[str] | None = field(init=False)
    #: Earliest ``expires`` / latest ``not_before``; None if absent.
    expires: datetime | None = field(init=False)
    not_before: datetime | None = field(init=False)
    _expires: tuple[ExpiresCaveat, ...] = field(init=False, repr=False, compare=False)
    _not_before: tuple[NotBeforeCaveat, ...] = field(init=False, repr=False, compare=False)
    _tools: tuple[ToolsCaveat, ...] = field(init=False, repr=False, compare=False)
    _args: tuple[ArgCaveat, ...] = field(init=False, repr=False, compare=False)
    _prompts: tuple[PromptCaveat, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        expires = tuple(c for c in self.caveats if isinstance(c, ExpiresCaveat))
        not_before = tuple(c for c in self.caveats if isinstance(c, NotBeforeCaveat))
        tools = tuple(c for c in self.caveats if isinstance(c, ToolsCaveat))
        setattr_ = object.__setattr__
        setattr_(self, "_expires", expires)
        setattr_(self, "_not_before", not_before)
        setattr_(self, "_tools", tools)
        setattr_(self, "_args", tuple(c for c in self.caveats if isinstance(c, ArgCaveat)))
        setattr_(self, "_prompts", tuple(c for c in self.caveats if isinstance(c, PromptCaveat)))
        setattr_(self, "tools", intersect_tools(tools))
        prompts = [c.prompts for c in self.caveats if isinstance(c, PromptsCaveat)]
        setattr_(self, "prompts", frozenset.intersection(*prompts) if prompts else None)
        setattr_(self, "resources", tuple(c.prefixes for c in self.caveats if isinstance(c, ResourcesCaveat)))
        servers = [c.servers for c in self.caveats if isinstance(c, ServersCaveat)]
        setattr_(self, "servers", frozenset.intersection(*servers) if servers else None)
        setattr_(self, "expires", min((c.at for c in expires), default=None))
        setattr_(self, "not_before", max((c.at for c in not_before), default=None))

    @property
    def raw_caveats(self) -> tuple[str, ...]:
        return tuple(c.raw for c in self.caveats)

    def check(
        self,
        *,
        now: datetime,
        tool: str | None,
        arguments: Mapping[str, Any] | None,
        prompt: str | None,
        expected_tenant: str | None = None,
        expected_agent: str | None = None,
        server: str | None = ANY_SERVER,
        item: tuple[str, str] | None = None,
    ) -> TokenRejection | None:
        """None if the request satisfies every caveat, else the first violation.

        Always evaluated: ``expected_tenant`` (if given, must equal ``tenant``), ``expected_agent`` (if
        given and the token is bound to an agent, they must be equal; an unbound token serves any agent),
        ``expires`` (valid while ``now < T``), ``not_before`` (valid once ``now >= T``).

        Only when ``tool`` is not None (a tool call; None for initialize, tools/list and other non-tool
        messages): ``tools`` caveats must all contain ``tool``; every ``arg:`` caveat must hold for
        ``arguments`` (None counts as no arguments, so every arg caveat fails); ``prompt_sha256`` caveats
        must match the SHA-256 of ``prompt`` (a missing prompt fails).

        ``server`` (the MCP tool server the request goes to, None for the main endpoint) must be in the
        ``servers`` caveats; the default :data:`ANY_SERVER` skips that check (a caller that is not a
        request to a server). ``item`` (``(kind, name)`` of a prompt or resource a request reads) must
        be admitted by the ``prompts`` / ``resources`` caveats (:func:`item_violation`).

        ``max_calls``/``max_cost`` are not evaluated (budget stage). ``now`` must be timezone-aware
        (InvalidArgument otherwise: a programming error, not a denial).
        """
        if now.utcoffset() is None:
            raise InvalidArgument("check() needs a timezone-aware 'now'")
        if expected_tenant is not None and expected_tenant != self.tenant:
            return TokenRejection(f"token belongs to tenant {echo(self.tenant)}, not {echo(expected_tenant)}")
        if expected_agent is not None and self.agent is not None and expected_agent != self.agent:
            return TokenRejection(f"token is bound to agent {echo(self.agent)}, not {echo(expected_agent)}")
        for c in self._expires:
            if not now < c.at:
                return TokenRejection(f"token expired at {c.text}")
        for c in self._not_before:
            if now < c.at:
                return TokenRejection(f"token not valid before {c.text}")
        if self.servers is not None and server != ANY_SERVER:
            name = DEFAULT_SERVER if server is None else server
            if name not in self.servers:
                return TokenRejection(
                    f"server {echo(name)} not allowed by caveat 'servers = {','.join(sorted(self.servers))}'"
                )
        if item is not None:
            why = item_violation(self.prompts, self.resources, *item)
            if why is not None:
                return TokenRejection(why)
        if tool is None:
            return None
        for c in self._tools:
            if tool not in c.tools:
                return TokenRejection(f"tool {echo(tool)} not allowed by caveat {show(c.raw)}")
        for c in self._args:
            why = c.violation(arguments)
            if why is not None:
                return TokenRejection(why)
        if self._prompts:
            if prompt is None:
                return TokenRejection(f"caveat {show(self._prompts[0].raw)} requires a prompt, none given")
            digest = hashlib.sha256(prompt.encode("utf-8", "surrogatepass")).hexdigest()
            for c in self._prompts:
                if not hmac.compare_digest(digest, c.sha256):
                    return TokenRejection(f"prompt does not match caveat {show(c.raw)}")
        return None


#: Parts of a URI that let a server resolve it outside the text a ``resources`` prefix matched
#: (``file:///public/../secret`` starts with ``file:///public/``): dot segments, and the percent-encoded
#: or backslash forms of '.' and '/'. Under a ``resources`` caveat such a URI is refused.
_ESCAPES_PREFIX = re.compile(r"(?:^|[/\\])\.{1,2}(?:[/\\?#]|$)|%2e|%2f|%5c|\\", re.IGNORECASE)


def item_violation(
    prompts: frozenset[str] | None, resources: tuple[tuple[str, ...], ...], kind: str, name: str
) -> str | None:
    """Why the ``prompts`` / ``resources`` caveats (as :class:`AuthenticatedToken` holds them) refuse the
    MCP item ``name`` of ``kind`` (``prompt``, ``resource``, ``resource_template``), None if they admit it.
    Tools are the ``tools`` caveats' business; any other kind is refused once a caveat names items."""
    if kind == "prompt":
        if prompts is not None and name not in prompts:
            return f"prompt {echo(name)} not allowed by the token's prompts caveats"
        return None
    if kind in ("resource", "resource_template"):
        if resources and _ESCAPES_PREFIX.search(name):
            return (
                f"resource {echo(name)} has a dot segment or an encoded '.', '/' or '\\', "
                "which a prefix cannot judge"
            )
        for prefixes in resources:
            if not name.startswith(prefixes):
                return f"resource {echo(name)} not allowed by caveat 'resources = {','.join(prefixes)}'"
        return None
    if prompts is not None or resources:
        return f"an item of kind {echo(kind)} is not allowed by the token's prompts/resources caveats"
    return None


def intersect_tools(caveats: tuple[ToolsCaveat, ...]) -> frozenset[str] | None:
    if not caveats:
        return None
    return frozenset.intersection(*(c.tools for c in caveats))


def check_consistency(tenant: str, caveats: tuple[Caveat, ...]) -> str | None:
    """The agent bound by the caveats; raises InvalidArgument on a foreign tenant or conflicting agents."""
    agent: str | None = None
    for c in caveats:
        if isinstance(c, TenantCaveat):
            if c.tenant != tenant:
                raise InvalidArgument(
                    f"caveat {show(c.raw)} does not match the token's tenant {echo(tenant)}"
                )
        elif isinstance(c, AgentCaveat):
            if agent is not None and c.agent != agent:
                raise InvalidArgument(f"conflicting agent caveats: {echo(agent)} and {echo(c.agent)}")
            agent = c.agent
    return agent


def parse_caveat_bytes(cid: bytes) -> Caveat:
    try:
        text = cid.decode()
    except UnicodeDecodeError:
        raise malformed("caveat is not UTF-8") from None
    return parse_caveat(text)


class TokenAuthenticator:
    """Verifies token strings against a :class:`KeyRing`; results cached by token string.

    :meth:`authenticate` decodes the token, checks the key id is live, recomputes the macaroon signature
    chain (``sig0 = HMAC(HMAC("macaroons-key-generator", root_key), identifier)``, ``sig_i =
    HMAC(sig_{i-1}, caveat_i)``, as pymacaroons and libmacaroons do), compares the final signature in
    constant time, then parses every caveat and checks their consistency (tenant caveats equal the
    identifier's tenant, agent caveats agree). It never raises; failures are :class:`TokenRejection`.

    Successes and rejections are cached in a bounded LRU (``cache_size`` entries, thread-safe) keyed by
    the exact token string; ``cache_size=0`` disables it. Both outcomes are pure functions of the token
    string and the key ring, so the cache never needs invalidation; rotate keys by building a new
    authenticator. Time, revocation and request-dependent checks are not cached (see
    :meth:`AuthenticatedToken.check`). Parsed caveats are cached too, by caveat bytes
    (``caveat_cache_size``): a miss on a new token whose caveats were seen before skips parsing.
    """

    __slots__ = ("_cached", "_parse", "keyring")

    def __init__(self, keyring: KeyRing, *, cache_size: int = 10_000, caveat_cache_size: int = 4096):
        self.keyring = keyring
        # Caveat texts repeat across tokens (tenant, tools, arg limits); parsed caveats are immutable, so
        # tokens share them. Only valid caveats are cached (a parse error raises through lru_cache).
        self._parse = (
            functools.lru_cache(maxsize=caveat_cache_size)(parse_caveat_bytes)
            if caveat_cache_size > 0
            else parse_caveat_bytes
        )
        if cache_size > 0:
            self._cached = functools.lru_cache(maxsize=cache_size)(self._authenticate)
        else:
            self._cached = self._authenticate

    def authenticate(self, token: str) -> AuthenticatedToken | TokenRejection:
        """Authenticate ``token`` (base64url, padded or not); see the class docstring."""
        if type(token) is not str:
            return TokenRejection("malformed token: not a string")
        return self._cached(token)

    def cache_info(self) -> functools._CacheInfo | None:
        """Hits, misses and size of the cache (None when disabled)."""
        info = getattr(self._cached, "cache_info", None)
        return info() if info else None

    def cache_clear(self) -> None:
        clear = getattr(self._cached, "cache_clear", None)
        if clear:
            clear()

    def _authenticate(self, token: str) -> AuthenticatedToken | TokenRejection:
        try:
            return self._verify(token)
        except InvalidArgument as exc:
            return TokenRejection(exc.message)

    def _verify(self, token: str) -> AuthenticatedToken:
        raw = decode_macaroon(b64url_decode(token))
        ident = decode_identifier(raw.identifier)
        if ident.kid not in self.keyring.live_kids:
            raise InvalidArgument(f"unknown or retired key id {show(ident.kid)}")
        sig = hmac.digest(self.keyring.signing_key(ident.tenant, ident.kid), raw.identifier, "sha256")
        sigs = [sig]
        for cid in raw.caveats:
            sig = hmac.digest(sig, cid, "sha256")
            sigs.append(sig)
        if not hmac.compare_digest(sig, raw.signature):
            raise InvalidArgument("bad signature")
        parse = self._parse
        caveats = tuple(parse(cid) for cid in raw.caveats)
        agent = check_consistency(ident.tenant, caveats)
        ids = tuple(hashlib.sha256(s).hexdigest() for s in sigs)
        counters = tuple(
            BudgetCounter(
                ids[i + 1],
                "calls" if isinstance(c, MaxCallsCaveat) else "cost",
                c.limit,
                min((e.at for e in caveats[:i] if isinstance(e, ExpiresCaveat)), default=None),
            )
            for i, c in enumerate(caveats)
            if isinstance(c, MaxCallsCaveat | MaxCostCaveat)
        )
        return AuthenticatedToken(
            tenant=ident.tenant,
            kid=ident.kid,
            jti=ident.jti,
            agent=agent,
            token_id=ids[-1],
            caveats=caveats,
            ancestor_ids=ids,
            budget_counters=counters,
        )

"""Minting, offline attenuation and offline inspection (pymacaroons builds the tokens)."""

from __future__ import annotations

import contextlib
import hashlib
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from pymacaroons import Macaroon
from pymacaroons.macaroon import MACAROON_V2
from pymacaroons.serializers.binary_serializer import BinarySerializer

from authz.errors import InvalidArgument

from ._caveats import (
    Caveat,
    ExpiresCaveat,
    NotBeforeCaveat,
    ToolsCaveat,
    format_time,
    parse_caveat,
)
from ._keys import KeyRing, valid_name
from ._verify import check_consistency, intersect_tools, parse_caveat_bytes
from ._wire import (
    MAX_CAVEATS,
    MAX_TOKEN_LENGTH,
    b64url_decode,
    b64url_encode,
    decode_identifier,
    decode_macaroon,
    encode_identifier,
    valid_jti,
)


def hash_prompt(prompt: str) -> str:
    """The value of a ``prompt_sha256`` caveat for ``prompt``: SHA-256 hex of its UTF-8 bytes (lone
    surrogates, which UTF-8 cannot encode, are passed through as :meth:`AuthenticatedToken.check` does)."""
    return hashlib.sha256(prompt.encode("utf-8", "surrogatepass")).hexdigest()


def token_id_of(signature: bytes) -> str:
    return hashlib.sha256(signature).hexdigest()


def mint(
    keyring: KeyRing,
    *,
    tenant: str,
    agent: str | None = None,
    tools: Sequence[str] | None = None,
    expires: datetime | None = None,
    not_before: datetime | None = None,
    max_calls: int | None = None,
    max_cost: int | Decimal | str | None = None,
    args: Sequence[str] = (),
    prompt_sha256: str | None = None,
    extra_caveats: Sequence[str] = (),
    jti: str | None = None,
    kid: str | None = None,
    location: str = "tessera",
) -> str:
    """Mint a token for ``tenant`` under ``kid`` (default: the key ring's active kid).

    Caveats are added in this order: ``tenant = T`` (always), ``agent``, ``tools``, ``not_before``,
    ``expires``, ``max_calls``, ``max_cost``, ``prompt_sha256``, ``args``, ``extra_caveats``. ``tools``
    must be non-empty (None means no restriction); datetimes must be timezone-aware (written in UTC with
    ``Z``); ``max_cost`` accepts int, Decimal or a decimal string (no floats: they round). ``args`` are
    ``arg:`` caveats, the ``arg:`` prefix optional (``"amount <= 1000"``). Every caveat is validated with
    :func:`parse_caveat`; ``jti`` defaults to ``secrets.token_urlsafe(16)``. Returns base64url without
    padding. Raises InvalidArgument on any bad input (including a kid that is not live).
    """
    kid = keyring.active_kid if kid is None else kid
    if not valid_name(tenant):
        raise InvalidArgument(f"invalid tenant id {tenant!r}")
    jti = secrets.token_urlsafe(16) if jti is None else jti
    if not valid_jti(jti):
        raise InvalidArgument("jti must be 1-128 printable ASCII characters without spaces")
    caveats = [f"tenant = {tenant}"]
    if agent is not None:
        caveats.append(f"agent = {agent}")
    if tools is not None:
        if isinstance(tools, str) or not tools or not all(isinstance(t, str) for t in tools):
            raise InvalidArgument("tools must be a non-empty sequence of names (None: no restriction)")
        caveats.append("tools = " + ",".join(tools))
    if not_before is not None:
        caveats.append(f"not_before > {format_time(not_before)}")
    if expires is not None:
        caveats.append(f"expires < {format_time(expires)}")
    if max_calls is not None:
        if type(max_calls) is not int:
            raise InvalidArgument("max_calls must be an int")
        caveats.append(f"max_calls = {max_calls}")
    if max_cost is not None:
        if not isinstance(max_cost, int | Decimal | str) or isinstance(max_cost, bool):
            raise InvalidArgument("max_cost must be an int, Decimal or decimal string")
        caveats.append(f"max_cost = {max_cost}")
    if prompt_sha256 is not None:
        caveats.append(f"prompt_sha256 = {prompt_sha256}")
    if any(isinstance(seq, str) or not all(isinstance(c, str) for c in seq) for seq in (args, extra_caveats)):
        raise InvalidArgument("args and extra_caveats are sequences of caveat strings")
    caveats.extend(a if a.startswith("arg:") else "arg:" + a for a in args)
    caveats.extend(extra_caveats)
    parsed = tuple(parse_caveat(c) for c in caveats)
    check_consistency(tenant, parsed)
    macaroon = Macaroon(
        location=location,
        identifier=encode_identifier(tenant, kid, jti),
        key=keyring.root_key(tenant, kid),
        version=MACAROON_V2,
    )
    return _finish(macaroon, caveats)


def attenuate(token: str, caveats: Sequence[str]) -> str:
    """Append first-party caveats to ``token`` offline (no key needed); returns the narrower token.

    Each caveat is validated with :func:`parse_caveat`, and a caveat that would make the token invalid
    (foreign ``tenant``, an ``agent`` that conflicts with an existing one) is refused: InvalidArgument.
    Equivalent to pymacaroons ``add_first_party_caveat`` on the deserialized token. The result is
    base64url without padding (padded input is accepted).
    """
    if isinstance(caveats, str):
        raise InvalidArgument("caveats must be a sequence of caveat strings")
    data = b64url_decode(token)
    raw = decode_macaroon(data)
    ident = decode_identifier(raw.identifier)
    new = tuple(parse_caveat(c) for c in caveats)
    existing: list[Caveat] = []
    for cid in raw.caveats:
        with contextlib.suppress(InvalidArgument):  # already invalid; appending cannot make it worse
            existing.append(parse_caveat_bytes(cid))
    check_consistency(ident.tenant, (*existing, *new))
    return _finish(BinarySerializer().deserialize_raw(data), list(caveats))


def _finish(macaroon: Macaroon, caveats: list[str]) -> str:
    if len(macaroon.caveats) + len(caveats) > MAX_CAVEATS:
        raise InvalidArgument(f"a token holds at most {MAX_CAVEATS} caveats")
    for caveat in caveats:
        macaroon.add_first_party_caveat(caveat)
    token = b64url_encode(BinarySerializer().serialize_raw(macaroon))
    if len(token) > MAX_TOKEN_LENGTH:
        raise InvalidArgument(f"the token would exceed {MAX_TOKEN_LENGTH} characters")
    return token


@dataclass(frozen=True, slots=True)
class TokenInfo:
    """What :func:`inspect` reads from a token without verifying it (nothing here is trustworthy).

    ``caveats`` are the raw strings; ``parsed_caveats`` is aligned with them, None where a caveat does not
    parse. ``problems`` lists what would make :meth:`TokenAuthenticator.authenticate` reject the token
    for reasons visible offline (unknown or malformed caveats, foreign tenant, conflicting agents); the
    signature is not checked. ``tools`` is the intersection of the tools caveats (None: unrestricted),
    ``expires`` the earliest and ``not_before`` the latest; ``agent`` None if unbound or conflicting.
    """

    version: int
    tenant: str
    kid: str
    jti: str
    location: str
    token_id: str
    caveats: tuple[str, ...]
    parsed_caveats: tuple[Caveat | None, ...]
    agent: str | None
    tools: frozenset[str] | None
    expires: datetime | None
    not_before: datetime | None
    problems: tuple[str, ...]


def inspect(token: str) -> TokenInfo:
    """Decode ``token`` offline. Raises InvalidArgument only if it cannot be decoded at all (bad
    base64url, not a V2 macaroon, third-party caveat, bad identifier)."""
    raw = decode_macaroon(b64url_decode(token))
    ident = decode_identifier(raw.identifier)
    texts: list[str] = []
    parsed: list[Caveat | None] = []
    problems: list[str] = []
    for cid in raw.caveats:
        texts.append(cid.decode(errors="replace"))
        try:
            parsed.append(parse_caveat_bytes(cid))
        except InvalidArgument as exc:
            parsed.append(None)
            problems.append(exc.message)
    good = tuple(c for c in parsed if c is not None)
    agent: str | None = None
    try:
        agent = check_consistency(ident.tenant, good)
    except InvalidArgument as exc:
        problems.append(exc.message)
    return TokenInfo(
        version=ident.version,
        tenant=ident.tenant,
        kid=ident.kid,
        jti=ident.jti,
        location=raw.location,
        token_id=token_id_of(raw.signature),
        caveats=tuple(texts),
        parsed_caveats=tuple(parsed),
        agent=agent,
        tools=intersect_tools(tuple(c for c in good if isinstance(c, ToolsCaveat))),
        expires=min((c.at for c in good if isinstance(c, ExpiresCaveat)), default=None),
        not_before=max((c.at for c in good if isinstance(c, NotBeforeCaveat)), default=None),
        problems=tuple(problems),
    )

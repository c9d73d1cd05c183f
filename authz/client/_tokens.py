"""Offline delegation: narrow a capability token for a sub-agent, and read what a token allows.

Tokens are macaroons (V2 binary, base64url without padding, ARCHITECTURE §3). Anyone holding one can
append first-party caveats without any key, and the gateway enforces every caveat in the chain, so a
sub-agent's token can only ever be narrower than its parent's. This module speaks the caveat grammar
the gateway verifies (``tenant``, ``agent``, ``tools``, ``prompts``, ``resources``, ``servers``,
``expires``, ``not_before``, ``max_calls``, ``max_cost``, ``prompt_sha256``, ``arg:<path> <op> <value>``)
with nothing but pymacaroons, so the SDK stays free of server code; a unit test holds it to the
gateway's own parser.
"""

from __future__ import annotations

import binascii
import hashlib
import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

from pymacaroons import Macaroon
from pymacaroons.serializers.binary_serializer import BinarySerializer

MAX_CAVEATS = 64
MAX_TOKEN_LENGTH = 8192
MAX_CAVEAT_LENGTH = 1024
ARG_OPERATORS = ("=", "!=", "<", "<=", ">", ">=", "in")

_NUMERIC_OPS = frozenset(("<", "<=", ">", ">="))
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")
_NAME_RE = re.compile(r"[^\s|,\x00-\x1f\x7f]{1,128}")
_AGENT_RE = re.compile(r"\S{1,256}")
_TOOL_RE = re.compile(r"[^\s,]{1,128}")
_PREFIX_RE = re.compile(r"[^\s,]{1,512}")
_SERVER_RE = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}")
#: What each list-valued caveat holds: its item pattern and what an item is called in an error.
_LISTS = {
    "tools": (_TOOL_RE, "tool name"),
    "prompts": (_TOOL_RE, "prompt name"),
    "resources": (_PREFIX_RE, "resource URI prefix"),
    "servers": (_SERVER_RE, "server name"),
}
_CALLS_RE = re.compile(r"0|[1-9][0-9]{0,18}")
_COST_RE = re.compile(r"(?:0|[1-9][0-9]{0,11})(?:\.[0-9]{1,6})?")
_SHA256_RE = re.compile(r"[0-9a-fA-F]{64}")
_ARG_PATH_RE = re.compile(r"[A-Za-z0-9_-]+(?:\.[A-Za-z0-9_-]+)*")
_B64URL_RE = re.compile(r"[A-Za-z0-9_-]*={0,2}")
_RFC3339_RE = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?(?:([Zz])|([+-])(\d{2}):(\d{2}))"
)
_JSON_START = frozenset('-0123456789tfn"[{')
_OPERATOR_OF = {
    "tenant": "=",
    "agent": "=",
    "tools": "=",
    "prompts": "=",
    "resources": "=",
    "servers": "=",
    "expires": "<",
    "not_before": ">",
    "max_calls": "=",
    "max_cost": "=",
    "prompt_sha256": "=",
}


class _Malformed(ValueError):
    pass


# -- the caveat grammar --------------------------------------------------------------------------------


def _parse(text: str) -> tuple[str, Any]:
    """``(key, value)`` of one caveat (key ``arg`` for argument caveats); raises _Malformed."""
    if len(text.encode("utf-8", "surrogatepass")) > MAX_CAVEAT_LENGTH:
        raise _Malformed(f"caveat {text[:60]!r}... is longer than {MAX_CAVEAT_LENGTH} bytes")
    if _CONTROL_RE.search(text):
        raise _Malformed(f"caveat {text!r} contains control characters")
    try:
        text.encode()
    except UnicodeEncodeError:
        raise _Malformed(f"caveat {text!r} is not encodable as UTF-8") from None
    if text.startswith("arg:"):
        return "arg", _parse_arg(text)
    parts = text.split(" ", 2)
    key = parts[0]
    if key not in _OPERATOR_OF:
        raise _Malformed(f"unknown caveat {text!r}")
    if len(parts) != 3 or parts[1] != _OPERATOR_OF[key]:
        raise _Malformed(f"malformed caveat {text!r}: expected '{key} {_OPERATOR_OF[key]} <value>'")
    value = parts[2]
    if not value or value != value.strip():
        raise _Malformed(f"malformed caveat {text!r}: empty value or surrounding whitespace")
    if key == "tenant" and not _NAME_RE.fullmatch(value):
        raise _Malformed(f"malformed caveat {text!r}: invalid tenant id")
    if key == "agent" and not _AGENT_RE.fullmatch(value):
        raise _Malformed(f"malformed caveat {text!r}: invalid agent id")
    if key in _LISTS:
        pattern, what = _LISTS[key]
        names = [name.lstrip(" ") for name in value.split(",")]
        if not all(pattern.fullmatch(name) for name in names):
            raise _Malformed(f"malformed caveat {text!r}: invalid {what}")
        return key, frozenset(names)
    if key in ("expires", "not_before"):
        return key, _parse_time(text, value)
    if key == "max_calls":
        if not _CALLS_RE.fullmatch(value) or int(value) > 2**63 - 1:
            raise _Malformed(f"malformed caveat {text!r}: expected an integer between 0 and 2**63-1")
        return key, int(value)
    if key == "max_cost":
        if not _COST_RE.fullmatch(value):
            raise _Malformed(
                f"malformed caveat {text!r}: expected a decimal with at most 6 fractional digits"
            )
        return key, Decimal(value)
    if key == "prompt_sha256":
        if not _SHA256_RE.fullmatch(value):
            raise _Malformed(f"malformed caveat {text!r}: expected 64 hex digits")
        return key, value.lower()
    return key, value


_NOT_JSON = object()


def _reject_constant(name: str) -> Any:
    raise ValueError(name)


_DECODER = json.JSONDecoder(parse_constant=_reject_constant)


def _finite(value: Any) -> bool:
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, list):
        return all(_finite(v) for v in value)
    if isinstance(value, dict):
        return all(_finite(v) for v in value.values())
    return True


def _json(text: str, raw: str) -> Any:
    if text[0] not in _JSON_START:
        return _NOT_JSON
    try:
        value = _DECODER.decode(text)
    except (ValueError, RecursionError):
        return _NOT_JSON
    if not _finite(value):
        raise _Malformed(f"malformed caveat {raw!r}: numbers must be finite")
    return value


def _parse_arg(raw: str) -> tuple[str, str, Any]:
    parts = raw[4:].split(" ", 2)
    if len(parts) != 3:
        raise _Malformed(f"malformed caveat {raw!r}: expected 'arg:<name> <op> <value>'")
    name, op, text = parts
    if not _ARG_PATH_RE.fullmatch(name):
        raise _Malformed(f"malformed caveat {raw!r}: argument name must be dotted segments of [A-Za-z0-9_-]")
    if op not in ARG_OPERATORS:
        raise _Malformed(f"malformed caveat {raw!r}: unknown operator {op!r}")
    if not text or text != text.strip():
        raise _Malformed(f"malformed caveat {raw!r}: empty value or surrounding whitespace")
    if op == "in":
        parsed = _json(text, raw)
        if isinstance(parsed, list):
            return name, op, parsed
        if isinstance(parsed, dict):
            raise _Malformed(f"malformed caveat {raw!r}: 'in' takes a list, not an object")
        if parsed is not _NOT_JSON:
            return name, op, [parsed]
        items = [item.strip(" ") for item in text.split(",")]
        if not all(items):
            raise _Malformed(f"malformed caveat {raw!r}: empty item in list")
        values = []
        for item in items:
            value = _json(item, raw)
            values.append(item if value is _NOT_JSON else value)
        return name, op, values
    value = _json(text, raw)
    value = text if value is _NOT_JSON else value
    if op in _NUMERIC_OPS and (isinstance(value, bool) or not isinstance(value, int | float)):
        raise _Malformed(f"malformed caveat {raw!r}: operator {op!r} needs a number")
    return name, op, value


def _parse_time(raw: str, value: str) -> datetime:
    m = _RFC3339_RE.fullmatch(value)
    if m is None:
        raise _Malformed(f"malformed caveat {raw!r}: expected an RFC 3339 time with 'Z' or an offset")
    year, month, day, hour, minute, second, frac, z, sign, off_h, off_m = m.groups()
    try:
        tz: timezone = UTC
        if not z:
            if int(off_h) > 23 or int(off_m) > 59:
                raise ValueError("offset out of range")
            offset = timedelta(hours=int(off_h), minutes=int(off_m))
            tz = timezone(-offset if sign == "-" else offset)
        micro = int((frac or "0")[:6].ljust(6, "0"))
        return datetime(int(year), int(month), int(day), int(hour), int(minute), int(second), micro, tz)
    except ValueError as exc:
        raise _Malformed(f"malformed caveat {raw!r}: invalid time ({exc})") from None


def _format_time(moment: datetime | timedelta) -> str:
    if isinstance(moment, timedelta):
        moment = datetime.now(UTC) + moment
    if not isinstance(moment, datetime) or moment.utcoffset() is None:
        raise ValueError("times must be timezone-aware datetimes (or a timedelta from now)")
    utc = moment.astimezone(UTC)
    text = f"{utc.year:04d}-{utc.month:02d}-{utc.day:02d}T{utc.hour:02d}:{utc.minute:02d}:{utc.second:02d}"
    return text + (f".{utc.microsecond:06d}" if utc.microsecond else "") + "Z"


# -- the token encoding --------------------------------------------------------------------------------


def _decode(token: str) -> Macaroon:
    if not isinstance(token, str):
        raise TypeError(f"token must be a str, got {type(token).__name__}")
    token = token.strip()
    if not token or len(token) > MAX_TOKEN_LENGTH or not _B64URL_RE.fullmatch(token):
        raise ValueError("not a Tessera token: expected base64url text of at most 8192 characters")
    body = token.rstrip("=")
    try:
        data = binascii.a2b_base64((body + "=" * (-len(body) % 4)).replace("-", "+").replace("_", "/"))
    except binascii.Error:
        raise ValueError("not a Tessera token: bad base64url") from None
    if not data or data[0] != 2:
        raise ValueError("not a Tessera token: not a V2 binary macaroon")
    try:
        return BinarySerializer().deserialize_raw(data)
    except Exception as exc:  # pymacaroons raises a variety of types on garbage
        raise ValueError(f"not a Tessera token: {exc}") from None


def _encode(macaroon: Macaroon) -> str:
    data = BinarySerializer().serialize_raw(macaroon)
    return binascii.b2a_base64(data, newline=False).decode().replace("+", "-").replace("/", "_").rstrip("=")


def _identifier(macaroon: Macaroon) -> dict[str, Any]:
    raw = macaroon.identifier_bytes
    try:
        ident = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise ValueError("not a Tessera token: its identifier is not JSON") from None
    if not isinstance(ident, dict) or not {"v", "tenant", "kid", "jti"} <= ident.keys():
        raise ValueError("not a Tessera token: its identifier lacks v, tenant, kid or jti")
    return ident


def _caveat_texts(macaroon: Macaroon) -> list[str]:
    texts = []
    for caveat in macaroon.caveats:
        if not caveat.first_party():
            raise ValueError("third-party caveats are not supported by Tessera")
        texts.append(caveat.caveat_id_bytes.decode("utf-8", "replace"))
    return texts


# -- public API ----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TokenInfo:
    """What a token says about itself, read offline and **unverified** (only the gateway, holding the
    key, can tell whether the signature is genuine or the token revoked).

    ``tools`` is the intersection of every ``tools`` caveat (None: any tool); ``expires`` the earliest
    expiry and ``not_before`` the latest start; ``max_calls``/``max_cost`` the smallest limit (each such
    caveat also counts on its own); ``args`` the argument constraints as written (``arg:amount <= 1000``).
    ``problems`` lists what makes the gateway reject the token outright (unknown or malformed caveats,
    a foreign tenant, conflicting agents); ``token_id`` is the id revocations by token use.
    """

    tenant: str
    kid: str
    jti: str
    version: int
    location: str
    token_id: str
    caveats: tuple[str, ...]
    agent: str | None
    tools: frozenset[str] | None
    expires: datetime | None
    not_before: datetime | None
    max_calls: int | None
    max_cost: Decimal | None
    args: tuple[str, ...]
    prompt_sha256: str | None
    problems: tuple[str, ...]
    #: Intersection of the ``prompts`` caveats, of the ``servers`` caveats (None: any), and the URI
    #: prefixes of each ``resources`` caveat (a resource must start with one of each).
    prompts: frozenset[str] | None = None
    servers: frozenset[str] | None = None
    resources: tuple[frozenset[str], ...] = ()

    def allows_tool(self, tool: str) -> bool:
        """Whether the tools caveats admit ``tool`` (other caveats may still deny a call)."""
        return self.tools is None or tool in self.tools

    def expired(self, now: datetime | None = None) -> bool:
        return self.expires is not None and (now or datetime.now(UTC)) >= self.expires


def inspect(token: str) -> TokenInfo:
    """Decode ``token`` offline. Raises ValueError if it is not a Tessera token at all."""
    macaroon = _decode(token)
    ident = _identifier(macaroon)
    texts = _caveat_texts(macaroon)
    problems: list[str] = []
    agent: str | None = None
    tools: frozenset[str] | None = None
    expires: list[datetime] = []
    not_before: list[datetime] = []
    calls: list[int] = []
    costs: list[Decimal] = []
    args: list[str] = []
    prompt: str | None = None
    prompts: frozenset[str] | None = None
    servers: frozenset[str] | None = None
    resources: list[frozenset[str]] = []
    for text in texts:
        try:
            key, value = _parse(text)
        except _Malformed as exc:
            problems.append(str(exc))
            continue
        if key == "tenant" and value != ident["tenant"]:
            problems.append(f"caveat {text!r} does not match the token's tenant {ident['tenant']!r}")
        elif key == "agent":
            if agent is not None and value != agent:
                problems.append(f"conflicting agent caveats: {agent!r} and {value!r}")
            agent = agent or value
        elif key == "tools":
            tools = value if tools is None else tools & value
        elif key == "prompts":
            prompts = value if prompts is None else prompts & value
        elif key == "servers":
            servers = value if servers is None else servers & value
        elif key == "resources":
            resources.append(value)
        elif key == "expires":
            expires.append(value)
        elif key == "not_before":
            not_before.append(value)
        elif key == "max_calls":
            calls.append(value)
        elif key == "max_cost":
            costs.append(value)
        elif key == "arg":
            args.append(text)
        elif key == "prompt_sha256":
            prompt = value
    return TokenInfo(
        tenant=str(ident["tenant"]),
        kid=str(ident["kid"]),
        jti=str(ident["jti"]),
        version=ident["v"] if isinstance(ident["v"], int) else 0,
        location=macaroon.location or "",
        # pymacaroons keeps the signature hex-encoded; the gateway hashes the raw 32 bytes
        token_id=hashlib.sha256(binascii.unhexlify(macaroon.signature_bytes)).hexdigest(),
        caveats=tuple(texts),
        agent=agent,
        tools=tools,
        expires=min(expires, default=None),
        not_before=max(not_before, default=None),
        max_calls=min(calls, default=None),
        max_cost=min(costs, default=None),
        args=tuple(args),
        prompt_sha256=prompt,
        problems=tuple(problems),
        prompts=prompts,
        servers=servers,
        resources=tuple(resources),
    )


def attenuate(
    token: str,
    *,
    tools: Sequence[str] | None = None,
    expires: datetime | timedelta | None = None,
    not_before: datetime | timedelta | None = None,
    max_calls: int | None = None,
    max_cost: int | Decimal | str | None = None,
    args: Sequence[str] | Mapping[str, Any] = (),
    prompt: str | None = None,
    agent: str | None = None,
    caveats: Sequence[str] = (),
    prompts: Sequence[str] | None = None,
    resources: Sequence[str] | None = None,
    servers: Sequence[str] | None = None,
) -> str:
    """A narrower token for a sub-agent, made offline (no key, no network).

    - ``tools``: only these tools (intersected with any earlier tools caveat).
    - ``expires`` / ``not_before``: an aware ``datetime``, or a ``timedelta`` from now.
    - ``max_calls`` / ``max_cost``: a budget of its own, counted *on top of* the parent's: the sub-agent
      can never spend more than its parent allows.
    - ``args``: argument constraints, as strings (``"amount <= 1000"``, ``"currency in EUR,USD"``) or a
      mapping of exact values (``{"invoice_id": "INV-1001"}`` → ``arg:invoice_id = "INV-1001"``;
      an integral float is written as an int, ``1.0`` → ``1``, as the TypeScript SDK must).
    - ``prompt``: bind the token to this one user request (its SHA-256).
    - ``agent``: bind an unbound token to one agent id.
    - ``prompts``: only these MCP prompts; ``resources``: only MCP resources whose URI starts with one
      of these prefixes; ``servers``: only these MCP tool servers (``/v1/mcp/<name>``, ``default`` for
      ``/v1/mcp``). Each intersects with earlier caveats of its kind.
    - ``caveats``: raw caveat strings, appended last.

    Every caveat is checked against the gateway's grammar first, so a typo raises ValueError here
    instead of producing a token the gateway would refuse.
    """
    macaroon = _decode(token)
    ident = _identifier(macaroon)
    existing = _caveat_texts(macaroon)
    new: list[str] = []
    if agent is not None:
        new.append(f"agent = {agent}")
    if tools is not None:
        if isinstance(tools, str) or not tools or not all(isinstance(t, str) for t in tools):
            raise ValueError("tools must be a non-empty sequence of tool names")
        bad = [t for t in tools if not _TOOL_RE.fullmatch(t)]
        if bad:
            raise ValueError(f"invalid tool name {bad[0]!r} (1-128 characters, no whitespace or comma)")
        new.append("tools = " + ",".join(tools))
    for key, names in (("prompts", prompts), ("resources", resources), ("servers", servers)):
        if names is not None:
            if isinstance(names, str) or not names or not all(isinstance(n, str) for n in names):
                raise ValueError(f"{key} must be a non-empty sequence of strings")
            new.append(f"{key} = " + ",".join(names))  # checked against the grammar below
    if not_before is not None:
        new.append(f"not_before > {_format_time(not_before)}")
    if expires is not None:
        new.append(f"expires < {_format_time(expires)}")
    if max_calls is not None:
        if type(max_calls) is not int:
            raise ValueError("max_calls must be an int")
        new.append(f"max_calls = {max_calls}")
    if max_cost is not None:
        if isinstance(max_cost, bool | float) or not isinstance(max_cost, int | Decimal | str):
            raise ValueError("max_cost must be an int, Decimal or decimal string (floats round)")
        new.append(f"max_cost = {max_cost}")
    if prompt is not None:
        new.append(f"prompt_sha256 = {hashlib.sha256(prompt.encode('utf-8', 'surrogatepass')).hexdigest()}")
    new.extend(_arg_caveats(args))
    if isinstance(caveats, str) or not all(isinstance(c, str) for c in caveats):
        raise ValueError("caveats must be a sequence of caveat strings")
    new.extend(caveats)
    if not new:
        raise ValueError("attenuate needs at least one restriction")
    agents = set()
    for text in existing + new:
        try:
            key, value = _parse(text)
        except _Malformed as exc:
            if text in new:
                raise ValueError(str(exc)) from None
            continue  # an existing bad caveat already invalidates the token; appending cannot hurt
        if key == "tenant" and value != ident["tenant"]:
            raise ValueError(f"caveat {text!r} does not match the token's tenant {ident['tenant']!r}")
        if key == "agent":
            agents.add(value)
    if len(agents) > 1:
        raise ValueError(f"conflicting agent caveats: {sorted(agents)}")
    if len(existing) + len(new) > MAX_CAVEATS:
        raise ValueError(f"a token holds at most {MAX_CAVEATS} caveats")
    for text in new:
        macaroon.add_first_party_caveat(text)
    result = _encode(macaroon)
    if len(result) > MAX_TOKEN_LENGTH:
        raise ValueError(f"the token would exceed {MAX_TOKEN_LENGTH} characters")
    return result


def _arg_caveats(args: Sequence[str] | Mapping[str, Any]) -> list[str]:
    if isinstance(args, Mapping):
        out = []
        for name, value in args.items():
            literal = json.dumps(
                _integral_floats_as_ints(value), ensure_ascii=False, separators=(",", ":"), allow_nan=False
            )
            out.append(f"arg:{name} = {literal}")
        return out
    if isinstance(args, str) or not all(isinstance(a, str) for a in args):
        raise ValueError('args must be caveat strings such as "amount <= 1000", or a mapping of values')
    return [a if a.startswith("arg:") else "arg:" + a for a in args]


# The largest integer a JavaScript number holds exactly (Number.MAX_SAFE_INTEGER).
_SAFE_INTEGER = 2**53 - 1


def _integral_floats_as_ints(value: Any) -> Any:
    """``1.0`` as ``1``: a JavaScript number cannot tell the two apart, so the TypeScript SDK writes
    ``1`` and this keeps both SDKs' tokens byte-identical (the gateway compares numbers by value, so the
    caveat means the same). Other floats keep their repr (``0.1``, ``1e-07``), which the TypeScript SDK
    reproduces."""
    if isinstance(value, float) and value.is_integer() and abs(value) <= _SAFE_INTEGER:
        return int(value)
    if isinstance(value, Mapping):
        return {k: _integral_floats_as_ints(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_integral_floats_as_ints(v) for v in value]
    return value


__all__ = ["TokenInfo", "attenuate", "inspect"]

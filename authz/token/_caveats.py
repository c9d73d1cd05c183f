"""First-party caveat grammar: parsing into typed objects and evaluating them.

Grammar (exactly one space on each side of the operator; the value is the rest of the string and must be
non-empty, without leading or trailing whitespace; no control characters anywhere; at most
``MAX_CAVEAT_LENGTH`` UTF-8 bytes)::

    tenant = T                 T: tenant id (1-128 chars, no whitespace, "|" or ",")
    agent = A                  A: agent id (1-256 chars, no whitespace)
    tools = a,b,c              tool names (no whitespace or ","); optional spaces after commas
    prompts = a,b              MCP prompt names (as tools); several prompts caveats intersect
    resources = p,q            MCP resource URI prefixes (no whitespace or ","; 1-512 chars each): a
                               resource's URI (a template's uriTemplate) must start with one of them,
                               in every resources caveat
    servers = a,b              MCP tool servers (``/v1/mcp/<name>``; ``default`` is ``/v1/mcp`` and
                               ``/v1/tool-call``); names as the gateway's: [a-z0-9][a-z0-9_-]{0,62}
    expires < RFC3339          valid while now <  T
    not_before > RFC3339       valid once  now >= T
    max_calls = N              N: integer 0 <= N < 2**63, no sign, no leading zeros
    max_cost = N               N: decimal, at most 12 integer and 6 fractional digits (e.g. 12.50)
    prompt_sha256 = H          H: 64 hex digits, SHA-256 of the UTF-8 prompt (stored lowercase)
    arg:<path> <op> <value>    op: = != < <= > >= in

RFC3339 timestamps need ``Z`` or a numeric offset (``t``/``z`` accepted too); a naive time is invalid;
fractions beyond microseconds are truncated.

``max_calls``/``max_cost`` are not enforced here: they become budget counters (see
:class:`~authz.token.BudgetCounter`) that the budget stage reserves against. Cost limits are exact
decimals with at most 6 fractional digits, so a store can count cost in integer micro-units
(``limit * 10**6`` < 2**63) without rounding.

``arg:`` caveats. ``<path>`` is an argument name, or a dotted path into nested objects
(``arg:payee.iban = ...`` reads ``arguments["payee"]["iban"]``); segments are ``[A-Za-z0-9_-]+``, so keys
containing dots or other characters cannot be addressed, and list elements cannot be indexed. The value is
a JSON literal when it parses as one (``1000``, ``12.5``, ``true``, ``null``, ``"quoted string"``,
``[1,2]``, ``{"a":1}``), otherwise the bare text as a string (``EUR``); non-finite numbers are refused.
``in`` takes a JSON array, or a comma-separated list whose items follow the same literal-or-bare-string
rule (``arg:currency in EUR,USD``), or a single literal. Evaluation (fail closed):

- an argument missing from the arguments (or a path through a non-object) fails every arg caveat,
  ``!=`` included;
- ``=``/``!=``/``in`` compare JSON values: numbers by value (``1000`` equals ``1000.0``), booleans only
  with booleans (``true`` is not ``1``), strings, null, arrays and objects structurally;
- ``<``/``<=``/``>``/``>=`` need a number on both sides (booleans are not numbers; the caveat value is
  checked at parse time); a non-numeric argument fails the caveat. ``"5000"`` (a string) is not a number.
"""

from __future__ import annotations

import json
import math
import operator
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from types import MappingProxyType
from typing import Any, TypeAlias

from authz.echo import echo
from authz.errors import InvalidArgument

from ._keys import valid_name

MAX_CAVEAT_LENGTH = 1024
MAX_CALLS_LIMIT = 2**63 - 1

ARG_OPERATORS = frozenset(("=", "!=", "<", "<=", ">", ">=", "in"))
_COMPARE = {"<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge}
_NUMERIC_OPS = frozenset(_COMPARE)

_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")
_AGENT_RE = re.compile(r"\S{1,256}")
_TOOL_RE = re.compile(r"[^\s,]{1,128}")
_PREFIX_RE = re.compile(r"[^\s,]{1,512}")
_SERVER_RE = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}")
_CALLS_RE = re.compile(r"0|[1-9][0-9]{0,18}")
_COST_RE = re.compile(r"(?:0|[1-9][0-9]{0,11})(?:\.[0-9]{1,6})?")
_SHA256_RE = re.compile(r"[0-9a-fA-F]{64}")
_ARG_PATH_RE = re.compile(r"[A-Za-z0-9_-]+(?:\.[A-Za-z0-9_-]+)*")
_RFC3339_RE = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?(?:([Zz])|([+-])(\d{2}):(\d{2}))"
)


@dataclass(frozen=True, slots=True)
class TenantCaveat:
    """``tenant = T``: must equal the tenant in the token identifier (else the token is invalid)."""

    raw: str
    tenant: str


@dataclass(frozen=True, slots=True)
class AgentCaveat:
    """``agent = A``: binds the token to one agent; several agent caveats must all name the same agent."""

    raw: str
    agent: str


@dataclass(frozen=True, slots=True)
class ToolsCaveat:
    """``tools = a,b,c``: the called tool must be one of these (several tools caveats intersect)."""

    raw: str
    tools: frozenset[str]


@dataclass(frozen=True, slots=True)
class PromptsCaveat:
    """``prompts = a,b``: a prompt got or listed must be one of these (several prompts caveats intersect)."""

    raw: str
    prompts: frozenset[str]


@dataclass(frozen=True, slots=True)
class ResourcesCaveat:
    """``resources = p,q``: a resource read, (un)subscribed, completed or listed must have a URI (a template
    its ``uriTemplate``) that starts with one of these prefixes; several resources caveats must all hold."""

    raw: str
    prefixes: tuple[str, ...]

    def admits(self, uri: str) -> bool:
        return uri.startswith(self.prefixes)


@dataclass(frozen=True, slots=True)
class ServersCaveat:
    """``servers = a,b``: the MCP tool servers (``/v1/mcp/<name>``) the token may reach; ``default``
    names the main endpoint (``/v1/mcp``, ``/v1/tool-call``). Several servers caveats intersect."""

    raw: str
    servers: frozenset[str]


#: The name a ``servers`` caveat gives the main endpoint (``/v1/mcp`` and ``/v1/tool-call``).
DEFAULT_SERVER = "default"


@dataclass(frozen=True, slots=True)
class ExpiresCaveat:
    """``expires < T``: valid while ``now < at`` (strictly before)."""

    raw: str
    at: datetime
    text: str  # the timestamp as written, for messages


@dataclass(frozen=True, slots=True)
class NotBeforeCaveat:
    """``not_before > T``: valid once ``now >= at`` (at or after)."""

    raw: str
    at: datetime
    text: str


@dataclass(frozen=True, slots=True)
class MaxCallsCaveat:
    """``max_calls = N``: at most N tool calls under this caveat's budget counter."""

    raw: str
    limit: int


@dataclass(frozen=True, slots=True)
class MaxCostCaveat:
    """``max_cost = N``: at most N cost units (exact decimal) under this caveat's budget counter."""

    raw: str
    limit: Decimal


@dataclass(frozen=True, slots=True)
class PromptCaveat:
    """``prompt_sha256 = H``: the request's prompt must hash (SHA-256 of UTF-8, hex) to ``sha256``."""

    raw: str
    sha256: str  # lowercase hex


@dataclass(frozen=True, slots=True)
class ArgCaveat:
    """``arg:<path> <op> <value>``: a condition on one (possibly nested) tool argument.

    ``value`` is the parsed JSON value, frozen (arrays as tuples, objects as read-only mappings); for ``in``
    a tuple of JSON values. Not hashed (it may be a mapping): ``raw`` determines the rest.
    """

    raw: str
    name: str
    path: tuple[str, ...]
    op: str
    value: Any = field(hash=False)

    def violation(self, arguments: Mapping[str, Any] | None) -> str | None:
        """None if ``arguments`` satisfy this caveat, else the human-readable reason."""
        current: Any = arguments
        for segment in self.path:
            if not isinstance(current, Mapping) or segment not in current:
                return f"argument {echo(self.name)} is missing, required by caveat {show(self.raw)}"
            current = current[segment]
        op = self.op
        if op in _NUMERIC_OPS:
            if not is_number(current):
                return (
                    f"argument {echo(self.name)} ({describe(current)}) is not a number, "
                    f"required by caveat {show(self.raw)}"
                )
            try:
                ok = _COMPARE[op](current, self.value)
            except (TypeError, ArithmeticError):  # e.g. a Decimal NaN argument
                ok = False
        elif op == "=":
            ok = json_equal(current, self.value)
        elif op == "!=":
            ok = not json_equal(current, self.value)
        else:  # "in"
            ok = any(json_equal(current, item) for item in self.value)
        if ok:
            return None
        return f"argument {echo(self.name)} {render(current)} violates caveat {show(self.raw)}"


Caveat: TypeAlias = (
    TenantCaveat
    | AgentCaveat
    | ToolsCaveat
    | PromptsCaveat
    | ResourcesCaveat
    | ServersCaveat
    | ExpiresCaveat
    | NotBeforeCaveat
    | MaxCallsCaveat
    | MaxCostCaveat
    | PromptCaveat
    | ArgCaveat
)


def parse_caveat(text: str) -> Caveat:
    """Parse one first-party caveat (grammar in the module docstring).

    Raises :class:`~authz.errors.InvalidArgument` whose message is usable as a rejection reason verbatim:
    ``unknown caveat '...'`` for an unknown key, ``malformed caveat '...': <why>`` otherwise. Used when
    attenuating/minting (refuse a bad caveat up front) and when verifying (a bad caveat invalidates the
    token).
    """
    if not isinstance(text, str):
        raise InvalidArgument(f"malformed caveat: expected a string, got {type(text).__name__}")
    try:
        too_long = len(text) > MAX_CAVEAT_LENGTH or len(text.encode()) > MAX_CAVEAT_LENGTH
    except UnicodeEncodeError:
        raise InvalidArgument(f"malformed caveat {show(text)}: not encodable as UTF-8") from None
    if too_long:
        raise InvalidArgument(f"malformed caveat {show(text)}: longer than {MAX_CAVEAT_LENGTH} bytes")
    if _CONTROL_RE.search(text):
        raise InvalidArgument(f"malformed caveat {show(text)}: contains control characters")
    if text.startswith("arg:"):
        return _parse_arg(text)
    parts = text.split(" ", 2)
    if len(parts) != 3:
        key = parts[0]
        if key in _SIMPLE:
            raise _malformed(text, f"expected '{key} {_SIMPLE[key][0]} <value>'")
        raise InvalidArgument(f"unknown caveat {show(text)}")
    key, op, value = parts
    spec = _SIMPLE.get(key)
    if spec is None:
        raise InvalidArgument(f"unknown caveat {show(text)}")
    expected_op, build = spec
    if op != expected_op:
        raise _malformed(text, f"'{key}' takes the operator '{expected_op}'")
    if not value or value != value.strip():
        raise _malformed(text, "empty value or surrounding whitespace")
    return build(text, value)


def _parse_tenant(raw: str, value: str) -> Caveat:
    if not valid_name(value):
        raise _malformed(raw, "invalid tenant id")
    return TenantCaveat(raw, value)


def _parse_agent(raw: str, value: str) -> Caveat:
    if not _AGENT_RE.fullmatch(value):
        raise _malformed(raw, "invalid agent id (1-256 characters, no whitespace)")
    return AgentCaveat(raw, value)


def _parse_tools(raw: str, value: str) -> Caveat:
    names = [name.lstrip(" ") for name in value.split(",")]
    for name in names:
        if not _TOOL_RE.fullmatch(name):
            raise _malformed(raw, f"invalid tool name {show(name)}")
    return ToolsCaveat(raw, frozenset(names))


def _names(raw: str, value: str, pattern: re.Pattern[str], what: str) -> list[str]:
    names = [name.lstrip(" ") for name in value.split(",")]
    for name in names:
        if not pattern.fullmatch(name):
            raise _malformed(raw, f"invalid {what} {show(name)}")
    return names


def _parse_prompts(raw: str, value: str) -> Caveat:
    return PromptsCaveat(raw, frozenset(_names(raw, value, _TOOL_RE, "prompt name")))


def _parse_resources(raw: str, value: str) -> Caveat:
    return ResourcesCaveat(raw, tuple(dict.fromkeys(_names(raw, value, _PREFIX_RE, "resource URI prefix"))))


def _parse_servers(raw: str, value: str) -> Caveat:
    return ServersCaveat(raw, frozenset(_names(raw, value, _SERVER_RE, "server name")))


def _parse_expires(raw: str, value: str) -> Caveat:
    return ExpiresCaveat(raw, _parse_time(raw, value), value)


def _parse_not_before(raw: str, value: str) -> Caveat:
    return NotBeforeCaveat(raw, _parse_time(raw, value), value)


def _parse_max_calls(raw: str, value: str) -> Caveat:
    if not _CALLS_RE.fullmatch(value) or int(value) > MAX_CALLS_LIMIT:
        raise _malformed(raw, "expected an integer between 0 and 2**63-1")
    return MaxCallsCaveat(raw, int(value))


def _parse_max_cost(raw: str, value: str) -> Caveat:
    if not _COST_RE.fullmatch(value):
        raise _malformed(raw, "expected a non-negative decimal with at most 6 fractional digits")
    return MaxCostCaveat(raw, Decimal(value))


def _parse_prompt(raw: str, value: str) -> Caveat:
    if not _SHA256_RE.fullmatch(value):
        raise _malformed(raw, "expected 64 hex digits")
    return PromptCaveat(raw, value.lower())


_SIMPLE = {
    "tenant": ("=", _parse_tenant),
    "agent": ("=", _parse_agent),
    "tools": ("=", _parse_tools),
    "prompts": ("=", _parse_prompts),
    "resources": ("=", _parse_resources),
    "servers": ("=", _parse_servers),
    "expires": ("<", _parse_expires),
    "not_before": (">", _parse_not_before),
    "max_calls": ("=", _parse_max_calls),
    "max_cost": ("=", _parse_max_cost),
    "prompt_sha256": ("=", _parse_prompt),
}


def _parse_arg(raw: str) -> ArgCaveat:
    parts = raw[4:].split(" ", 2)
    if len(parts) != 3:
        raise _malformed(raw, "expected 'arg:<name> <op> <value>'")
    name, op, text = parts
    if not _ARG_PATH_RE.fullmatch(name):
        raise _malformed(raw, "argument name must be dotted segments of [A-Za-z0-9_-]")
    if op not in ARG_OPERATORS:
        raise _malformed(raw, f"unknown operator {show(op)}; expected one of = != < <= > >= in")
    if not text or text != text.strip():
        raise _malformed(raw, "empty value or surrounding whitespace")
    value: Any
    if op == "in":
        value = _parse_in_list(raw, text)
    else:
        value = _literal(raw, text)
        if op in _NUMERIC_OPS and not is_number(value):
            raise _malformed(raw, f"operator '{op}' needs a number")
    return ArgCaveat(raw, name, tuple(name.split(".")), op, value)


def _parse_in_list(raw: str, text: str) -> tuple[Any, ...]:
    parsed = _json_literal(raw, text)
    if isinstance(parsed, tuple):
        return parsed
    if parsed is not _NOT_JSON:
        if isinstance(parsed, Mapping):
            raise _malformed(raw, "'in' takes a list, not an object")
        return (parsed,)
    items = [item.strip(" ") for item in text.split(",")]
    if any(not item for item in items):
        raise _malformed(raw, "empty item in list")
    return tuple(_literal(raw, item) for item in items)


_NOT_JSON = object()


def _reject_constant(name: str) -> Any:
    raise ValueError(name)


_DECODER = json.JSONDecoder(parse_constant=_reject_constant)


_JSON_START = frozenset('-0123456789tfn"[{')


def _json_literal(raw: str, text: str) -> Any:
    if text[0] not in _JSON_START:  # cheap exit for bare strings (EUR, DE89...)
        return _NOT_JSON
    try:
        value = _DECODER.decode(text)
    except (ValueError, RecursionError):
        return _NOT_JSON
    if not _finite(value):
        raise _malformed(raw, "numbers must be finite")
    return _freeze(value)


def _freeze(value: Any) -> Any:
    """Lists become tuples, objects read-only mappings: parsed caveats are shared between tokens."""
    if isinstance(value, list):
        return tuple(_freeze(v) for v in value)
    if isinstance(value, dict):
        return MappingProxyType({k: _freeze(v) for k, v in value.items()})
    return value


def _literal(raw: str, text: str) -> Any:
    value = _json_literal(raw, text)
    return text if value is _NOT_JSON else value


def _finite(value: Any) -> bool:
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, list):
        return all(_finite(v) for v in value)
    if isinstance(value, dict):
        return all(_finite(v) for v in value.values())
    return True


def _parse_time(raw: str, value: str) -> datetime:
    m = _RFC3339_RE.fullmatch(value)
    if m is None:
        raise _malformed(raw, "expected an RFC3339 timestamp with 'Z' or a UTC offset")
    year, month, day, hour, minute, second, frac, z, sign, off_h, off_m = m.groups()
    try:
        if z:
            tz: timezone = UTC
        else:
            if int(off_h) > 23 or int(off_m) > 59:
                raise ValueError("offset out of range")
            offset = timedelta(hours=int(off_h), minutes=int(off_m))
            tz = timezone(-offset if sign == "-" else offset)
        micro = int((frac or "0")[:6].ljust(6, "0"))
        return datetime(
            int(year), int(month), int(day), int(hour), int(minute), int(second), micro, tzinfo=tz
        )
    except ValueError as exc:
        raise _malformed(raw, f"invalid timestamp ({exc})") from None


def format_time(moment: datetime) -> str:
    """RFC3339 in UTC with ``Z``; microseconds only when non-zero. ``moment`` must be timezone-aware."""
    if not isinstance(moment, datetime) or moment.utcoffset() is None:
        raise InvalidArgument("timestamps must be timezone-aware datetimes")
    utc = moment.astimezone(UTC)
    text = f"{utc.year:04d}-{utc.month:02d}-{utc.day:02d}T{utc.hour:02d}:{utc.minute:02d}:{utc.second:02d}"
    if utc.microsecond:
        text += f".{utc.microsecond:06d}"
    return text + "Z"


def is_number(value: Any) -> bool:
    """JSON number: int, float or Decimal, but not bool."""
    return isinstance(value, int | float | Decimal) and not isinstance(value, bool)


def json_equal(a: Any, b: Any) -> bool:
    """Equality of JSON values: numbers by value, bools only with bools, containers structurally."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if is_number(a) or is_number(b):
        return is_number(a) and is_number(b) and a == b
    if isinstance(a, str) or isinstance(b, str):
        return isinstance(a, str) and isinstance(b, str) and a == b
    if a is None or b is None:
        return a is None and b is None
    if isinstance(a, Mapping) or isinstance(b, Mapping):
        return (
            isinstance(a, Mapping)
            and isinstance(b, Mapping)
            and a.keys() == b.keys()
            and all(json_equal(a[k], b[k]) for k in a)
        )
    if isinstance(a, Sequence) and isinstance(b, Sequence):
        return len(a) == len(b) and all(json_equal(x, y) for x, y in zip(a, b, strict=True))
    return False


def render(value: Any) -> str:
    """How an argument value appears in a reason: numbers, booleans and null verbatim (``= 5000``);
    strings and containers only by type and size, so reasons (which reach the audit log) never carry
    free-form argument values."""
    if isinstance(value, bool):
        return "= true" if value else "= false"
    if value is None:
        return "= null"
    if is_number(value):
        try:
            text = str(value)
        except ValueError:  # an int beyond Python's str conversion limit
            return "(a number)"
        return f"= {text}" if len(text) <= 40 else "(a number)"
    return f"({describe(value)})"


def describe(value: Any) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if value is None:
        return "null"
    if is_number(value):
        return "a number"
    if isinstance(value, str):
        return f"a string of {len(value)} characters"
    if isinstance(value, Mapping):
        return f"an object with {len(value)} keys"
    if isinstance(value, Sequence):
        return f"an array of {len(value)} items"
    return type(value).__name__


def show(text: str, limit: int = 96) -> str:
    """Quote untrusted text (a caveat the holder may have appended): see :func:`authz.echo.echo`."""
    return echo(text, limit)


def _malformed(raw: str, why: str) -> InvalidArgument:
    return InvalidArgument(f"malformed caveat {show(raw)}: {why}")

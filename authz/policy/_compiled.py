"""Compiling a policy source once, evaluating it per call, and the per-tenant active set."""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
import threading
from collections.abc import Iterator, Mapping
from importlib import resources
from types import MappingProxyType
from typing import Any

from authz.errors import CompileDiagnostic, InvalidArgument, PolicyCompileError
from authz.policy._engine import RegoProgram, compile_error_from, line_column, referenced_input_paths
from authz.policy._regorus import RegorusProgram
from authz.policy._result import PolicyResult, result_from_engine

__all__ = [
    "MAX_POLICY_SOURCE_BYTES",
    "POLICY_ENGINES",
    "CompiledPolicy",
    "PolicySet",
    "compile_policy",
    "default_policy_source",
]

#: Policies larger than this are refused before compiling (the engine's cost grows with size).
MAX_POLICY_SOURCE_BYTES = 1024 * 1024

#: The in-process Rego engines a compiled policy can run on (``TESSERA_POLICY_ENGINE``), and the default.
POLICY_ENGINES = ("regopy", "regorus")
DEFAULT_POLICY_ENGINE = "regopy"

#: Decisions remembered per compiled policy (first in, first out beyond this), and the longest memo key
#: (canonical engine input, characters) worth remembering: together they bound the memo's memory.
MEMO_ENTRIES = 4096
MEMO_MAX_KEY_CHARS = 2048

_memo_key = json.JSONEncoder(
    sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False, check_circular=False
).encode

_PACKAGE_RE = re.compile(r"^[ \t]*package[ \t]+([^\s#]+)", re.MULTILINE)
_DECISION_RE = re.compile(r"^[ \t]*(?:default[ \t]+)?decision\b", re.MULTILINE)


class CompiledPolicy:
    """A policy source compiled by one in-process engine (rego-cpp or regorus), ready to evaluate.

    Immutable from the outside: ``version`` (the store's version number, 0 for drafts and tests),
    ``content_hash`` (``"sha256:"`` + hex digest of the UTF-8 source, what audit events record) and
    ``source``. :meth:`evaluate` is safe to call repeatedly and from several threads (calls are
    serialized; on the event loop thread the lock is never contended).

    Memoized: when the source reads neither the clock (``input.time``, ``time.now_ns``) nor anything
    outside its input (``http.send``, ``opa.runtime``, randomness; see
    :func:`~authz.policy._engine.reads_no_clock_or_outside`), its decision is a function of the input
    the engine is given, so a decision reached for one canonical engine input is reused for an equal
    one. The memo belongs to this object, i.e. to one policy source: a promotion or rollback activates
    another object (or this one, whose remembered decisions are still that source's), and
    :meth:`PolicySet.activate` clears it anyway. Errors are never remembered.
    """

    __slots__ = ("_content_hash", "_memo", "_memo_paths", "_program", "_source", "_version", "memo_hits")

    def __init__(self, source: str, version: int, content_hash: str, program: RegoProgram | RegorusProgram):
        self._source = source
        self._version = version
        self._content_hash = content_hash
        self._program = program
        self._memo: dict[str, PolicyResult] | None = {} if program.deterministic else None
        # The memo keys on the values at the paths the source reads, not on everything under the keys
        # it names: a policy reading input.arguments.amount decides calls that differ only in another
        # argument once (real calls differ in their arguments; the pipeline repeats few inputs whole).
        paths = referenced_input_paths(source) if program.deterministic else None
        self._memo_paths = None if paths is None else tuple(sorted(paths))
        self.memo_hits = 0

    @property
    def version(self) -> int:
        return self._version

    @property
    def content_hash(self) -> str:
        return self._content_hash

    @property
    def source(self) -> str:
        return self._source

    @property
    def engine(self) -> str:
        """The in-process engine evaluating this policy: ``"regopy"`` or ``"regorus"``."""
        return "regorus" if isinstance(self._program, RegorusProgram) else "regopy"

    @property
    def input_keys(self) -> frozenset[str] | None:
        """Top-level input keys the policy can read (only these reach the engine); ``None``: all."""
        return self._program.input_keys

    def evaluate(self, input: Mapping[str, Any]) -> PolicyResult:
        """Evaluate ``data.tessera.decision`` for ``input``; never raises (every failure is a deny).

        ``input`` must be JSON-compatible: mappings with string keys, lists/tuples, str, int, float,
        bool, None (see :mod:`authz.policy` for the shape the pipeline passes).
        """
        memo = self._memo
        if memo is None:
            return self._evaluate(input, narrowed=False)
        try:
            narrowed = self._program.engine_input(input)
            paths = self._memo_paths
            key = _memo_key(narrowed if paths is None else read_paths(narrowed, paths))
        except Exception:  # not JSON-representable: the engine decides (and reports it)
            return self._evaluate(input, narrowed=False)
        result = memo.get(key)
        if result is not None:
            self.memo_hits += 1
            return result
        # The engine is given only what the policy can read: every value costs a native call to pass.
        result = self._evaluate(narrowed if paths is None else keep_paths(narrowed, paths), narrowed=True)
        if not result.error and len(key) <= MEMO_MAX_KEY_CHARS:
            if len(memo) >= MEMO_ENTRIES:
                with contextlib.suppress(KeyError, RuntimeError, StopIteration):  # raced a thread
                    del memo[next(iter(memo))]
            memo[key] = result
        return result

    def _evaluate(self, input: Mapping[str, Any], *, narrowed: bool) -> PolicyResult:
        try:
            return result_from_engine(self._program.evaluate(input, narrowed=narrowed))
        except Exception as exc:  # belt and braces: a policy engine failure is a deny, never an allow
            return PolicyResult.deny(f"policy evaluation failed: {exc}", error=True)

    @property
    def memoized(self) -> bool:
        """True when decisions of this policy are remembered (it reads no clock or outside data)."""
        return self._memo is not None

    def forget_decisions(self) -> None:
        """Drop every remembered decision."""
        if self._memo is not None:
            self._memo.clear()

    def __repr__(self) -> str:
        return f"CompiledPolicy(version={self._version}, content_hash={self._content_hash!r})"


def compile_policy(source: str, *, version: int = 0, engine: str | None = None) -> CompiledPolicy:
    """Compile ``source`` (Rego v1 syntax, ``package tessera``, defining ``decision``).

    Raises :class:`~authz.errors.PolicyCompileError` with line/column diagnostics when the source does
    not compile, declares another package or defines no ``decision`` rule, and
    :class:`~authz.errors.InvalidArgument` for a non-string, empty or oversized source or a negative
    version. Compiling costs a few milliseconds; do it once per policy version. ``engine`` is one of
    :data:`POLICY_ENGINES` (``None``: the default, ``regopy``); both give the same decisions on the
    shipped policies (tests/unit/test_policy_engines.py).
    """
    engine = DEFAULT_POLICY_ENGINE if engine is None else engine
    if engine not in POLICY_ENGINES:
        raise InvalidArgument(f"policy engine must be one of {', '.join(POLICY_ENGINES)}, got {engine!r}")
    if not isinstance(source, str):
        raise InvalidArgument(f"policy source must be a string, got {type(source).__name__}")
    if isinstance(version, bool) or not isinstance(version, int) or version < 0:
        raise InvalidArgument(f"policy version must be a non-negative integer, got {version!r}")
    raw = source.encode("utf-8")
    if len(raw) > MAX_POLICY_SOURCE_BYTES:
        raise InvalidArgument(f"policy source is {len(raw)} bytes, the limit is {MAX_POLICY_SOURCE_BYTES}")
    if not source.strip():
        raise PolicyCompileError(
            "policy source is empty", [CompileDiagnostic(0, 0, "policy source is empty")]
        )
    if "\x00" in source:
        offset = raw.index(b"\x00")
        line, column = line_column(raw, offset)
        raise compile_error_from([CompileDiagnostic(line, column, "policy source contains a NUL character")])
    if engine == "regopy":
        program: RegoProgram | RegorusProgram = RegoProgram(source)
        _check_shape(source, raw)
    else:
        _check_shape(source, raw)  # first: the shape diagnostics point at their line, the v1 check cannot
        program = RegorusProgram(source)
    return CompiledPolicy(source, version, policy_hash(source), program)


def read_paths(input: Mapping[str, Any], paths: tuple[tuple[str, ...], ...]) -> list[list[Any]]:
    """What a policy reading exactly ``paths`` can see of ``input``, one entry per path in order: the
    value at the path (``[1, value]``), the depth where the path found no such key (``[0, depth]``), or,
    where a value on the way is not an object, that whole value (``[2, depth, value]``), so inputs the
    engine could tell apart never share an entry."""
    seen: list[list[Any]] = []
    for path in paths:
        value: Any = input
        for depth, key in enumerate(path):
            if not isinstance(value, Mapping):
                seen.append([2, depth, value])
                break
            if key not in value:
                seen.append([0, depth])
                break
            value = value[key]
        else:
            seen.append([1, value])
    return seen


def keep_paths(input: Mapping[str, Any], paths: tuple[tuple[str, ...], ...]) -> dict[str, Any]:
    """``input`` with only what lies on ``paths`` (no path under another, as
    :func:`~authz.policy._engine.referenced_input_paths` gives them): objects on the way keep just the
    keys that lead on, the value at a path is kept whole, and a value on the way that is not an object
    is kept as it is. A policy reading only ``paths`` decides the result as it decides ``input``."""
    kept: dict[str, Any] = {}
    for path in paths:
        source: Any = input
        target = kept
        last = len(path) - 1
        for depth, key in enumerate(path):
            if key not in source:
                break
            value = source[key]
            if depth == last or not isinstance(value, Mapping):
                target[key] = value
                break
            source = value
            target = target.setdefault(key, {})
    return kept


def policy_hash(source: str) -> str:
    """A policy's content hash, ``"sha256:" + hex`` of its UTF-8 source: what promotions record."""
    return "sha256:" + hashlib.sha256(source.encode()).hexdigest()


def _check_shape(source: str, raw: bytes) -> None:
    """Catch policies that compile but can never answer (rego-cpp happily builds them)."""
    match = _PACKAGE_RE.search(source)
    if match is None:
        raise compile_error_from(
            [CompileDiagnostic(1, 1, "policy declares no package (expected 'package tessera')")]
        )
    if match.group(1) != "tessera":
        line, column = line_column(raw, len(source[: match.start(1)].encode("utf-8")))
        message = (
            f"policy package must be 'tessera' (entrypoint data.tessera.decision), found {match.group(1)!r}"
        )
        raise compile_error_from([CompileDiagnostic(line, column, message)])
    if _DECISION_RE.search(source) is None:
        raise compile_error_from(
            [CompileDiagnostic(0, 0, "policy defines no 'decision' rule (entrypoint data.tessera.decision)")]
        )


def default_policy_source() -> str:
    """The shipped demo policy (``authz/policy/examples/demo.rego``)."""
    demo = resources.files("authz.policy").joinpath("examples").joinpath("demo.rego")
    return demo.read_text(encoding="utf-8")


class PolicySet:
    """The active compiled policy per tenant.

    Copy-on-write: every change builds a new mapping and swaps one reference, so readers (the check
    path) never lock and always see a consistent snapshot; writers serialize on a lock so concurrent
    activations (e.g. a notification thread and an admin call) cannot lose each other's update.
    """

    __slots__ = ("_active", "_write_lock")

    def __init__(self, initial: Mapping[str, CompiledPolicy] | None = None):
        self._active: Mapping[str, CompiledPolicy] = MappingProxyType(dict(initial or {}))
        self._write_lock = threading.Lock()

    def get(self, tenant: str) -> CompiledPolicy | None:
        return self._active.get(tenant)

    def activate(self, tenant: str, compiled: CompiledPolicy) -> CompiledPolicy | None:
        """Make ``compiled`` the tenant's active policy; returns the one it replaced."""
        if not isinstance(compiled, CompiledPolicy):
            raise InvalidArgument(f"expected a CompiledPolicy, got {type(compiled).__name__}")
        compiled.forget_decisions()
        with self._write_lock:
            current = self._active
            updated = dict(current)
            updated[tenant] = compiled
            self._active = MappingProxyType(updated)
            return current.get(tenant)

    def deactivate(self, tenant: str) -> CompiledPolicy | None:
        """Forget the tenant's policy (its calls then have no policy); returns the removed one."""
        with self._write_lock:
            current = self._active
            if tenant not in current:
                return None
            updated = dict(current)
            removed = updated.pop(tenant)
            self._active = MappingProxyType(updated)
            return removed

    def snapshot(self) -> Mapping[str, CompiledPolicy]:
        """An immutable view of every tenant's active policy at this instant."""
        return self._active

    def __contains__(self, tenant: object) -> bool:
        return tenant in self._active

    def __len__(self) -> int:
        return len(self._active)

    def __iter__(self) -> Iterator[str]:
        return iter(self._active)

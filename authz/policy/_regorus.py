"""The one module that talks to ``regorus`` (a Rego engine in Rust, through ``opa-eval`` on PyPI).

The second in-process engine (``TESSERA_POLICY_ENGINE=regorus``), with the surface of
:class:`~authz.policy._engine.RegoProgram` so :class:`~authz.policy.CompiledPolicy` and its memo work
unchanged. Differences from ``regopy`` (rego-cpp) that Tessera handles here:

* ``opa-eval`` parses Rego v0 unless the module imports ``rego.v1``; a v1 policy without the import
  would either not parse or, worse, parse with another meaning (``if``/``contains``/``in`` as plain
  identifiers). Tessera's contract is Rego v1 (what ``regopy`` parses), so a policy without the import
  gets it appended to its ``package`` line (:func:`as_rego_v1`; same line, so line numbers hold) and
  is read as v1 by both engines. A source without a ``package`` line is left as it is (and refused).
* The engine reads the module from a file: it is written to a private temporary directory as
  ``policy.rego`` (the name compile errors point into) and removed once compiled.
* Input goes in as JSON text. JSON numbers the engine cannot hold exactly (integers outside
  [-2**63, 2**64), which it silently rounds to a float) are refused: that evaluation is a deny with a
  clear reason rather than a decision on a different number.
* Built-in errors are strict (a failing built-in is an evaluation error, never a silently undefined
  rule) and conflicting rule values are evaluation errors, as with ``regopy``.
* regorus' ``sprintf`` reads one space directly after a verb as that verb's space flag:
  ``sprintf("%v is", ["x"])`` gives ``"xis"``, ``sprintf("%d two", [5])`` gives ``" 5two"``. For
  ``%s`` and ``%v`` the flag has no other effect, so before compiling, every format given to
  ``sprintf`` as a string literal gets one more space after each bare ``%s``/``%v`` that a space
  follows (:func:`keep_spaces_after_verbs`): those render as with ``regopy`` and OPA. Still different:
  numeric verbs followed by a space (``%d``, ``%f``, ...), verbs with flags or width (regorus does not
  parse ``%-5s``), and formats that are not literals (a variable, a concatenation). The rewrite adds
  characters only inside those literals: a diagnostic further right on such a line is off by as many.

An evaluator is not safe for concurrent use, so evaluations are serialized with a lock (uncontended on
the event loop thread).
"""

from __future__ import annotations

import json
import os
import re
import tempfile
import threading
from collections.abc import Mapping
from typing import Any

import opa_eval

from authz.errors import CompileDiagnostic, PolicyCompileError
from authz.policy._engine import (
    MODULE_NAME,
    EngineResult,
    _check_depth,
    _json_default,
    compile_error_from,
    reads_no_clock_or_outside,
    referenced_input_keys,
)

__all__ = ["RegorusProgram"]

_QUERY = "data.tessera.decision"
_UNDEFINED = "<undefined>"
_V1_IMPORT = re.compile(r"^[ \t]*import[ \t]+rego\.v1[ \t]*(?:#.*)?$", re.MULTILINE)
#: The ``package`` declaration's path (the first one; Rego allows one per module).
_PACKAGE = re.compile(r"^[ \t]*package[ \t]+[A-Za-z_][\w.]*", re.MULTILINE)
_LOCATION = re.compile(r"-->\s*\S*?" + re.escape(MODULE_NAME) + r":(\d+):(\d+)")
_ERROR_LINE = re.compile(r"^error:\s*(.*)$", re.MULTILINE)
_INT_MIN = -(2**63)
_INT_LIMIT = 2**64  # exclusive: the engine holds i64 and u64 exactly, anything else as a float
#: ``sprintf(`` then a string literal: "..." with escapes, or a raw `...` string.
_SPRINTF_FORMAT = re.compile(r'(sprintf\(\s*)("(?:[^"\\\n]|\\.)*"|`[^`]*`)')
#: The literal percent sign "%%" (skipped), or a bare %s / %v (whose space flag regorus ignores).
_VERB = re.compile(r"%%|%[sv]")
_encode = json.JSONEncoder(
    ensure_ascii=False, allow_nan=False, separators=(",", ":"), default=_json_default
).encode


class RegorusProgram:
    """One compiled policy evaluated by regorus; ``input_keys`` and ``deterministic`` as in
    :class:`~authz.policy._engine.RegoProgram` (the same source analysis)."""

    __slots__ = ("_engine", "_lock", "deterministic", "input_keys")

    def __init__(self, source: str):
        self.input_keys = referenced_input_keys(source)
        self.deterministic = reads_no_clock_or_outside(source)
        with tempfile.TemporaryDirectory(prefix="tessera-policy-") as workdir:
            path = os.path.join(workdir, MODULE_NAME)
            with open(path, "w", encoding="utf-8") as fh:
                fh.write(keep_spaces_after_verbs(as_rego_v1(source)))
            try:
                self._engine = opa_eval.OpaEval(path, query=_QUERY)
            except Exception as exc:  # the binding raises RuntimeError; anything else is refused too
                raise _compile_error(str(exc)) from None
        self._lock = threading.Lock()

    def engine_input(self, input: Mapping[str, Any]) -> Mapping[str, Any]:
        """The part of ``input`` the engine is given (the keys the source can reach)."""
        keys = self.input_keys
        return input if keys is None else {k: input[k] for k in keys if k in input}

    def evaluate(self, input: Mapping[str, Any], *, narrowed: bool = False) -> EngineResult:
        """Evaluate the entrypoint against ``input``. Never raises: failures are ``kind="error"``."""
        try:
            if not narrowed:
                input = self.engine_input(input)
            _check_depth(input)
            too_large = _check_numbers(input)
            text = _encode(input)
            if not text.isascii():
                text.encode("utf-8")  # an unpaired surrogate cannot reach the engine: say so here
            if too_large:  # after the surrogate check: the reason names what no engine could take first
                raise ValueError("an integer in the input is too large for the regorus engine")
        except Exception as exc:  # anything the input conversion raises is the caller's bad input
            return EngineResult("error", message=f"policy input could not be passed to the engine: {exc}")
        with self._lock:
            try:
                value = self._engine.evaluate_parsed(text)
            except Exception as exc:
                return EngineResult(
                    "error", message=f"policy evaluation failed: {_runtime_message(str(exc))}"
                )
        if isinstance(value, str) and value == _UNDEFINED:
            return EngineResult("undefined")
        return EngineResult("value", values=(value,))


def as_rego_v1(source: str) -> str:
    """``source`` with `` import rego.v1`` after its package path when it does not import it already:
    Tessera policies are Rego v1, and regorus reads a module without the import as v0."""
    if _V1_IMPORT.search(source) is not None:
        return source
    package = _PACKAGE.search(source)
    if package is None:
        return source
    return source[: package.end()] + " import rego.v1" + source[package.end() :]


def keep_spaces_after_verbs(source: str) -> str:
    """``source`` with one more space after each bare ``%s``/``%v`` followed by a space, in every string
    literal passed as ``sprintf``'s format, undoing regorus' dropped space (``"%v is"`` → ``"%v  is"``,
    rendered ``"x is"``). ``%%`` is not a verb; other text is unchanged."""

    def widen(fmt: re.Match[str]) -> str:
        literal = fmt.group(2)
        out, last = [], 0
        for verb in _VERB.finditer(literal):
            out.append(literal[last : verb.end()])
            last = verb.end()
            if verb.group() != "%%" and literal.startswith(" ", last):
                out.append(" ")
        out.append(literal[last:])
        return fmt.group(1) + "".join(out)

    return _SPRINTF_FORMAT.sub(widen, source)


def _check_numbers(value: Any) -> bool:
    """Refuse non-finite floats (JSON has none); True when an integer is one the engine would round (it
    holds i64/u64 exactly, larger ones as floats), which the caller refuses."""
    too_large = False
    stack = [value]
    while stack:
        item = stack.pop()
        if type(item) is int:
            if not _INT_MIN <= item < _INT_LIMIT:
                too_large = True
        elif type(item) is float:
            if item != item or item in (float("inf"), float("-inf")):
                raise ValueError("input contains a non-finite number")
        elif isinstance(item, Mapping):
            stack.extend(item.values())
        elif isinstance(item, list | tuple):
            stack.extend(item)
    return too_large


def _runtime_message(text: str) -> str:
    """ "<error> (policy.rego:L:C)" from the engine's multi-line report (without its temp paths)."""
    errors = _ERROR_LINE.findall(text)
    message = errors[0].strip() if errors else (text.strip().splitlines() or ["unknown error"])[0]
    where = _LOCATION.search(text)
    return f"{message} ({MODULE_NAME}:{where.group(1)}:{where.group(2)})" if where else message


def _compile_error(text: str) -> PolicyCompileError:
    where = _LOCATION.search(text)
    errors = [e.strip() for e in _ERROR_LINE.findall(text) if e.strip()]
    line, column = (int(where.group(1)), int(where.group(2))) if where else (0, 0)
    message = errors[0] if errors else "the policy does not compile"
    return compile_error_from([CompileDiagnostic(line, column, message)])

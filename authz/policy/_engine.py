"""The one module that talks to ``regopy`` (the Python binding of rego-cpp).

Everything engine-specific lives here so the rest of :mod:`authz.policy` deals in plain Python values.
We drive the C API through ``regopy.rego_shared`` (the binding's ctypes layer) instead of the
``Interpreter``/``Output``/``Input`` classes, because measurements on regopy 1.5.2 showed:

* ``regopy.Input`` corrupts values: strings are stored unescaped (so a string containing ``"`` breaks the
  engine's JSON output, and a crafted string can inject keys into it), integers outside int64 wrap
  silently (2**64 + 5 becomes 5) and floats keep six decimals (1e-7 becomes 0). We build the input
  ourselves: strings go in JSON-escaped, which is the representation the engine gives string literals
  parsed from source; a value the native builder cannot carry exactly (big integer, float that does not
  survive ``%f``, non-``str`` key, unknown type) switches that evaluation to the slower JSON-term path
  (``regoSetInputTerm``, ~2x the cost), which is exact. Both paths give identical results (tested).
* ``regopy.Output.__init__`` parses the output JSON eagerly and raises on outputs that embed engine
  errors, and fetches the string twice.
* With non-strict built-in errors (the engine default) a failing built-in makes its rule undefined, so a
  deny rule that hits an error silently falls back to ``default``. We enable strict built-in errors: a
  broken policy then yields an evaluation error, which the caller turns into a deny with ``error=True``.

rego-cpp's compiler is more lenient than OPA's: unknown functions, unsafe variables, conflicting rules
and recursion compile and only fail at evaluation time (as errors, never as an allow).

An evaluator is not safe for concurrent use (ctypes releases the GIL during native calls), so
:class:`RegoProgram` serializes evaluations with a lock; on the event loop thread it is uncontended.
"""

from __future__ import annotations

import json
import re
import threading
import weakref
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from regopy import LogLevel, RegoError
from regopy import rego_shared as _rs

from authz.errors import CompileDiagnostic, PolicyCompileError

__all__ = ["ENTRYPOINT", "MODULE_NAME", "EngineResult", "RegoProgram"]

#: The rule every Tessera policy must define, as a bundle entrypoint (``data.tessera.decision``).
ENTRYPOINT = "tessera/decision"
#: The name the policy source is registered under; compile errors point into it.
MODULE_NAME = "policy.rego"

_lib = _rs.rego
_new_input = _lib.regoNewInput
_free_input = _lib.regoFreeInput
_set_input = _lib.regoSetInput
_in_str = _lib.regoInputString
_in_int = _lib.regoInputInt
_in_float = _lib.regoInputFloat
_in_bool = _lib.regoInputBoolean
_in_null = _lib.regoInputNull
_in_item = _lib.regoInputObjectItem
_in_object = _lib.regoInputObject
_in_array = _lib.regoInputArray

_NODE_ERROR_SEQ = 1804
_NODE_ERROR = 1800
_NODE_ERROR_MESSAGE = 1801
_NODE_ERROR_CODE = 1803

_INT64_MIN = -(2**63)
_INT64_MAX = 2**63 - 1
_escape = json.JSONEncoder(ensure_ascii=False).encode


@dataclass(frozen=True, slots=True)
class EngineResult:
    """What one evaluation produced, before any Tessera-level interpretation.

    ``kind`` is ``"value"`` (``values`` holds the entrypoint's value(s), normally one), ``"undefined"``
    or ``"error"`` (``message`` says why: evaluation error, bad input, undecodable output).
    """

    kind: str
    values: tuple[Any, ...] = ()
    message: str = ""


class _NeedsJsonTerm(Exception):
    """The native input builder cannot represent this value exactly; use the JSON-term path."""


class RegoProgram:
    """One compiled policy: a rego-cpp bundle plus the interpreter that evaluates it.

    ``input_keys`` is the set of top-level input keys the source can reach (``None``: the whole
    input, when the source uses ``input`` other than as ``input.key`` / ``input["key"]``). Only those
    keys are handed to the engine: building the native input costs about 1 µs per value, and a policy
    that reads ``tool`` and ``arguments`` need not pay for the token's caveats.
    """

    __slots__ = ("__weakref__", "_bundle", "_interp", "_lock", "deterministic", "input_keys")

    def __init__(self, source: str):
        self.input_keys = referenced_input_keys(source)
        self.deterministic = reads_no_clock_or_outside(source)
        builder = _new_interpreter()
        try:
            try:
                _rs.rego_add_module(builder, MODULE_NAME, source)
                _rs.rego_add_entrypoint(builder, ENTRYPOINT)
                bundle = _rs.rego_build(builder)
            except RegoError as exc:
                raise _compile_error(str(exc), source) from None
            if not _rs.rego_bundle_ok(bundle):
                # Later compiler passes (well-formedness) report through the bundle, not an exception.
                try:
                    text = _bundle_errors(bundle)
                finally:
                    _rs.rego_free_bundle(bundle)
                raise _compile_error(text, source)
        finally:
            _rs.rego_free(builder)
        self._bundle = bundle
        weakref.finalize(self, _rs.rego_free_bundle, bundle)
        self._interp = _new_interpreter()
        _rs.rego_set_strict_builtin_errors(self._interp, True)
        weakref.finalize(self, _rs.rego_free, self._interp)
        self._lock = threading.Lock()

    def engine_input(self, input: Mapping[str, Any]) -> Mapping[str, Any]:
        """The part of ``input`` the engine is given (the keys the source can reach)."""
        keys = self.input_keys
        return input if keys is None else {k: input[k] for k in keys if k in input}

    def evaluate(self, input: Mapping[str, Any], *, narrowed: bool = False) -> EngineResult:
        """Evaluate the entrypoint against ``input``. Never raises: failures are ``kind="error"``.

        ``narrowed``: ``input`` already is :meth:`engine_input`'s result."""
        with self._lock:
            try:
                if not narrowed:
                    input = self.engine_input(input)
                self._set_input(input)
            except Exception as exc:  # anything the input conversion raises is the caller's bad input
                return EngineResult("error", message=f"policy input could not be passed to the engine: {exc}")
            try:
                output = _rs.rego_bundle_query_entrypoint(self._interp, self._bundle, ENTRYPOINT)
            except RegoError as exc:
                return EngineResult("error", message=f"policy evaluation failed: {_first_line(str(exc))}")
            try:
                if _rs.rego_output_ok(output):
                    text = _rs.rego_output_string(output)
                else:
                    return EngineResult(
                        "error", message=f"policy evaluation failed: {_output_errors(output)}"
                    )
            finally:
                _rs.rego_free_output(output)
        return _decode_output(text)

    def _set_input(self, value: Mapping[str, Any]) -> None:
        handle = _new_input()
        try:
            try:
                _add_value(handle, value, 0)
            except _NeedsJsonTerm:
                pass
            else:
                _check(_set_input(self._interp, handle))
                return
        finally:
            _free_input(handle)
        _check_depth(value)
        term = json.dumps(
            value, ensure_ascii=False, allow_nan=False, separators=(",", ":"), default=_json_default
        )
        _rs.rego_set_input_term(self._interp, term)


_INPUT_REF = re.compile(r"(?<![\w.])input(?!\w)")
_DOT_KEY = re.compile(r"\s*\.\s*([A-Za-z_][A-Za-z0-9_]*)")
_BRACKET_KEY = re.compile(r'\s*\[\s*(?:"((?:[^"\\\n]|\\.)*)"|`([^`]*)`)\s*\]')


def referenced_input_keys(source: str) -> frozenset[str] | None:
    """Top-level ``input`` keys ``source`` can reach, or ``None`` when it may reach any.

    Conservative by construction: every occurrence of the word ``input`` (also in comments and
    strings) must be followed by ``.name`` or ``["name"]``; anything else (``input`` alone, ``input[x]``,
    ``with input as``, ``object.get(input, ...)``) means the whole input.
    """
    paths = referenced_input_paths(source)
    return None if paths is None else frozenset(path[0] for path in paths)


#: One more segment of a reference already begun (``.name`` or ``["name"]``), directly adjacent: where
#: a reference might continue past whitespace, stopping there only widens what counts as read.
_NEXT_DOT = re.compile(r"\.([A-Za-z_][A-Za-z0-9_]*)")
_NEXT_BRACKET = re.compile(r'\[\s*(?:"((?:[^"\\\n]|\\.)*)"|`([^`]*)`)\s*\]')


def referenced_input_paths(source: str) -> frozenset[tuple[str, ...]] | None:
    """Every path into ``input`` that ``source`` can read, or ``None`` when it may read any part.

    Each occurrence of the word ``input`` contributes the longest chain of literal segments after it
    (``input.arguments.amount``, ``input["arguments"].amount``): the policy reads the value at that path,
    and only below it. A chain that stops early (``input.arguments[k]``, ``args := input.arguments``,
    ``object.get(input.arguments, ...)``) reads the whole value where it stops; an occurrence with no
    literal segment at all (see :func:`referenced_input_keys`) may read anything. Comments and strings
    count too; paths under another path are dropped, since the shorter one already covers them.
    Decisions are a function of the values at these paths, which is what the decision memo keys on.
    """
    paths: set[tuple[str, ...]] = set()
    for match in _INPUT_REF.finditer(source):
        position = match.end()
        path: list[str] = []
        while (segment := _segment(source, position, first=not path)) is not None:
            key, position = segment
            path.append(key)
        if not path:
            return None
        paths.add(tuple(path))
    return frozenset(p for p in paths if not any(q != p and p[: len(q)] == q for q in paths))


def _segment(source: str, position: int, *, first: bool) -> tuple[str, int] | None:
    """The key of the reference segment at ``position`` and where it ends; None when there is none.
    The first segment after ``input`` may follow whitespace; later ones must be adjacent."""
    dot = (_DOT_KEY if first else _NEXT_DOT).match(source, position)
    if dot is not None:
        return dot.group(1), dot.end()
    bracket = (_BRACKET_KEY if first else _NEXT_BRACKET).match(source, position)
    if bracket is None:
        return None
    if bracket.group(2) is not None:
        return bracket.group(2), bracket.end()
    try:
        return json.loads(f'"{bracket.group(1)}"'), bracket.end()
    except ValueError:
        return None


#: Built-ins whose result depends on something besides their arguments (``time.now_ns``, ``http.send``,
#: ``opa.runtime``, ``rand.intn``, ``uuid.rfc4122``, ``net.lookup_ip_addr``, ``io.jwt.decode_verify``,
#: ``crypto.x509.parse_and_verify_*``, ``providers.aws.sign_req``), matched by their last name as a word
#: anywhere in the source, strings and comments included: a policy naming one is never memoized. Rego
#: cannot call a built-in by another name (imports reach only ``data``, ``input``, ``future`` and
#: ``rego``), so a policy without these words decides from ``input`` alone (the in-process engine is
#: given no ``data`` besides the policy itself).
_IMPURE_BUILTINS = re.compile(
    r"(?<!\w)(now_ns|send|runtime|intn|rfc4122|lookup_ip_addr|decode_verify|parse_and_verify\w*|sign_req)"
    r"(?!\w)"
)


def reads_no_clock_or_outside(source: str) -> bool:
    """True when the decision of ``source`` is a function of its input alone (safe to memoize).

    Conservative: any mention of a clock, network, runtime or random built-in, in code or comments,
    or any reach into ``input.time``, counts as reading them."""
    if _IMPURE_BUILTINS.search(source) is not None:
        return False
    keys = referenced_input_keys(source)
    return keys is not None and "time" not in keys


def _new_interpreter() -> int:
    interp = _rs.rego_new()
    if not interp:
        raise MemoryError("rego-cpp could not allocate an interpreter")
    # Without this the engine prints compile errors to stdout.
    _rs.rego_set_log_level(interp, LogLevel.NONE)
    return interp


def _check(rc: int) -> None:
    if rc != 0:
        raise RegoError("the engine rejected an input value", rc)


_MAX_DEPTH = 64


def _add_value(h: int, v: Any, depth: int) -> None:
    """Push ``v`` onto the native input builder (a stack machine: children first, then the container)."""
    t = type(v)
    if t is str:
        rc = _in_str(h, _escaped(v))
    elif t is bool:
        rc = _in_bool(h, v)
    elif t is int:
        if not _INT64_MIN <= v <= _INT64_MAX:
            raise _NeedsJsonTerm
        rc = _in_int(h, v)
    elif v is None:
        rc = _in_null(h)
    elif t is dict:
        if depth >= _MAX_DEPTH:
            raise ValueError(f"input is nested deeper than {_MAX_DEPTH} levels")
        for key, item in v.items():
            if type(key) is not str:
                raise _NeedsJsonTerm
            _check(_in_str(h, _escaped(key)))
            _add_value(h, item, depth + 1)
            _check(_in_item(h))
        rc = _in_object(h, len(v))
    elif t is list or t is tuple:
        if depth >= _MAX_DEPTH:
            raise ValueError(f"input is nested deeper than {_MAX_DEPTH} levels")
        for item in v:
            _add_value(h, item, depth + 1)
        rc = _in_array(h, len(v))
    elif t is float:
        # The engine stores floats via "%f"; only values that survive that round trip go in natively.
        if v != v or v in (float("inf"), float("-inf")):
            raise ValueError("input contains a non-finite number")
        if float(f"{v:f}") != v:
            raise _NeedsJsonTerm
        rc = _in_float(h, v)
    else:
        raise _NeedsJsonTerm
    _check(rc)


def _escaped(text: str) -> bytes:
    """The JSON-escaped UTF-8 body of a string literal (what the engine's parser would store)."""
    if text.isprintable() and '"' not in text and "\\" not in text:
        # printable means no control characters: JSON escaping would change nothing
        return text.encode("utf-8")
    # strict: an unpaired surrogate (possible from JSON "\ud800") is refused, as on the JSON-term path
    return _escape(text)[1:-1].encode("utf-8")


def _check_depth(value: Any) -> None:
    """Bound the nesting of the JSON-term path too (the native parser recurses)."""
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, Mapping | list | tuple):
            if depth >= _MAX_DEPTH:
                raise ValueError(f"input is nested deeper than {_MAX_DEPTH} levels")
            children = item.values() if isinstance(item, Mapping) else item
            stack.extend((child, depth + 1) for child in children)


def _json_default(value: Any) -> Any:
    if isinstance(value, Mapping):
        return dict(value)
    raise TypeError(f"value of type {type(value).__name__} is not JSON-compatible")


def _reject_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result = dict(pairs)
    if len(result) != len(pairs):
        raise ValueError("duplicate key in engine output")
    return result


_decoder = json.JSONDecoder(object_pairs_hook=_reject_duplicates)


def _decode_output(text: str) -> EngineResult:
    if text == "undefined":
        return EngineResult("undefined")
    try:
        doc = _decoder.decode(text)
    except ValueError:
        messages = _sexpr_messages(text)
        detail = "; ".join(messages) if messages else "the engine output is not valid JSON"
        return EngineResult("error", message=f"policy evaluation failed: {detail}")
    results = doc if isinstance(doc, list) else [doc]
    values: list[Any] = []
    for result in results:
        if not isinstance(result, dict) or not isinstance(result.get("expressions"), list):
            return EngineResult("error", message="policy evaluation failed: unexpected engine output shape")
        values.extend(result["expressions"])
    if not values:
        return EngineResult("undefined")
    return EngineResult("value", values=tuple(values))


def _output_errors(output: int) -> str:
    """Collect "message (code)" from an error output's node tree."""
    messages: list[str] = []
    try:
        root = _rs.rego_output_node(output)
        stack = [root] if root else []
        while stack and len(messages) < 5:
            node = stack.pop()
            kind = _lib.regoNodeType(node)
            if kind == _NODE_ERROR:
                msg = code = ""
                for i in range(_rs.rego_node_size(node)):
                    child = _rs.rego_node_get(node, i)
                    child_kind = _lib.regoNodeType(child)
                    if child_kind == _NODE_ERROR_MESSAGE:
                        msg = _rs.rego_node_value(child)
                    elif child_kind == _NODE_ERROR_CODE:
                        code = _rs.rego_node_value(child)
                messages.append(f"{msg} ({code})" if code else msg)
            elif kind == _NODE_ERROR_SEQ:
                stack.extend(_rs.rego_node_get(node, i) for i in reversed(range(_rs.rego_node_size(node))))
    except (RegoError, ValueError):
        pass
    return "; ".join(m for m in messages if m) or "unknown engine error"


def _bundle_errors(bundle: int) -> str:
    """The S-expression text of every error node of a failed bundle."""
    texts: list[str] = []
    try:
        stack = [_rs.rego_bundle_node(bundle)]
        while stack:
            node = stack.pop()
            if not node:
                continue
            kind = _lib.regoNodeType(node)
            if kind == _NODE_ERROR:
                texts.append(_rs.rego_node_json(node))
            elif kind == _NODE_ERROR_SEQ:
                stack.extend(_rs.rego_node_get(node, i) for i in reversed(range(_rs.rego_node_size(node))))
    except (RegoError, ValueError):
        pass
    return "\n".join(texts) or "the engine rejected the policy"


def _first_line(text: str) -> str:
    messages = _sexpr_messages(text)
    if messages:
        return "; ".join(messages)
    return text.strip().splitlines()[0] if text.strip() else "unknown engine error"


# --- rego-cpp error output --------------------------------------------------------------------------
#
# Errors come back as a trieste S-expression, e.g.
#   (rego-errorseq
#     (error 11:policy.rego|51|2
#       (errormsg 16:this is unclosed)
#       (errorast |51|2 ...)))
# where "11:policy.rego" is a length-prefixed source name, "|51|2" a byte offset and length into that
# source, and "16:..." a length-prefixed text. Lengths are in bytes, so we parse the UTF-8 bytes and use
# the prefixes (never the brackets) to skip texts, which may contain anything.


@dataclass(slots=True)
class _SNode:
    kind: str
    source: str | None = None
    offset: int | None = None
    text: str | None = None
    children: list[_SNode] | None = None


class _SExprReader:
    def __init__(self, data: bytes):
        self.data = data
        self.pos = 0

    def parse_all(self) -> list[_SNode]:
        nodes: list[_SNode] = []
        while True:
            self._skip_ws()
            if self.pos >= len(self.data):
                return nodes
            nodes.append(self._node(0))

    def _skip_ws(self) -> None:
        while self.pos < len(self.data) and self.data[self.pos] in b" \t\r\n":
            self.pos += 1

    def _expect(self, char: bytes) -> None:
        if self.data[self.pos : self.pos + 1] != char:
            raise ValueError(f"expected {char!r} at byte {self.pos}")
        self.pos += 1

    def _number(self) -> int:
        start = self.pos
        while self.pos < len(self.data) and 48 <= self.data[self.pos] <= 57:
            self.pos += 1
        if start == self.pos:
            raise ValueError(f"expected a number at byte {start}")
        return int(self.data[start : self.pos])

    def _take(self, size: int) -> str:
        end = self.pos + size
        if end > len(self.data):
            raise ValueError("length prefix runs past the end")
        text = self.data[self.pos : end].decode("utf-8", "replace")
        self.pos = end
        return text

    def _node(self, depth: int) -> _SNode:
        if depth > 200:
            raise ValueError("error output nested too deeply")
        self._expect(b"(")
        start = self.pos
        while self.pos < len(self.data) and self.data[self.pos] not in b" \t\r\n()":
            self.pos += 1
        node = _SNode(self.data[start : self.pos].decode("utf-8", "replace"))
        if self.data[self.pos : self.pos + 1] == b" ":
            nxt = self.data[self.pos + 1 : self.pos + 2]
            if nxt.isdigit():
                self.pos += 1
                size = self._number()
                self._expect(b":")
                text = self._take(size)
                if self.data[self.pos : self.pos + 1] == b"|":
                    node.source = text
                    self._location(node)
                else:
                    node.text = text
            elif nxt == b"|":
                self.pos += 1
                self._location(node)
        children: list[_SNode] = []
        while True:
            self._skip_ws()
            if self.pos >= len(self.data):
                raise ValueError("unterminated node")
            if self.data[self.pos : self.pos + 1] == b")":
                self.pos += 1
                node.children = children
                return node
            children.append(self._node(depth + 1))

    def _location(self, node: _SNode) -> None:
        self._expect(b"|")
        node.offset = self._number()
        self._expect(b"|")
        size = self._number()
        if self.data[self.pos : self.pos + 1] == b":":
            self.pos += 1
            node.text = self._take(size)


def _parse_sexpr(text: str) -> list[_SNode]:
    try:
        return _SExprReader(text.encode("utf-8")).parse_all()
    except (ValueError, RecursionError):
        return []


def _error_nodes(nodes: list[_SNode]) -> list[_SNode]:
    found: list[_SNode] = []
    for node in nodes:
        if node.kind == "error":
            found.append(node)
        elif node.kind == "rego-errorseq":
            found.extend(child for child in node.children or () if child.kind == "error")
    return found


def _message_of(error: _SNode) -> str:
    for child in error.children or ():
        if child.kind == "errormsg" and child.text:
            return child.text
    return "unknown error"


def _sexpr_messages(text: str) -> list[str]:
    """Error messages found anywhere in an S-expression text (also inside otherwise-JSON output)."""
    messages: list[str] = []
    start = text.find("(error")
    while start != -1 and len(messages) < 5:
        nodes = _parse_sexpr(_balanced(text, start))
        messages.extend(_message_of(n) for n in _error_nodes(nodes))
        start = text.find("(error", start + 1)
    seen: set[str] = set()
    return [m for m in messages if not (m in seen or seen.add(m))]


def _balanced(text: str, start: int) -> str:
    """The S-expression starting at ``start`` (best effort: length prefixes are not honoured here)."""
    depth = 0
    for i in range(start, len(text)):
        if text[i] == "(":
            depth += 1
        elif text[i] == ")":
            depth -= 1
            if depth == 0:
                return text[start : i + 1]
    return text[start:]


def _compile_error(text: str, source: str) -> PolicyCompileError:
    src = source.encode("utf-8")
    diagnostics: list[CompileDiagnostic] = []
    for error in _error_nodes(_parse_sexpr(text)):
        line = column = 0
        if error.source == MODULE_NAME and error.offset is not None and error.offset <= len(src):
            line, column = line_column(src, error.offset)
        diagnostic = CompileDiagnostic(line, column, _message_of(error))
        if diagnostic not in diagnostics:
            diagnostics.append(diagnostic)
    if not diagnostics:
        raw = text.strip().splitlines()
        diagnostics.append(CompileDiagnostic(0, 0, raw[0] if raw else "the policy does not compile"))
    return compile_error_from(diagnostics)


def compile_error_from(diagnostics: list[CompileDiagnostic]) -> PolicyCompileError:
    """Build the :class:`PolicyCompileError` for ``diagnostics`` (first one in the message)."""
    more = f" (and {len(diagnostics) - 1} more)" if len(diagnostics) > 1 else ""
    return PolicyCompileError(f"policy does not compile: {diagnostics[0]}{more}", diagnostics)


def line_column(src: bytes, offset: int) -> tuple[int, int]:
    """1-based line and column (in characters) of a byte offset into UTF-8 source."""
    line = src.count(b"\n", 0, offset) + 1
    line_start = src.rfind(b"\n", 0, offset) + 1
    column = len(src[line_start:offset].decode("utf-8", "replace")) + 1
    return line, column

"""Per-tenant tool catalogs: what each tool does, in words a prompt would use.

File format (YAML, or JSON when the file name ends in ``.json``)::

    version: 1                      # optional; only 1 exists
    tenants:
      demo:
        negations: [nie, nicht]     # optional: extra negation cues for this tenant's language(s)
        tools:
          read_invoice:
            description: Show one invoice with its lines and status.
            verbs: [read, show, view, open]      # actions (single words or short phrases)
            keywords: [invoice, bill]            # objects the tool acts on
            phrases: [invoice details]           # optional: strong phrases that name the tool alone

Rules: every key is checked (unknown keys are errors, so a typo such as ``keyword:`` does not silently
disable matching); a tool needs ``phrases`` or both ``verbs`` and ``keywords``; every term must
contain at least one word. Quote YAML words such as ``no``, ``yes``, ``on`` and ``off`` (YAML 1.1
reads them as booleans). Problems raise :class:`authz.errors.ConfigError` naming the file and the
entry.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import yaml

from authz.errors import ConfigError
from authz.intent._text import stems

__all__ = ["CatalogTool", "ToolCatalog", "load_catalogs", "parse_catalogs"]

_TOOL_KEYS = ("description", "verbs", "keywords", "phrases")
_TENANT_KEYS = ("tools", "negations")
_TOP_KEYS = ("version", "tenants")
_MAX_NAME = 256
_MAX_TERMS = 200


@dataclass(frozen=True, slots=True)
class CatalogTool:
    """One tool as the catalog extractor sees it (terms as written; matching uses their stems)."""

    name: str
    description: str = ""
    verbs: tuple[str, ...] = ()
    keywords: tuple[str, ...] = ()
    phrases: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        where = f"tool {self.name!r}"
        _check_name(self.name, "tool name")
        if not isinstance(self.description, str):
            raise ConfigError(f"{where}: description must be a string")
        for field in ("verbs", "keywords", "phrases"):
            terms = getattr(self, field)
            if isinstance(terms, str):
                raise ConfigError(f"{where}: {field} must be a list of strings, not a string")
            terms = tuple(terms)
            object.__setattr__(self, field, terms)
            if len(terms) > _MAX_TERMS:
                raise ConfigError(f"{where}: {field} has more than {_MAX_TERMS} entries")
            for term in terms:
                _check_term(term, f"{where}: {field}")
        if not self.phrases and not (self.verbs and self.keywords):
            raise ConfigError(f"{where}: needs 'phrases', or both 'verbs' and 'keywords', to be matchable")


def _check_name(name: Any, what: str) -> None:
    if not isinstance(name, str) or not name or len(name) > _MAX_NAME or any(c.isspace() for c in name):
        raise ConfigError(f"{what} must be a non-empty string without whitespace (at most {_MAX_NAME} chars)")


def _check_term(term: Any, where: str) -> None:
    if not isinstance(term, str):
        hint = " (quote YAML words such as no/yes/on/off)" if isinstance(term, bool) else ""
        raise ConfigError(f"{where}: expected a string, got {type(term).__name__} {term!r}{hint}")
    if not stems(term):
        raise ConfigError(f"{where}: term {term!r} contains no word")


class ToolCatalog:
    """A tenant's tools, plus optional extra negation cues (for prompts not in English)."""

    __slots__ = ("_negations", "_tools")

    def __init__(self, tools: Iterable[CatalogTool], *, negations: Iterable[str] = ()):
        by_name: dict[str, CatalogTool] = {}
        for tool in tools:
            if not isinstance(tool, CatalogTool):
                raise ConfigError(f"catalog entries must be CatalogTool, got {type(tool).__name__}")
            if tool.name in by_name:
                raise ConfigError(f"tool {tool.name!r} appears twice in the catalog")
            by_name[tool.name] = tool
        if isinstance(negations, str):
            raise ConfigError("negations must be a list of strings, not a string")
        negations = tuple(negations)
        for cue in negations:
            _check_term(cue, "negations")
        self._tools: Mapping[str, CatalogTool] = MappingProxyType(by_name)
        self._negations = negations

    @property
    def tools(self) -> Mapping[str, CatalogTool]:
        return self._tools

    @property
    def negations(self) -> tuple[str, ...]:
        return self._negations

    @property
    def tool_names(self) -> frozenset[str]:
        return frozenset(self._tools)

    @classmethod
    def from_mapping(cls, data: Any, *, origin: str = "catalog") -> ToolCatalog:
        """Build from one tenant's entry of the file format (``{tools: {...}, negations: [...]}``)."""
        entry = _mapping(data, origin)
        _known_keys(entry, _TENANT_KEYS, origin)
        tools_data = _mapping(entry.get("tools"), f"{origin}.tools")
        tools = []
        for name, spec in tools_data.items():
            where = f"{origin}.tools.{name}"
            spec = _mapping(spec, where)
            _known_keys(spec, _TOOL_KEYS, where)
            try:
                tools.append(
                    CatalogTool(
                        name=name,
                        description=spec.get("description", ""),
                        verbs=_terms(spec.get("verbs"), f"{where}.verbs"),
                        keywords=_terms(spec.get("keywords"), f"{where}.keywords"),
                        phrases=_terms(spec.get("phrases"), f"{where}.phrases"),
                    )
                )
            except ConfigError as exc:
                raise ConfigError(f"{origin}.tools: {exc.message}") from None
        try:
            return cls(tools, negations=_terms(entry.get("negations"), f"{origin}.negations"))
        except ConfigError as exc:
            raise ConfigError(f"{origin}: {exc.message}") from None

    def to_mapping(self) -> dict[str, Any]:
        """The inverse of :meth:`from_mapping` (for storing a catalog in tenant settings)."""
        tools = {
            t.name: {
                "description": t.description,
                "verbs": list(t.verbs),
                "keywords": list(t.keywords),
                "phrases": list(t.phrases),
            }
            for t in self._tools.values()
        }
        data: dict[str, Any] = {"tools": tools}
        if self._negations:
            data["negations"] = list(self._negations)
        return data

    def __repr__(self) -> str:
        return f"ToolCatalog(tools={sorted(self._tools)!r})"


def _mapping(value: Any, where: str) -> Mapping[Any, Any]:
    if not isinstance(value, Mapping):
        kind = "nothing" if value is None else type(value).__name__
        raise ConfigError(f"{where}: expected a mapping, got {kind}")
    return value


def _known_keys(entry: Mapping[Any, Any], allowed: tuple[str, ...], where: str) -> None:
    unknown = [k for k in entry if k not in allowed]
    if unknown:
        names = ", ".join(repr(k) for k in unknown)
        raise ConfigError(f"{where}: unknown key(s) {names} (expected: {', '.join(allowed)})")


def _terms(value: Any, where: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        raise ConfigError(f"{where}: expected a list of strings, got {type(value).__name__}")
    for term in value:
        _check_term(term, where)
    return tuple(value)


def parse_catalogs(data: Any, *, origin: str = "catalogs") -> dict[str, ToolCatalog]:
    """Parse the whole file format (already decoded) into ``{tenant: ToolCatalog}``."""
    top = _mapping(data, origin)
    _known_keys(top, _TOP_KEYS, origin)
    version = top.get("version", 1)
    if version != 1 or isinstance(version, bool):
        raise ConfigError(f"{origin}: unsupported catalog version {version!r} (expected 1)")
    tenants = _mapping(top.get("tenants"), f"{origin}: tenants")
    catalogs: dict[str, ToolCatalog] = {}
    for tenant, entry in tenants.items():
        if not isinstance(tenant, str) or not tenant:
            raise ConfigError(f"{origin}: tenant names must be non-empty strings, got {tenant!r}")
        catalogs[tenant] = ToolCatalog.from_mapping(entry, origin=f"{origin}: tenants.{tenant}")
    return catalogs


def load_catalogs(path: str | os.PathLike[str]) -> dict[str, ToolCatalog]:
    """Read a catalog file (format in the module docstring); raises :class:`ConfigError` on any problem."""
    name = os.fspath(path)
    try:
        with open(name, encoding="utf-8") as fh:
            text = fh.read()
    except OSError as exc:
        raise ConfigError(f"{name}: cannot read tool catalog: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{name}: tool catalog is not UTF-8: {exc.reason}") from None
    try:
        data = json.loads(text) if name.endswith(".json") else yaml.safe_load(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(
            f"{name}: invalid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}"
        ) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"{name}: invalid YAML{where}: {problem}") from None
    return parse_catalogs(data, origin=name)

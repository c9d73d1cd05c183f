"""A tenant's catalog from the upstream's own MCP ``tools/list``: no hand-written vocabulary needed.

For each tool: the action is the first word of its name the lexicon knows as an action (``read_invoice``,
``transferFunds``, ``get-metrics``); after a light verb (``schedule_payment``, ``create_snapshot``) the
action noun counts too. Without an action word in the name, the title's and then the description's first
words are tried. Objects are the name's and the title's other words (the lexicon adds their synonyms when
matching). A tool with no recognizable action is matchable only by its name as a phrase.

Hand-written entries (the catalog file format, :mod:`authz.intent._catalog`) override derived ones tool by
tool, and may add tools.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from authz.errors import ConfigError
from authz.intent._catalog import CatalogTool, ToolCatalog
from authz.intent._lexicon import Lexicon, load_lexicon
from authz.intent._text import BREAK_TOKENS, stem, tokenize

__all__ = ["catalog_from_tools_list", "merge_catalogs", "split_name"]

MAX_TOOLS = 1000
_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])")
_SEPARATORS = re.compile(r"[_\-.\s/:]+")
#: Words that name no object of their own.
_NOT_OBJECTS = frozenset(
    stem(w)
    for w in [
        "a",
        "an",
        "the",
        "of",
        "for",
        "to",
        "by",
        "and",
        "or",
        "with",
        "from",
        "in",
        "on",
        "at",
        "as",
        "one",
        "all",
        "my",
        "our",
        "your",
        "its",
        "their",
        "new",
        "details",
        "detail",
        "info",
        "information",
        "data",
        "item",
        "items",
        "entry",
        "entries",
        "record",
        "by",
        "id",
        "ids",
        "status",
        "via",
        "into",
        "per",
    ]
)


def split_name(name: str) -> list[str]:
    """``transferFunds`` → [transfer, funds]; ``read_invoice`` → [read, invoice]; ``get-metrics.v2`` too."""
    words: list[str] = []
    for part in _SEPARATORS.split(name):
        words.extend(w.lower() for w in _CAMEL.split(part) if w)
    return [w for w in words if w]


def _words(text: str, limit: int | None = None) -> list[str]:
    tokens = [t for t in tokenize(text) if t not in BREAK_TOKENS]
    return tokens[:limit] if limit is not None else tokens


def _actions(words: list[str], lexicon: Lexicon) -> list[str]:
    verbs: list[str] = []
    for i, word in enumerate(words):
        if not lexicon.classes_of(word):
            continue
        verbs.append(word)
        if stem(word) in lexicon.light_verbs:  # "schedule_payment": the payment is the action
            verbs.extend(w for w in words[i + 1 :] if lexicon.classes_of(w))
        break
    return verbs


def _schema_objects(schema: Any) -> list[str]:
    """Objects the input schema identifies: ``invoice_id``, ``contactId`` → invoice, contact. Other
    properties (amount, subject, since) are parameters of the call, not what it acts on."""
    properties = schema.get("properties") if isinstance(schema, Mapping) else None
    if not isinstance(properties, Mapping):
        return []
    found: list[str] = []
    for key in list(properties)[:50]:
        words = split_name(key) if isinstance(key, str) else []
        if len(words) >= 2 and words[-1] in ("id", "ids"):
            found.extend(words[:-1])
    return found


def _tool(spec: Any, lexicon: Lexicon, where: str) -> CatalogTool:
    if not isinstance(spec, Mapping):
        raise ConfigError(f"{where}: expected a tool object")
    name = spec.get("name")
    if not isinstance(name, str) or not name:
        raise ConfigError(f"{where}: a tool needs a non-empty 'name'")
    annotations = spec.get("annotations") if isinstance(spec.get("annotations"), Mapping) else {}
    title = spec.get("title") or annotations.get("title") or ""
    description = spec.get("description") or ""
    if not isinstance(title, str) or not isinstance(description, str):
        raise ConfigError(f"{where}: tool {name!r}: title and description must be strings")
    name_words = split_name(name)
    title_words = _words(title)
    verbs = _actions(name_words, lexicon) or _actions(title_words, lexicon)
    if not verbs:
        verbs = _actions(_words(description, 3), lexicon)
    objects: list[str] = []
    for word in (*name_words, *title_words, *_schema_objects(spec.get("inputSchema"))):
        if verbs and word == verbs[0]:
            continue
        if stem(word) in _NOT_OBJECTS or word in objects or not any(c.isalpha() for c in word):
            continue
        objects.append(word)
    if verbs and all(c in lexicon.safe for v in verbs for c in lexicon.classes_of(v)):
        # A tool that only reads may be asked about anything its description names ("the IP address").
        for word in _words(description, 40):
            if (
                word not in objects
                and len(word) > 2
                and word.isalpha()
                and stem(word) not in _NOT_OBJECTS
                and not lexicon.classes_of(word)
            ):
                objects.append(word)
    phrase = " ".join(name_words)
    if verbs and objects:
        return CatalogTool(name=name, description=description, verbs=tuple(verbs), keywords=tuple(objects))
    if verbs:  # "search": the verb alone, its objects are the name itself
        return CatalogTool(name=name, description=description, verbs=tuple(verbs), keywords=(phrase,))
    return CatalogTool(name=name, description=description, phrases=(phrase,))


def catalog_from_tools_list(
    tools_list: Any, *, overrides: ToolCatalog | None = None, lexicon: Lexicon | None = None
) -> ToolCatalog:
    """Build a catalog from an MCP ``tools/list`` result (``{"tools": [...]}``), then apply overrides."""
    lexicon = lexicon or load_lexicon()
    if not isinstance(tools_list, Mapping) or not isinstance(tools_list.get("tools"), list):
        raise ConfigError("tools/list result must be an object with a 'tools' list")
    specs = tools_list["tools"]
    if len(specs) > MAX_TOOLS:
        raise ConfigError(f"tools/list has more than {MAX_TOOLS} tools")
    derived: dict[str, CatalogTool] = {}
    for i, spec in enumerate(specs):
        tool = _tool(spec, lexicon, f"tools[{i}]")
        derived.setdefault(tool.name, tool)  # a repeated name: the first one counts
    return merge_catalogs(ToolCatalog(derived.values()), overrides)


def merge_catalogs(derived: ToolCatalog, overrides: ToolCatalog | None) -> ToolCatalog:
    """``derived`` with each tool ``overrides`` names replaced (or added), negation cues combined."""
    if overrides is None:
        return derived
    tools = dict(derived.tools)
    tools.update(overrides.tools)
    return ToolCatalog(tools.values(), negations=(*derived.negations, *overrides.negations))

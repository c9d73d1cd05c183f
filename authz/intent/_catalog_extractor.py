"""The built-in extractor: deterministic lexical matching of a prompt against the tenant's catalog.

Matching (all on normalized, stemmed tokens, see :mod:`authz.intent._text`):

* **Sentences**: the prompt is cut at ``. ; ! ?``, line breaks and the contrast words *but, however,
  although, though, whereas*. A verb and a keyword only count together inside one sentence.
* **Negation scope**: a cue (*not, no, never, without, don't, doesn't, didn't, won't, can't, cannot,
  shouldn't, mustn't, isn't, aren't, nor, neither, avoid, except, instead of, rather than, other than*,
  plus the tenant's ``negations``) negates the words that follow it, up to 6 tokens, stopping at any
  punctuation or at *and, but, then, so, also, plus, however, while, whereas, although, though,
  because*. So "don't delete or modify invoices" negates both verbs, while "don't delete invoices and
  transfer 500 EUR" negates only the deletion. Cues only look forward ("delete nothing" is not
  understood as a negation).
* A tool is **allowed** when a phrase of it occurs outside any negation scope, or when one of its verbs
  and one of its keywords occur in the same sentence, both outside negation scopes.
* A tool is **forbidden** when a phrase of it occurs inside a negation scope, or one of its verbs does
  and that scope either names one of the tool's keywords or names no catalog keyword at all ("don't
  delete anything" forbids every tool with the verb *delete*; "don't delete the draft invoice"
  forbids only tools whose keywords include *invoice*). Forbidden wins over allowed.
* **Confidence** (a heuristic in [0, 1]): 0 when nothing matched, 0.2 when only fragments matched (a
  verb without a keyword or the reverse); otherwise the weakest decision's strength (phrase 1.0, verb +
  keyword 0.85; forbidden by a negated phrase or verb + keyword 0.9, by a bare negated verb 0.6),
  minus 0.1 per tool that matched only in fragments (at most 0.3), minus 0.2 when a tool was both asked
  for and negated; halved when the prompt had to be truncated.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

from authz.errors import InvalidArgument
from authz.intent._catalog import ToolCatalog
from authz.intent._model import Intent
from authz.intent._text import BREAK_TOKENS, SENTENCE_TOKENS, stem, stems, tokenize

__all__ = ["DEFAULT_NEGATIONS", "CatalogExtractor"]

#: Built-in negation cues (English); a tenant catalog can add more with ``negations``.
DEFAULT_NEGATIONS = (
    "not",
    "no",
    "never",
    "without",
    "don't",
    "dont",
    "doesn't",
    "doesnt",
    "didn't",
    "won't",
    "can't",
    "cannot",
    "shouldn't",
    "mustn't",
    "isn't",
    "aren't",
    "nor",
    "neither",
    "avoid",
    "except",
    "instead of",
    "rather than",
    "other than",
)
NEGATION_WINDOW = 6
#: Longer prompts are matched on their first this-many characters (and the confidence is halved).
MAX_PROMPT_CHARS = 20_000
_SCOPE_STOP_WORDS = frozenset(
    {
        "and",
        "but",
        "then",
        "so",
        "also",
        "plus",
        "however",
        "while",
        "whereas",
        "although",
        "though",
        "because",
    }
)
_SENTENCE_WORDS = frozenset({"but", "however", "although", "though", "whereas"})
_MAX_RATIONALE = 600


@dataclass(frozen=True, slots=True)
class _Term:
    tokens: tuple[str, ...]
    tool: str
    kind: str  # "verb" | "keyword" | "phrase"
    text: str


@dataclass(slots=True)
class _Hit:
    term: _Term
    start: int
    sentence: int
    scope: int  # -1 outside any negation scope


@dataclass(slots=True)
class _Evidence:
    phrase: str | None = None
    verb_keyword: tuple[str, str] | None = None
    forbidden_strong: str | None = None
    forbidden_weak: str | None = None
    asked: bool = False  # some evidence outside negation scopes


class _CompiledCatalog:
    __slots__ = ("cues", "index", "tools")

    def __init__(self, catalog: ToolCatalog):
        self.tools = tuple(sorted(catalog.tools))
        index: dict[str, list[_Term]] = {}
        for tool in catalog.tools.values():
            for kind, terms in (("verb", tool.verbs), ("keyword", tool.keywords), ("phrase", tool.phrases)):
                for text in terms:
                    term = _Term(stems(text), tool.name, kind, text)
                    if term not in index.setdefault(term.tokens[0], []):
                        index[term.tokens[0]].append(term)
        self.index = index
        cues: dict[str, list[tuple[str, ...]]] = {}
        for cue in (*DEFAULT_NEGATIONS, *catalog.negations):
            words = tuple(t for t in tokenize(cue) if t not in BREAK_TOKENS)
            cues.setdefault(words[0], []).append(words)
        for options in cues.values():
            options.sort(key=len, reverse=True)
        self.cues = cues


class CatalogExtractor:
    """Deterministic, offline intent extraction from per-tenant :class:`ToolCatalog` s.

    ``extract`` never fails: an unknown tenant or an empty prompt gives an empty intent with confidence
    0. ``agent`` is accepted for the :class:`~authz.intent.IntentExtractor` protocol and not used.
    Results are cached per (tenant, SHA-256 of the prompt) in a bounded LRU (``cache_size`` 0
    disables it); :meth:`set_catalog` swaps a tenant's catalog and drops the cache.
    """

    def __init__(self, catalogs: Mapping[str, ToolCatalog], *, cache_size: int = 1024):
        if isinstance(cache_size, bool) or not isinstance(cache_size, int) or cache_size < 0:
            raise InvalidArgument(f"cache_size must be a non-negative integer, got {cache_size!r}")
        compiled = {}
        for tenant, catalog in catalogs.items():
            if not isinstance(catalog, ToolCatalog):
                raise InvalidArgument(f"catalog for tenant {tenant!r} must be a ToolCatalog")
            compiled[tenant] = _CompiledCatalog(catalog)
        self._catalogs: Mapping[str, _CompiledCatalog] = MappingProxyType(compiled)
        self._cache: OrderedDict[tuple[str, bytes], Intent] = OrderedDict()
        self._cache_size = cache_size

    @property
    def tenants(self) -> frozenset[str]:
        return frozenset(self._catalogs)

    def set_catalog(self, tenant: str, catalog: ToolCatalog | None) -> None:
        """Replace (or with ``None`` remove) a tenant's catalog."""
        updated = dict(self._catalogs)
        if catalog is None:
            updated.pop(tenant, None)
        elif isinstance(catalog, ToolCatalog):
            updated[tenant] = _CompiledCatalog(catalog)
        else:
            raise InvalidArgument(f"catalog for tenant {tenant!r} must be a ToolCatalog")
        self._catalogs = MappingProxyType(updated)
        self._cache.clear()

    async def extract(self, tenant: str, agent: str | None, prompt: str) -> Intent:
        return self.extract_now(tenant, prompt)

    def extract_now(self, tenant: str, prompt: str) -> Intent:
        """Synchronous form of :meth:`extract` (the work is CPU-only and takes microseconds)."""
        if not isinstance(prompt, str):
            raise InvalidArgument(f"prompt must be a string, got {type(prompt).__name__}")
        catalog = self._catalogs.get(tenant)
        if catalog is None:
            return Intent.empty("catalog", f"tenant {tenant!r} has no tool catalog", "no tool catalog")
        key = (tenant, hashlib.sha256(prompt.encode("utf-8", "surrogatepass")).digest())
        cached = self._cache.get(key)
        if cached is not None:
            self._cache.move_to_end(key)
            return cached
        intent = _match(catalog, prompt)
        if self._cache_size:
            self._cache[key] = intent
            if len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return intent


def _match(catalog: _CompiledCatalog, prompt: str) -> Intent:
    truncated = len(prompt) > MAX_PROMPT_CHARS
    tokens = tokenize(prompt[:MAX_PROMPT_CHARS] if truncated else prompt)
    if not tokens:
        return Intent.empty("catalog", "the prompt contains no words", "empty prompt")
    n = len(tokens)
    stemmed = [t if t in BREAK_TOKENS else stem(t) for t in tokens]

    sentence_of = [0] * n
    sentence = 0
    for i, tok in enumerate(tokens):
        if tok in SENTENCE_TOKENS or tok in _SENTENCE_WORDS:
            sentence += 1
        sentence_of[i] = sentence

    hits: list[_Hit] = []
    action_at: set[int] = set()
    for i, tok in enumerate(stemmed):
        for term in catalog.index.get(tok, ()):
            size = len(term.tokens)
            if tuple(stemmed[i : i + size]) == term.tokens:
                hits.append(_Hit(term, i, sentence_of[i], -1))
                if term.kind != "keyword":
                    action_at.add(i)

    scope_of = [-1] * n
    cue_of: list[str] = []
    i = 0
    while i < n:
        cue_len = _cue_at(catalog, tokens, i)
        if not cue_len:
            i += 1
            continue
        scope = len(cue_of)
        cue_of.append(" ".join(tokens[i : i + cue_len]))
        k, words, covered_action = i + cue_len, 0, False
        while k < n and words < NEGATION_WINDOW:
            tok = tokens[k]
            if tok in SENTENCE_TOKENS or tok in _SCOPE_STOP_WORDS:
                break
            if tok in BREAK_TOKENS:  # "," or ":" ends the scope only once it has covered an action
                if covered_action:
                    break
            else:
                if scope_of[k] == -1:
                    scope_of[k] = scope
                covered_action = covered_action or k in action_at
                words += 1
            k += 1
        i += cue_len
    for hit in hits:
        hit.scope = scope_of[hit.start]

    keyword_scopes: dict[int, set[str]] = {}
    for hit in hits:
        if hit.term.kind == "keyword" and hit.scope != -1:
            keyword_scopes.setdefault(hit.scope, set()).add(hit.term.tool)

    evidence: dict[str, _Evidence] = {}
    positive_verbs: dict[str, dict[int, str]] = {}
    positive_keywords: dict[str, dict[int, str]] = {}
    for hit in hits:
        tool, kind = hit.term.tool, hit.term.kind
        ev = evidence.setdefault(tool, _Evidence())
        if hit.scope == -1:
            ev.asked = True
            if kind == "phrase":
                ev.phrase = ev.phrase or hit.term.text
            elif kind == "verb":
                positive_verbs.setdefault(tool, {}).setdefault(hit.sentence, hit.term.text)
            else:
                positive_keywords.setdefault(tool, {}).setdefault(hit.sentence, hit.term.text)
            continue
        cue = cue_of[hit.scope]
        if kind == "phrase":
            ev.forbidden_strong = ev.forbidden_strong or f"{cue!r} before {hit.term.text!r}"
        elif kind == "verb":
            scope_keywords = keyword_scopes.get(hit.scope, set())
            if tool in scope_keywords:
                ev.forbidden_strong = ev.forbidden_strong or f"{cue!r} before {hit.term.text!r}"
            elif not scope_keywords:
                ev.forbidden_weak = ev.forbidden_weak or f"{cue!r} before {hit.term.text!r}"

    allowed: set[str] = set()
    forbidden: set[str] = set()
    strengths: list[float] = []
    conflicts = 0
    parts: list[str] = []
    for tool in catalog.tools:
        ev = evidence.get(tool)
        if ev is None:
            continue
        verbs, keywords = positive_verbs.get(tool, {}), positive_keywords.get(tool, {})
        shared = sorted(set(verbs) & set(keywords))
        if shared:
            ev.verb_keyword = (verbs[shared[0]], keywords[shared[0]])
        if ev.forbidden_strong or ev.forbidden_weak:
            forbidden.add(tool)
            strengths.append(0.9 if ev.forbidden_strong else 0.6)
            parts.append(f"{tool} forbidden ({ev.forbidden_strong or ev.forbidden_weak})")
            if ev.phrase or ev.verb_keyword:
                conflicts += 1
        elif ev.phrase:
            allowed.add(tool)
            strengths.append(1.0)
            parts.append(f"{tool} allowed (phrase {ev.phrase!r})")
        elif ev.verb_keyword:
            allowed.add(tool)
            strengths.append(0.85)
            parts.append(f"{tool} allowed (verb {ev.verb_keyword[0]!r} + keyword {ev.verb_keyword[1]!r})")

    # Fragments: catalog words outside negations that no decided tool accounts for ("summarize the
    # invoice": a keyword without any verb). Each one makes the reading less certain.
    decided = allowed | forbidden
    explained = {hit.start for hit in hits if hit.term.tool in decided}
    fragments: dict[int, str] = {}
    for hit in hits:
        if hit.scope == -1 and hit.start not in explained:
            fragments.setdefault(hit.start, hit.term.text)
    if fragments:
        words = ", ".join(repr(fragments[i]) for i in sorted(fragments)[:5])
        parts.append(f"unmatched catalog words: {words}")

    if strengths:
        confidence = min(strengths) - min(0.3, 0.1 * len(fragments)) - (0.2 if conflicts else 0.0)
        confidence = max(0.05, confidence)
    else:
        confidence = 0.2 if fragments else 0.0
    if truncated:
        confidence /= 2
        parts.append(f"prompt truncated to {MAX_PROMPT_CHARS} characters")
    rationale = "; ".join(parts) if parts else "no catalog tool matched the prompt"
    if len(rationale) > _MAX_RATIONALE:
        rationale = rationale[: _MAX_RATIONALE - 1] + "…"
    summary_parts = []
    if allowed:
        summary_parts.append("allowed: " + ", ".join(sorted(allowed)))
    if forbidden:
        summary_parts.append("forbidden: " + ", ".join(sorted(forbidden)))
    summary = "; ".join(summary_parts) or "no tool requested"
    return Intent(
        frozenset(allowed), frozenset(forbidden), round(confidence, 2), rationale, "catalog", summary
    )


def _cue_at(catalog: _CompiledCatalog, tokens: list[str], i: int) -> int:
    for cue in catalog.cues.get(tokens[i], ()):
        if tuple(tokens[i : i + len(cue)]) == cue:
            return len(cue)
    return 0

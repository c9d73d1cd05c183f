"""The built-in extractor: deterministic matching of a prompt against the tenant's catalog and the lexicon.

Every word is normalized and stemmed (:mod:`authz.intent._text`); the shipped lexicon
(:mod:`authz.intent._lexicon`, ``lexicon.yaml``) maps task language in English and German to action
classes (*read, list, export, create, update, delete, approve, reject, pay, send, draft, schedule, start,
stop, restart, terminate, backup, scale, execute, publish, archive, restore, assign, merge, deploy, upload,
comment*). A tool's classes come from its catalog verbs, its
objects from its keywords (plus the lexicon's synonyms of them).

* **Untrusted text**: quoted passages ("the note says: '…'") are content, not requests, and are skipped.
  From an injection marker (*ignore previous instructions*, *new task*, *SYSTEM:* …) to the end of the
  prompt nothing is a request, and every action asked there is **forbidden**.
* **Sentences** are cut at ``. ; ! ?``, line breaks and *but, however, although, though, whereas, aber,
  sondern*. An action and an object pair up only inside one sentence; a question asks to read about the
  objects it names.
* An action term outside negation asks for the tools of its classes: those whose objects the sentence
  names, or, when it names none of theirs, all of them. *Weak* terms ("book", "send", "handle") only ask
  for tools whose objects the sentence names. Tools that only read are also asked for when their objects
  are named in a sentence that asks for anything: reading what the task is about is part of the task.
  Hand-written ``phrases`` ask for their tool directly.
* **Negation**: a cue (*not, don't, never, without, no …*, German *nicht, kein, nie, ohne …*, the tenant's
  ``negations``) negates up to 6 following words within the clause; *nothing/nichts/nicht* right after a
  verb negate it ("lösche nichts"). A negated action forbids the tools of its classes whose objects the
  scope names, or all of them. A negated *change/touch/modify* forbids every tool that writes.
* **Scope**: *only/just/nur* before an action, or *read-only / nothing else / no changes*, forbids every
  tool that writes and was not asked for.
* **Outcome**: forbidden wins over allowed; when nothing was allowed or forbidden the intent is
  *undetermined*. ``terms`` lists what matched (lexicon and catalog words, never the prompt).
* **Confidence** (a heuristic): 0.9 when every decision came from a strong term with an object, 0.75 with
  strong terms alone, 0.6 when a weak term, a question or a read-along decided; minus 0.2 when an
  injection was found; halved when the prompt had to be truncated; 0 when undetermined.

**Speed** (a check's budget for this is 50 µs): each catalog is compiled once into tables, and a prompt is
read with lookups in them. The prompt is cut at whitespace and each piece ("invoices,", "INV-1001") is
looked up in a table of pieces already read, which holds each piece's normalized words with their stems
and what they may start (filled as prompts arrive, bounded like the word table); then only the flagged
words are visited, each kind selected by its own column with ``itertools.compress``. The action terms to
try at a word are in its table entry, narrowed by the next word; what an action asks for (or, negated,
forbids) given the objects its sentence names is computed once per (term, objects) per catalog with its
reasons written; the tools that read the objects named, and the reads a task brings along, are kept per
catalog too. What depends on no catalog is worked out once per process (per lexicon) and shared: a
piece's words with their stems, context bits, lexicon flags and action terms (:class:`_SharedWords`), the
reasons and summaries (names only); a catalog takes a shared piece as it is unless one of its words is
one of the catalog's own (objects, phrases, its negation cues, an action word that is also its object
word, a compound an object word ends), so its first reading of a word is mostly a lookup or two. Quotes
are found with ``str.find`` (no pattern scan of the prompt), and a negation scope without a comma or
clause word in reach is marked as one slice.
``tests/intent_reference.py`` keeps the plain reading of these rules, and a differential test holds this
module to it, Intent field by field.
"""

from __future__ import annotations

import functools
import hashlib
import weakref
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from itertools import accumulate, chain, compress
from operator import itemgetter
from types import MappingProxyType

from authz.errors import InvalidArgument
from authz.intent._catalog import ToolCatalog
from authz.intent._lexicon import ActionTerm, Lexicon, load_lexicon
from authz.intent._model import Intent
from authz.intent._text import BREAK_TOKENS, SENTENCE_TOKENS, TOKEN_PATTERN, normalize, stem, tokenize

__all__ = ["DEFAULT_NEGATIONS", "CatalogExtractor"]

#: Built-in negation cues (English); the lexicon adds German ones, a tenant catalog its own.
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
    "hold off on",
    "hold off",
    "refrain from",
)
#: The action class of investigating ("figure out why", "look into"): asks for every tool that reads.
DIAGNOSE = "diagnose"
NEGATION_WINDOW = 6
GAP_WINDOW = 8
#: Longer prompts are matched on their first this-many characters (and the confidence is halved).
MAX_PROMPT_CHARS = 20_000
_SCOPE_STOP_WORDS = frozenset(
    [
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
        "und",
        "aber",
        "dann",
        "sondern",
    ]
)
#: Where a negation's scope ends whatever it has covered: a sentence's end or a word that starts a clause.
_SCOPE_ENDS = SENTENCE_TOKENS | _SCOPE_STOP_WORDS
_SENTENCE_WORDS = frozenset({"but", "however", "although", "though", "whereas", "aber", "sondern"})
_MAX_RATIONALE = 600
_MAX_TERMS = 32
#: Where a quoted passage may open: double quotes, typographic quotes, and single quotes that are not
#: apostrophes. A passage ends at its closing quote on the same line, at most _MAX_QUOTED characters on.
_OPENERS = ('"', "“", "„", "'")
#: („ closes with ” or with “)
_CLOSER = {'"': '"', "“": "”", "„": "”", "'": "'"}
_MAX_QUOTED = 2000
#: Words after which a participle describes a state ("the approved invoices", "is already paid").
_STATE_WORDS = frozenset(
    [
        "the",
        "a",
        "an",
        "all",
        "any",
        "my",
        "our",
        "your",
        "their",
        "these",
        "those",
        "this",
        "that",
        "is",
        "are",
        "was",
        "were",
        "been",
        "be",
        "being",
        "already",
        "not",
        "still",
        "die",
        "der",
        "das",
        "den",
        "dem",
        "ist",
        "sind",
        "wurde",
        "wurden",
        "bereits",
        "schon",
    ]
)
_PARTICIPLES = frozenset({"paid", "sent", "shown", "seen", "done", "gesendet", "bezahlt", "gelöscht"})
#: Forms of "be" before a verb's -ing form (a state) and the user speaking of their own steps.
_BE = frozenset(["is", "are", "was", "were", "be", "been", "being", "am"])
_SELF = frozenset(["i", "we", "i'll", "we'll", "i'm", "we're", "ich", "wir"])
#: Words after which a past form may still be a request ("have it deleted", "get them paid").
_REQUEST_LEADS = frozenset(
    ["it", "them", "him", "her", "this", "these", "those", "everything", "all", "get", "gets", "got", "be"]
)
#: Words after which a word that is both an action and an object ("email", "reply") is the action.
_VERB_LEADS = frozenset(
    [
        "please",
        "kindly",
        "and",
        "then",
        "also",
        "or",
        "to",
        "i",
        "we",
        "you",
        "just",
        "only",
        "pls",
        "bitte",
        "und",
        "dann",
        "oder",
        "auch",
        "nur",
    ]
)


@dataclass(frozen=True, slots=True)
class _ToolInfo:
    name: str
    classes: frozenset[str]
    objects: frozenset[str]
    safe: bool


#: An action found in a prompt, as a list (built several times per prompt: a list is the cheapest):
#: [term (None: a question), start, sentence, negation scope id (-1 outside any), after an injection
#: marker, a generic change ("change", "touch")].
_Action = list
_TERM, _START, _SCOPE = 0, 1, 3


def _allow(allowed: dict[str, float], reasons: list[str], tool: str, strength: float, why: str) -> None:
    """Allows ``tool`` (the strongest reason counts; the first one is written)."""
    previous = allowed.get(tool)
    if previous is None:
        reasons.append(f"{tool} allowed ({why})")
        allowed[tool] = strength
    elif strength > previous:
        allowed[tool] = strength


def _forbid(forbidden: dict[str, str], reasons: list[str], tool: str, why: str) -> None:
    if tool not in forbidden:
        forbidden[tool] = why
        reasons.append(f"{tool} forbidden ({why})")


#: round(confidence, 2) of the few confidences there are, computed once each (round to digits is slow).
_ROUNDED: dict[float, float] = {}


#: What a word may start (bit flags of :meth:`_CompiledCatalog.learn`).
_SENTENCE, _ACTION, _OBJECT, _CUE, _MARKER, _READ_ONLY, _POST_NEGATION, _QUESTION = (1 << k for k in range(8))
_RARE = _CUE | _MARKER | _READ_ONLY | _POST_NEGATION | _QUESTION
_MAX_WORDS = 50_000
#: Longer words are classified each time they are read, not kept: the table stays small (50,000 words of
#: at most 64 characters) whatever prompts arrive.
_MAX_KEPT_WORD = 64
#: A word table entry (see :meth:`_CompiledCatalog.learn`).
#: (the fifth field: an action word's (terms by next stem, terms anywhere), see _action_options, the sixth
#: an object word's objects; else 0)
_Word = tuple[str, str, int, int, object, int, int]
#: A word's context bits (a word table entry's last field; 0 for punctuation), which tell a request from a
#: state or a report ("the approved invoices", "Tom moved"), computed once per word. Bits 0-3: how the word
#: reads itself (a participle, an -ed form, an -ing form, a word at all).
_T_PARTICIPLE, _T_ED, _T_ING, _T_WORD = 1, 2, 4, 8
_T_BITS = 15
#: Bits 4-7: which of those bits, in the word after this one, make that word no request.
_BLOCKS = 4
#: Bits 8-10: "will", the user themself ("I", "we"), a word after which an action/object word is the action.
_P_WILL, _P_SELF, _P_VERB_LEAD = 1 << 8, 1 << 9, 1 << 10
_find_tokens = TOKEN_PATTERN.findall
_RECORDED = itemgetter(2)  # an object's recorded terms (in objects_at)


class _CompiledCatalog:
    __slots__ = (
        "_object_terms",
        "action_options",
        "along",
        "asks",
        "by_class",
        "chunks",
        "class_tools",
        "compounds",
        "cues",
        "forbids",
        "labels",
        "lexicon",
        "lexicon_term",
        "longest_object",
        "mentions",
        "nothing",
        "object_index",
        "object_words",
        "only_reasons",
        "own",
        "phrases",
        "read_reasons",
        "reading",
        "reads_along",
        "safe_by_object",
        "safe_reading",
        "safe_tools",
        "selected",
        "shared",
        "single_objects",
        "suffixes",
        "summaries",
        "tool_objects",
        "tools",
        "unsafe",
        "words",
    )

    def __init__(self, catalog: ToolCatalog, lexicon: Lexicon):
        self.lexicon = lexicon
        infos: dict[str, _ToolInfo] = {}
        objects: dict[tuple[str, ...], set[str]] = {}  # object words -> canonical object names
        phrases: dict[str, list[tuple[tuple[str, ...], str, str]]] = {}
        labels: dict[str, str] = dict(lexicon.labels)  # object name -> as written (for recorded terms)
        for tool in catalog.tools.values():
            # A tool's classes: its verbs' strong senses; ambiguous weak verbs ("open") only if that is all.
            senses = [_senses(lexicon, verb) for verb in tool.verbs]
            classes = {c for strong, _ in senses for c in strong} or {c for _, weak in senses for c in weak}
            names = set()
            for keyword in tool.keywords:
                words = _stems(keyword)
                canonical = lexicon.canonical_objects(words)
                labels.setdefault(" ".join(words), keyword)
                names |= canonical
                objects.setdefault(words, set()).update(canonical)
            for text in tool.phrases:
                words = _stems(text)
                phrases.setdefault(words[0], []).append((words, tool.name, text))
            known = {
                c for c in classes if not c.startswith("=")
            }  # verbs the lexicon does not know are neutral
            safe = bool(known) and known <= lexicon.safe
            infos[tool.name] = _ToolInfo(tool.name, frozenset(classes), frozenset(names), safe)
        for words, canonical in lexicon.objects.items():
            objects.setdefault(words, set()).update(canonical)
        self.tools = MappingProxyType(infos)
        self.tool_objects = {name: info.objects for name, info in infos.items()}
        known = frozenset(name for info in infos.values() for name in info.objects)
        index: dict[str, list[tuple[tuple[str, ...], frozenset[str]]]] = {}
        single: dict[str, frozenset[str]] = {}
        for words, names in objects.items():
            useful = frozenset(names & known)  # synonyms of objects no tool has are noise
            if useful:
                index.setdefault(words[0], []).append((words, useful))
                if len(words) == 1:
                    single[words[0]] = useful
        for options in index.values():
            options.sort(key=lambda o: -len(o[0]))
        self.object_index = index
        # Objects a tool's description mentions ("book a meeting with a contact"): reading those is
        # part of a task that asks for the tool.
        mentions: dict[str, frozenset[str]] = {}
        for tool in catalog.tools.values():
            found: set[str] = set()
            for word in tokenize(tool.description or ""):
                found |= single.get(stem(word), frozenset())
            # Actions addressed to people (send, schedule): looking the people up is part of the task.
            for cls in infos[tool.name].classes & lexicon.addressed.keys():
                found |= lexicon.addressed[cls]
            mentions[tool.name] = frozenset(found)
        self.mentions = mentions
        self.object_words = frozenset(objects)
        self.labels = labels
        self._object_terms: dict[frozenset[str], tuple[str, ...]] = {}
        # each object term with what it records ("object:invoice"), formatted once
        self.object_index = {
            first: [(words, names, self.object_terms(names)) for words, names in options]
            for first, options in index.items()
        }
        self.single_objects = single
        self.longest_object = max(map(len, single), default=0)
        # A long word names an object when an object word ends it (see _compound): per last four letters,
        # the lengths of the object words ending so, longest first, so a word is a lookup or two.
        suffixes: dict[str, set[int]] = {}
        for word in single:
            if len(word) >= 4:
                suffixes.setdefault(word[-4:], set()).add(len(word))
        self.suffixes = {end: tuple(sorted(lengths, reverse=True)) for end, lengths in suffixes.items()}
        self.phrases = phrases
        by_class: dict[str, list[str]] = {}
        for info in infos.values():
            for cls in info.classes:
                by_class.setdefault(cls, []).append(info.name)
        self.by_class = {cls: tuple(sorted(names)) for cls, names in by_class.items()}
        self.class_tools: dict[frozenset[str], tuple[str, ...]] = {}
        self.unsafe = tuple(sorted(name for name, info in infos.items() if not info.safe))
        self.lexicon_term = f"lexicon:{lexicon.version}"
        #: the intent of a prompt with no action, object or phrase in it (untruncated, truncated): values,
        #: built once
        self.nothing = (_undetermined(False, {self.lexicon_term}), _undetermined(True, {self.lexicon_term}))
        self.safe_tools = tuple((name, info.objects) for name, info in sorted(infos.items()) if info.safe)
        safe_by_object: dict[str, list[str]] = {}
        for name, tool_objects in self.safe_tools:
            for obj in tool_objects:
                safe_by_object.setdefault(obj, []).append(name)
        self.safe_by_object = {obj: tuple(names) for obj, names in safe_by_object.items()}
        #: every object a prompt can name -> the safe tools that have it (none for most)
        self.safe_reading = {
            name: self.safe_by_object.get(name, ())
            for name in (*known, *(n for options in index.values() for _, names in options for n in names))
        }
        #: objects named in the sentences that ask for something -> the safe tools with any of them,
        #: in name order (see :meth:`reading_of`)
        self.reading: dict[frozenset[str], tuple[str, ...]] = {}
        # The safe tools a task asking for a tool may read: those sharing its objects (and, for a tool
        # that writes, the objects its description mentions).
        self.reads_along = {
            name: tuple(
                safe
                for safe, safe_objects in self.safe_tools
                if safe_objects & (info.objects if info.safe else info.objects | mentions[name])
            )
            for name, info in infos.items()
        }
        cues: dict[str, list[tuple[str, ...]]] = {}
        for cue in (*DEFAULT_NEGATIONS, *lexicon.negations, *catalog.negations):
            words = tuple(t for t in tokenize(cue) if t not in BREAK_TOKENS)
            cues.setdefault(words[0], []).append(words)
        for options in cues.values():
            options.sort(key=len, reverse=True)
        self.cues = cues
        #: token -> (stem, what it may start): filled as prompts are read, so each distinct word is
        #: stemmed and classified once per catalog (bounded: past the limit, words are not kept).
        self.words: dict[str, _Word] = {}
        self.compounds: dict[str, frozenset[str]] = {}
        #: whitespace-delimited piece of a prompt ("invoices,", "INV-1001") -> its words' table entries:
        #: a prompt is cut with str.split and read by one lookup per piece instead of a pattern search
        #: over the whole text (bounded like the word table).
        self.chunks: dict[str, tuple[_Word, ...]] = {}
        self.shared = _shared_words(lexicon)
        # A term's options differ from the lexicon's (shared) only where a catalog keyword is also the
        # term's words ("email", "reply"): those first stems are compiled for this catalog.
        own_actions = {
            words[0] for words in self.object_words.difference(lexicon.objects) if words[0] in lexicon.actions
        }
        self.action_options = {
            **self.shared.action_options,
            **_action_options(lexicon, self.object_words, own_actions),
        }
        #: the tokens and stems that mean something in this catalog and not in every one: its object and
        #: phrase words, the action words it compiles itself and its own negation cues (see learn_chunk)
        self.own = frozenset(index).union(phrases, own_actions, frozenset(cues).difference(self.shared.cues))
        #: (id of an action term or None for a question, as an action noun, the objects its sentence
        #: names) -> the tools it asks for with their strengths and reasons, and the term it records
        self.asks: dict[tuple[int, bool, frozenset[str]], _Asks] = {}
        #: (strong classes, weak classes, the objects named) -> the tools asked for (see :meth:`select`)
        self.selected: dict[tuple[frozenset[str], frozenset[str], frozenset[str]], tuple] = {}
        #: (allowed tools, forbidden tools) -> an intent's summary
        #: tools a prompt asked for -> the safe tools read along (see :meth:`along_of`)
        self.along: dict[frozenset[str], tuple[tuple[str, str], ...]] = {}
        self.summaries: dict[tuple[frozenset[str], frozenset[str]], str] = {}
        self.read_reasons = {name: f"{name} allowed (reads what the task is about)" for name in infos}
        self.only_reasons = {
            name: f"{name} forbidden (the prompt restricts itself to what it names)" for name in infos
        }
        #: (id of an action term, negation cue, the objects its scope names) -> the tools it forbids,
        #: with their reasons, and the term it records
        self.forbids: dict[tuple[int, str, frozenset[str]], tuple[tuple[tuple[str, str], ...], str]] = {}

    def asks_of(
        self, key: tuple[int, bool, frozenset[str]], term: ActionTerm | None, noun: bool, objs: frozenset[str]
    ) -> _Asks:
        """What an action asks for (see :attr:`asks`): the tools of its classes, those whose objects
        ``objs`` names or else all of them; weak senses only with an object; investigating reads all."""
        if term is None:
            strong, weak, label = _NO_CLASSES, _QUESTION_CLASSES, "question"
        else:
            strong, weak, label = term.noun if noun else term.strong, term.weak, term.text
        selected = self.selected.get((strong, weak, objs))
        if selected is None:
            selected = self.select(strong, weak, objs)
        tools, asked = selected
        get = _ALLOW_REASONS.get
        allows = []
        for tool, strength, named in tools:  # (a loop: no comprehension frame for one or two tools)
            allows.append((tool, strength, get((tool, label, named)) or _allow_reason(tool, label, named)))
        allows = tuple(allows)
        value = (allows, "question" if term is None else term.label if asked else None)
        if len(self.asks) < _MAX_WORDS:
            self.asks[key] = value
        return value

    def select(
        self, strong: frozenset[str], weak: frozenset[str], objs: frozenset[str]
    ) -> tuple[tuple[tuple[str, float, bool], ...], bool]:
        """The tools an action of these classes asks for given the objects ``objs`` (with its strength and
        whether the tool's object was named), and whether it asks for any: kept per catalog by classes, so
        the many terms of one class share it (see :meth:`asks_of`)."""
        # (_targets and _named written out: this runs once per new (classes, objects) per catalog, on a
        # prompt's first reading, where each Python frame counts)
        tool_objects = self.tool_objects
        tools: list[tuple[str, float, bool]] = []
        asked = False
        if strong:
            of_class = self.class_tools.get(strong)
            if of_class is None:
                of_class = _class_tools(self, strong)
            if of_class:
                asked = True
                if objs:
                    for tool in of_class:
                        if not tool_objects[tool].isdisjoint(objs):
                            tools.append((tool, 0.9, True))
                if not tools:
                    for tool in of_class:
                        tools.append((tool, 0.75, False))
        if weak and objs:
            if not weak.isdisjoint(strong):
                weak = weak - strong
            of_class = self.class_tools.get(weak)
            if of_class is None:
                of_class = _class_tools(self, weak)
            for tool in of_class:
                if not tool_objects[tool].isdisjoint(objs):
                    asked = True
                    tools.append((tool, 0.6, True))
        if DIAGNOSE in strong:  # finding out what is wrong reads whatever can be read
            asked = True
            for name, _objects in self.safe_tools:
                tools.append((name, 0.6, False))
        value = (tuple(tools), asked)
        if len(self.selected) < _MAX_WORDS:
            self.selected[(strong, weak, objs)] = value
        return value

    def forbids_of(
        self,
        key: tuple[int, str, frozenset[str]],
        term: ActionTerm,
        generic: bool,
        cue: str,
        in_scope: frozenset[str],
    ) -> tuple[tuple[tuple[str, str], ...], str]:
        """What a negated action forbids (see :attr:`forbids`)."""
        # A scope that names objects negates the action only for tools with those objects.
        if generic:
            tools = _named(self, self.unsafe, in_scope) if in_scope else self.unsafe
        else:
            # Weak terms ("any", "open", "who") negate nothing: only actions and action nouns do.
            tools = _targets(self, term.strong | term.noun, in_scope, require_object=bool(in_scope))
        get, text = _FORBID_REASONS.get, term.text
        value = (
            tuple([(tool, get((tool, cue, text)) or _forbid_reason(tool, cue, text)) for tool in tools]),
            f"negated:{text}",
        )
        if len(self.forbids) < _MAX_WORDS:
            self.forbids[key] = value
        return value

    def reading_of(self, objs: frozenset[str]) -> tuple[str, ...]:
        """The safe tools that read any of ``objs``, in name order (kept per catalog, see :attr:`reading`)."""
        value = tuple(sorted(set().union(*map(self.safe_reading.__getitem__, objs))))
        if len(self.reading) < _MAX_WORDS:
            self.reading[objs] = value
        return value

    def along_of(self, asked_for: frozenset[str]) -> tuple[tuple[str, str], ...]:
        """The safe tools a task asking for ``asked_for`` reads along, not among them, in name order, with
        their reasons (kept per catalog, see :attr:`along`)."""
        names = set().union(*map(self.reads_along.__getitem__, asked_for)).difference(asked_for)
        value = tuple((name, self.read_reasons[name]) for name in sorted(names))
        if len(self.along) < _MAX_WORDS:
            self.along[asked_for] = value
        return value

    def summary_of(self, allowed: frozenset[str], forbidden: frozenset[str]) -> str:
        """An intent's summary ("allowed: a, b; forbidden: c"), kept per catalog (see :attr:`summaries`)
        and per process (it depends on the tool names only)."""
        summary = _SUMMARIES.get((allowed, forbidden))
        if summary is None:
            parts = []
            if allowed:
                parts.append("allowed: " + ", ".join(sorted(allowed)))
            if forbidden:
                parts.append("forbidden: " + ", ".join(sorted(forbidden)))
            summary = "; ".join(parts)
            if len(_SUMMARIES) < _MAX_WORDS:
                _SUMMARIES[(allowed, forbidden)] = summary
        if len(self.summaries) < _MAX_WORDS:
            self.summaries[(allowed, forbidden)] = summary
        return summary

    def object_terms(self, names: frozenset[str]) -> tuple[str, ...]:
        """The recorded terms of a set of object names ("object:invoice"), formatted once."""
        terms = self._object_terms.get(names)
        if terms is None:
            terms = tuple(f"object:{self.labels.get(name, name)}" for name in names)
            self._object_terms[names] = terms
        return terms

    def learn_chunk(self, chunk: str) -> tuple[_Word, ...]:
        """The table entries of a piece's words (see :func:`_chunks` for what a piece is).

        The process-wide reading of the piece (:class:`_SharedWords`) is taken as it is unless one of its
        words means something in this catalog: an object or phrase word, an action word that is also one
        of its object words, a tenant's negation cue, or a long word a catalog object ends (a German
        compound). Any other word reads the same in every catalog.
        """
        shared = self.shared.chunks.get(chunk) or self.shared.learn_chunk(chunk)
        entry, keys, long_stems = shared
        if not self.own.isdisjoint(keys) or (long_stems and any(map(self.compound_of, long_stems))):
            get, learn = self.words.get, self.learn
            entry = tuple([get(word[0]) or learn(word) for word in entry])
        if len(self.chunks) < _MAX_WORDS and len(chunk) <= _MAX_KEPT_WORD:
            self.chunks[chunk] = entry
        return entry

    def compound_of(self, st: str) -> frozenset[str] | None:
        """The objects a long word names as the end of a compound ("Lieferantenrechnungen"), or None."""
        names = self.compounds.get(st)
        if names is None:
            names = _compound(self, st)
            if names:
                if len(self.compounds) < _MAX_WORDS and len(st) <= _MAX_KEPT_WORD:
                    self.compounds[st] = names
                else:  # a compound the table does not keep (a word over 64 letters) names nothing
                    return None
        return names

    def learn(self, shared: _Word) -> _Word:
        """A word's entry in this catalog, from its process-wide entry (whose flags this catalog's actions,
        objects and negation cues complete)."""
        token, st, sentence, context, _, _, flags = shared
        flags |= sentence
        action: object = self.action_options.get(st, 0)
        if action:
            flags |= _ACTION
        objects: object = 0
        # the objects the word may start (words, names, recorded terms), longest first
        if st in self.object_index:
            flags |= _OBJECT
            objects = self.object_index[st]
        elif st in self.phrases:
            flags |= _OBJECT
            objects = _PHRASE_ONLY  # the first word of a phrase only
        elif len(st) >= 9 and st.isalpha():
            # German compounds ("Lieferantenrechnungen"): split once per word, here, not per prompt.
            names = self.compound_of(st)
            if names:
                flags |= _OBJECT
                objects = [((st,), names, self.object_terms(names))]
        if token in self.cues:
            flags |= _CUE
        # (token, stem, 1 where a new sentence starts, context bits, and what a prompt's positions are
        # selected by, each its own field so that itertools.compress selects them: an action word's
        # terms, an object word's objects, and the flags of a word of the rarer kinds)
        word = (token, st, sentence, context, action, objects, flags if flags & _RARE else 0)
        if len(self.words) < _MAX_WORDS and len(token) <= _MAX_KEPT_WORD:
            self.words[token] = word
        return word


#: The reasons an intent gives, which depend on names only (a tool's, a term's, a cue's), formatted once per
#: process: (tool, term, its object named) -> "tool allowed ('term' with its object)", (tool, cue, term) ->
#: "tool forbidden ('cue' before 'term')", (allowed, forbidden) -> the summary. Bounded like the word tables.
_ALLOW_REASONS: dict[tuple[str, str, bool], str] = {}
_FORBID_REASONS: dict[tuple[str, str, str], str] = {}
_SUMMARIES: dict[tuple[frozenset[str], frozenset[str]], str] = {}


def _allow_reason(tool: str, label: str, named: bool) -> str:
    reason = f"{tool} allowed ({label!r} with its object)" if named else f"{tool} allowed ({label!r})"
    if len(_ALLOW_REASONS) < _MAX_WORDS:
        _ALLOW_REASONS[(tool, label, named)] = reason
    return reason


def _forbid_reason(tool: str, cue: str, text: str) -> str:
    reason = f"{tool} forbidden ({cue!r} before {text!r})"
    if len(_FORBID_REASONS) < _MAX_WORDS:
        _FORBID_REASONS[(tool, cue, text)] = reason
    return reason


class _SharedWords:
    """A lexicon's reading of words and pieces that no catalog changes, kept once per process.

    A piece ("invoices,") -> (its words' entries as a catalog with no use for them reads them, every
    token and stem in it, the stems long enough to be compounds); a token -> its entry: stem, sentence
    start, context bits, the action terms it may start and the lexicon's flags (cues, injection markers,
    read-only phrases, "nothing" after a verb, a question mark). Each catalog adds what only it knows in
    :meth:`_CompiledCatalog.learn_chunk`, so a catalog's first reading of a word is a few lookups.
    Bounded like the catalogs' tables: a hostile stream of new words adds nothing beyond _MAX_WORDS
    entries of at most _MAX_KEPT_WORD characters to either table.
    """

    __slots__ = ("action_options", "chunks", "cues", "lexicon", "words")

    def __init__(self, lexicon: Lexicon):
        self.lexicon = lexicon
        #: an action word's terms as a catalog without their words among its object words tries them
        self.action_options = _action_options(lexicon, frozenset(lexicon.objects))
        self.cues = frozenset(
            words[0]
            for cue in (*DEFAULT_NEGATIONS, *lexicon.negations)
            if (words := [t for t in tokenize(cue) if t not in BREAK_TOKENS])
        )
        self.words: dict[str, _Word] = {}
        self.chunks: dict[str, _SharedPiece] = {}

    def learn_chunk(self, chunk: str) -> _SharedPiece:
        tokens = _find_tokens(normalize(chunk))
        if len(tokens) == 1:  # most pieces are one word (written out: this runs for every new piece)
            token = tokens[0]
            word = self.words.get(token) or self.learn(token)
            st = word[1]
            entry: tuple[_Word, ...] = (word,)
            keys = frozenset((token, st))
            long_stems: tuple[str, ...] = (st,) if len(st) >= 9 and st.isalpha() else ()
        else:
            get, learn = self.words.get, self.learn
            entry = tuple([get(tok) or learn(tok) for tok in tokens])
            keys = frozenset(chain.from_iterable(word[:2] for word in entry))
            long_stems = tuple(word[1] for word in entry if len(word[1]) >= 9 and word[1].isalpha())
        shared = (entry, keys, long_stems)
        if len(self.chunks) < _MAX_WORDS and len(chunk) <= _MAX_KEPT_WORD:
            self.chunks[chunk] = shared
        return shared

    def learn(self, token: str) -> _Word:
        st = _stem(token)
        lex = self.lexicon
        flags = 0
        if token in self.cues:
            flags |= _CUE
        if st in lex.injection_first:
            flags |= _MARKER
        if st in lex.read_only_first:
            flags |= _READ_ONLY
        if token in lex.post_negations:
            flags |= _POST_NEGATION
        if token == "?":
            flags |= _QUESTION
        sentence = _SENTENCE if token in SENTENCE_TOKENS or token in _SENTENCE_WORDS else 0
        action = self.action_options.get(st, 0)
        full = flags | sentence | (_ACTION if action else 0)
        word = (token, st, sentence, _context(token), action, 0, full if flags else 0)
        if len(self.words) < _MAX_WORDS and len(token) <= _MAX_KEPT_WORD:
            self.words[token] = word
        return word


#: (entries, tokens and stems, long stems) of a piece, see :class:`_SharedWords`
_SharedPiece = tuple[tuple[_Word, ...], frozenset[str], tuple[str, ...]]
#: each lexicon's shared reading (one lexicon per process in practice; a dropped lexicon takes its own)
_SHARED: weakref.WeakKeyDictionary[Lexicon, _SharedWords] = weakref.WeakKeyDictionary()


def _shared_words(lexicon: Lexicon) -> _SharedWords:
    shared = _SHARED.get(lexicon)
    if shared is None:
        shared = _SHARED[lexicon] = _SharedWords(lexicon)
    return shared


_ActionOption = tuple[ActionTerm, bool, bool, bool, bool, int, str | None]
#: The objects entry of a word that only starts a tool phrase (a truthy value, told apart by identity).
_PHRASE_ONLY: list = [None]
_Asks = tuple[tuple[tuple[str, float, str], ...], str | None]
_NO_OBJECTS: frozenset[str] = frozenset()
_NO_TOOLS: frozenset[str] = frozenset()
_NO_CLASSES: frozenset[str] = frozenset()
_QUESTION_CLASSES = frozenset({"read", "list"})


def _action_options(
    lexicon: Lexicon, object_words: frozenset[tuple[str, ...]], firsts: Iterable[str] | None = None
) -> dict[str, tuple[dict[str, tuple[_ActionOption, ...]], tuple[_ActionOption, ...]]]:
    """Per first stem: the action terms to try, longest first, as (term, is also an object's words, may
    follow a light verb, one word, a generic change, the gap and the first word after it for a term with
    a gap) and narrowed by the next stem.

    A term of several words without a gap right after its first word ("go through"; "shut … down" has
    one) can only match where the next stem is its second: per next stem the terms that may match
    there, in the lexicon's order; and the terms that may match whatever follows. (``firsts``: only
    those first stems.)
    """
    compiled = {}
    for first in lexicon.actions if firsts is None else firsts:
        terms = lexicon.actions[first]
        options = [
            (
                term,
                term.words in object_words,
                bool(term.noun or term.strong),
                len(term.words) == 1,
                len(term.words) == 1 and term.words[0] in lexicon.generic_change,
                term.gap,
                term.words[term.gap] if term.gap else None,
            )
            for term in terms
        ]

        def anywhere(option: _ActionOption) -> bool:
            return option[3] or option[0].gap == 1

        by_next = {
            second: tuple(o for o in options if anywhere(o) or o[0].words[1] == second)
            for second in {o[0].words[1] for o in options if not anywhere(o)}
        }
        compiled[first] = (by_next, tuple(o for o in options if anywhere(o)))
    return compiled


def _context(token: str) -> int:
    if token in BREAK_TOKENS:
        return 0
    bits = _T_WORD
    if (token.endswith(("ed", "en")) and not token.endswith("een")) or token in _PARTICIPLES:
        bits |= _T_PARTICIPLE  # not "green", "screen"
    if token.endswith("ed"):
        bits |= _T_ED
    if token.endswith("ing"):
        bits |= _T_ING
    blocks = 0
    if token in _STATE_WORDS:
        blocks |= _T_PARTICIPLE  # "the approved invoices", "is already paid": a state
    if token not in _REQUEST_LEADS:
        blocks |= _T_ED  # "Tom moved to a competitor", "Meyer changed banks": a report
    if token in _BE:
        blocks |= _T_ING  # "which deals are closing": what is happening
    if token in _SELF:
        blocks |= _T_WORD  # "I'll send it myself": the user's own step, not the agent's
        bits |= _P_SELF
    if token == "will":
        bits |= _P_WILL
    if token in _VERB_LEADS:
        bits |= _P_VERB_LEAD
    return bits | blocks << _BLOCKS


def _senses(lexicon: Lexicon, verb: str) -> tuple[frozenset[str], frozenset[str]]:
    """(strong, weak) classes of a catalog verb; a verb the lexicon does not know is its own class."""
    words = _stems(verb)
    for term in lexicon.actions.get(words[0], ()) if words else ():
        if term.words == words and not term.gap:
            return term.strong or term.noun, term.weak
    return frozenset({"=" + " ".join(words)}), frozenset()


def _stems(text: str) -> tuple[str, ...]:
    return tuple(stem(t) for t in tokenize(text) if t not in BREAK_TOKENS)


class CatalogExtractor:
    """Deterministic, offline intent extraction from per-tenant :class:`ToolCatalog` s.

    ``extract`` never fails: an unknown tenant or an empty prompt gives an empty intent with confidence
    0. ``agent`` is accepted for the :class:`~authz.intent.IntentExtractor` protocol and not used.
    Results are cached per (tenant, SHA-256 of the prompt) in a bounded LRU (``cache_size`` 0
    disables it); :meth:`set_catalog` swaps a tenant's catalog and drops the cache.
    """

    def __init__(
        self, catalogs: Mapping[str, ToolCatalog], *, cache_size: int = 1024, lexicon: Lexicon | None = None
    ):
        if isinstance(cache_size, bool) or not isinstance(cache_size, int) or cache_size < 0:
            raise InvalidArgument(f"cache_size must be a non-negative integer, got {cache_size!r}")
        self._lexicon = lexicon or load_lexicon()
        compiled = {}
        for tenant, catalog in catalogs.items():
            if not isinstance(catalog, ToolCatalog):
                raise InvalidArgument(f"catalog for tenant {tenant!r} must be a ToolCatalog")
            compiled[tenant] = _CompiledCatalog(catalog, self._lexicon)
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
            updated[tenant] = _CompiledCatalog(catalog, self._lexicon)
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
        if not self._cache_size:
            return _match(catalog, prompt)
        key = (tenant, hashlib.sha256(prompt.encode("utf-8", "surrogatepass")).digest())
        cached = self._cache.get(key)
        if cached is not None:
            self._cache.move_to_end(key)
            return cached
        intent = _match(catalog, prompt)
        self._cache[key] = intent
        if len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return intent


@functools.lru_cache(maxsize=65536)
def _stem(token: str) -> str:
    return token if token in BREAK_TOKENS else stem(token)


def _match(catalog: _CompiledCatalog, prompt: str) -> Intent:
    lex = catalog.lexicon
    truncated = len(prompt) > MAX_PROMPT_CHARS
    text = prompt[:MAX_PROMPT_CHARS] if truncated else prompt
    quoted = 0
    if '"' in text or "“" in text or "„" in text or ("'" in text and _may_open_single_quote(text)):
        text, quoted = _strip_quoted(text)
    # Each word's table entry (token, stem, sentence start, context, selectors) by one lookup per
    # whitespace-delimited piece; only pieces not seen before are tokenized.
    chunks = _chunks(text) if "\n" in text else text.split()  # (the common case inline)
    entries = list(map(catalog.chunks.get, chunks))
    # (all(): a truth test per entry in C; a piece without words, "-", has an empty entry and is only
    # looked at again; comparing each entry with None costs more)
    if not all(entries):  # pieces not seen before (None): learned in place
        _learn_pieces(catalog, chunks, entries)
    known = list(chain.from_iterable(entries))
    if not known:
        return Intent.empty("catalog", "the prompt contains no words", "empty prompt")
    n = len(known)
    # (equal lengths by construction; zip without the keyword argument is the faster call)
    tokens, stemmed, starts, context, acting, naming, rare = zip(*known)  # noqa: B905
    # the sentence a token is in: sentence tokens start the next one ("?" belongs to it)
    sentence_of = list(accumulate(starts))
    sentence = sentence_of[-1]

    # The positions where an action, object, cue … may start, selected in C by their own flag columns;
    # the rarer kinds (cues, markers, read-only phrases, questions) in one pass over the few that have any.
    every = range(n)
    cue_at: list[int] = []
    marker_at: list[int] = []
    read_only_at: list[int] = []
    questions: set[int] = set()
    post_at: set[int] = set()
    seen = 0  # the rarer kinds of word the prompt has
    for i in compress(every, rare):
        f = rare[i]
        seen |= f
        if f & _CUE:
            cue_at.append(i)
        if f & _POST_NEGATION:
            post_at.add(i)
        if f & _MARKER:
            marker_at.append(i)
        if f & _READ_ONLY:
            read_only_at.append(i)
        if f & _QUESTION and i:
            questions.add(sentence_of[i] - 1)
    injection = _injection_at(lex, stemmed, marker_at) if marker_at else n

    # Action terms, longest first; a position used by one term is not reused by another.
    actions: list[_Action] = []  # each [term, start, sentence, scope, untrusted, generic]
    taken: set[int] = set()
    for i in compress(every, acting):
        if i in taken:
            continue
        before = context[i - 1] if i else 0  # 0: the prompt or a clause starts here
        # a state, a report or the user's own step (see _context), "I will send it myself"
        if before and (
            before >> _BLOCKS & _T_BITS & context[i]
            or (before & _P_WILL and i > 1 and context[i - 2] & _P_SELF)
        ):
            continue
        by_next, options = acting[i]
        if by_next and i + 1 < n:
            options = by_next.get(stemmed[i + 1], options)
        for term, object_word, light, single, generic, gap, after_gap in options:
            if after_gap is not None and after_gap not in stemmed[i + gap : i + gap + GAP_WINDOW]:
                continue  # "shut … down" without a "down" in reach (as _term_positions would find)
            # (after a verb lead, or at a clause's start, such a word is the action)
            if (
                object_word
                and before
                and not before & _P_VERB_LEAD
                and not (light and _after_light_verb(lex, stemmed, i))
            ):
                continue  # "draft replies", "new emails": the word is the object here
            if not single:
                if gap:
                    positions = _term_positions(term, stemmed, sentence_of, i, taken)
                    if positions is None:
                        continue
                    taken.update(positions)
                else:  # several words in a row ("go through"): compared here, as _term_positions would
                    end = i + len(term.words)
                    if stemmed[i:end] != term.words or (taken and not taken.isdisjoint(range(i, end))):
                        continue
                    taken.update(range(i, end))
            # (a one-word term's position needs no marking: later terms start after it)
            actions.append([term, i, sentence_of[i], -1, i >= injection, generic])
            break

    # Objects the prompt names (catalog keywords and their lexicon synonyms), and tool phrases.
    objects_at: list[tuple[int, frozenset[str], tuple[str, ...]]] = []
    phrase_hits: list[tuple[int, str, str]] = []
    phrase_index = catalog.phrases
    for i in compress(every, naming):
        options = naming[i]  # (a German compound, "Lieferantenrechnungen", was split when first seen)
        if options is not _PHRASE_ONLY:
            for words, names, recorded in options:
                if len(words) == 1 or stemmed[i : i + len(words)] == words:
                    objects_at.append((i, names, recorded))
                    break
        if phrase_index:
            for words, tool, phrase in phrase_index.get(stemmed[i], ()):
                if stemmed[i : i + len(words)] == words:
                    phrase_hits.append((i, tool, phrase))
    if not actions and not objects_at and not phrase_hits:
        return catalog.nothing[truncated]

    # Negation scopes: forward from a cue, and "nothing/nicht" right after a verb.
    scope_of: list[int] | None = None
    cue_of: list[str] = []
    if cue_at:
        scope_of = [-1] * n
        _negation_scopes(catalog, tokens, context, actions, cue_at, scope_of, cue_of)
        for action in actions:
            action[_SCOPE] = scope_of[action[_START]]
    if post_at:  # a "nothing/nicht" right after a verb (or one word on, within the clause) negates it
        for action in actions:
            if action[_SCOPE] == -1:
                k = action[_START] + len(action[_TERM].words)
                if k not in post_at:
                    k += 1
                    if k not in post_at or tokens[k - 1] in BREAK_TOKENS:
                        continue
                action[_SCOPE] = len(cue_of)
                cue_of.append(tokens[k])
    sentence_objects: dict[int, frozenset[str]] = {}
    scope_objects: dict[int, frozenset[str]] = {}
    # (most sentences name one object: its names are taken as they are, a union only for a second one)
    for pos, names, _ in objects_at:
        if scope_of is not None and (scope := scope_of[pos]) != -1:
            previous = scope_objects.get(scope)
            scope_objects[scope] = names if previous is None else previous | names
        else:
            s = sentence_of[pos]
            previous = sentence_objects.get(s)
            sentence_objects[s] = names if previous is None else previous | names
    for s in questions:
        if s < sentence_of[injection] if injection < n else True:
            actions.append([None, -1, s, -1, False, False])

    terms = {catalog.lexicon_term}
    allowed_d: dict[str, float] = {}
    forbidden_d: dict[str, str] = {}
    reasons: list[str] = []
    active: set[int] = set()
    only = False
    for pos, tool, phrase in phrase_hits:
        if pos >= injection:
            continue
        if scope_of is not None and scope_of[pos] != -1:
            _forbid(forbidden_d, reasons, tool, f"{cue_of[scope_of[pos]]!r} before {phrase!r}")
        else:
            _allow(allowed_d, reasons, tool, 1.0, f"phrase {phrase!r}")
        terms.add(f"phrase:{phrase}")
    # A sentence that names no object speaks of the last one named before it ("... invoice VI-5000 ... .
    # What's the total on it?"): looked up for the sentences that ask for something, and kept.
    first_named = min(sentence_objects) if sentence_objects else sentence + 1
    asks, asks_of, forbids = catalog.asks, catalog.asks_of, catalog.forbids
    for term, start, in_sentence, scope, untrusted, generic in actions:
        objs = sentence_objects.get(in_sentence)
        if objs is None:
            objs = _NO_OBJECTS
            if in_sentence > first_named:
                objs = _named_before(sentence_objects, in_sentence)
        if untrusted:
            if scope == -1 and term is not None:
                terms.add("injection")
                classes = term.strong | term.weak
                for tool in _targets(catalog, classes, objs, require_object=not term.strong):
                    if not catalog.tools[tool].safe:
                        _forbid(forbidden_d, reasons, tool, f"asked after an injection marker: {term.text!r}")
            continue
        if scope != -1:
            assert term is not None
            cue = cue_of[scope]
            in_scope = scope_objects.get(scope, _NO_OBJECTS)
            key = (id(term), cue, in_scope)
            negated = forbids.get(key)
            if negated is None:
                negated = catalog.forbids_of(key, term, generic, cue, in_scope)
            for tool, reason in negated[0]:
                if tool not in forbidden_d:
                    forbidden_d[tool] = reason
                    reasons.append(reason)
            terms.add(negated[1])
            continue
        noun = False
        if term is not None:
            if not (term.strong or term.weak):
                # An action noun asks for nothing unless negated, or after a light verb ("make a
                # payment", "issue a refund"): then it is the action.
                if not _after_light_verb(lex, stemmed, start):
                    continue
                noun = True
            if stemmed[start - 1] in lex.only if start else False:
                only = True
        # What the action asks for, given the objects its sentence names: computed once per
        # (term, objects) per catalog, with its reasons already written.
        key = (id(term), noun, objs)
        asked = asks.get(key)
        if asked is None:
            asked = asks_of(key, term, noun, objs)
        for tool, strength, reason in asked[0]:
            previous = allowed_d.get(tool)
            if previous is None:
                reasons.append(reason)
                allowed_d[tool] = strength
            elif strength > previous:
                allowed_d[tool] = strength
        active.add(in_sentence)
        if asked[1]:
            terms.add(asked[1])
    # Reading what the task is about: safe tools with an object an active sentence names, and safe tools
    # sharing an object with a tool the prompt asked for (both looked up in tables built per catalog).
    # (Allowing at 0.6, the weakest strength, changes nothing for a tool already allowed.)
    read_reasons = catalog.read_reasons
    if sentence_objects and active:
        named = list(filter(None, map(sentence_objects.get, active)))  # (kept object sets are never empty)
        if named:
            objs = named[0] if len(named) == 1 else frozenset().union(*named)
            reading = catalog.reading.get(objs)
            if reading is None:
                reading = catalog.reading_of(objs)
            for name in reading:
                if name not in allowed_d:
                    reasons.append(read_reasons[name])
                    allowed_d[name] = 0.6
    if allowed_d:
        asked_for = frozenset(allowed_d)
        along = catalog.along.get(asked_for)
        if along is None:
            along = catalog.along_of(asked_for)
        for name, reason in along:
            reasons.append(reason)
            allowed_d[name] = 0.6
    if not only and seen & _READ_ONLY:
        only = _read_only(lex, stemmed, read_only_at, injection)
    if only:
        terms.add("only")
        only_reasons = catalog.only_reasons
        for tool in catalog.unsafe:
            if tool not in allowed_d and tool not in forbidden_d:
                reason = only_reasons[tool]
                forbidden_d[tool] = reason
                reasons.append(reason)
    if injection == n:
        terms.update(*map(_RECORDED, objects_at))
    else:
        for pos, _, recorded in objects_at:
            if pos < injection:
                terms.update(recorded)

    if forbidden_d:
        forbidden = frozenset(forbidden_d)
        allowed = frozenset(allowed_d).difference(forbidden)
    else:
        forbidden, allowed = _NO_TOOLS, frozenset(allowed_d)
    if not allowed and not forbidden:
        return _undetermined(truncated, terms)
    if not allowed:
        confidence = 0.9
    elif forbidden:
        confidence = min(map(allowed_d.__getitem__, allowed))
    else:  # nothing forbidden: every tool allowed counts
        confidence = min(allowed_d.values())
    if "injection" in terms:
        confidence -= 0.2
    if quoted or injection < n or truncated:
        parts = list(reasons)
        if quoted:
            parts.append(f"{quoted} quoted passage(s) read as content, not as requests")
        if injection < n:
            parts.append("injection marker found: nothing after it counts as a request")
        if truncated:
            confidence /= 2
            parts.append(f"prompt truncated to {MAX_PROMPT_CHARS} characters")
        rationale = "; ".join(parts)
    else:
        rationale = "; ".join(reasons)
    if len(rationale) > _MAX_RATIONALE:
        rationale = rationale[: _MAX_RATIONALE - 1] + "…"
    summary = catalog.summaries.get((allowed, forbidden))
    if summary is None:
        summary = catalog.summary_of(allowed, forbidden)
    rounded = _ROUNDED.get(confidence)
    if rounded is None:
        rounded = round(max(0.05, confidence), 2)
        if len(_ROUNDED) < 256:
            _ROUNDED[confidence] = rounded
    return Intent.trusted(
        allowed, forbidden, rounded, rationale, "catalog", summary, True, tuple(sorted(terms))[:_MAX_TERMS]
    )


def _learn_pieces(catalog: _CompiledCatalog, chunks: list[str], entries: list) -> None:
    """Fills in the entries of the pieces this catalog has not read before (None in ``entries``). A piece
    the process has read whose words mean nothing in this catalog (most) is taken as it is, here, in one
    frame; :meth:`_CompiledCatalog.learn_chunk` reads the others."""
    shared_get, own, table = catalog.shared.chunks.get, catalog.own, catalog.chunks
    for k, entry in enumerate(entries):
        if entry is None:
            chunk = chunks[k]
            shared = shared_get(chunk)
            # (a piece with a long word goes to learn_chunk, which tries it as a compound)
            if shared is not None and not shared[2] and own.isdisjoint(shared[1]):
                entry = shared[0]
                if len(table) < _MAX_WORDS and len(chunk) <= _MAX_KEPT_WORD:
                    table[chunk] = entry
            else:
                entry = catalog.learn_chunk(chunk)
            entries[k] = entry


def _chunks(text: str) -> list[str]:
    """``text`` cut at whitespace into the pieces the chunk table is keyed by, line breaks kept as pieces.

    The pieces' tokens (each piece normalized on its own, in the table) are the tokens
    :func:`authz.intent._text.tokenize` finds in the whole text: no token contains whitespace except the
    line break, a token of its own; and normalizing (NFKC, case folding) never joins or changes characters
    across whitespace, which has no compositions and breaks any run of combining marks. Both are checked
    for every code point in the tests. So a prompt is not normalized as a whole: each distinct piece once.
    """
    if "\n" not in text:
        return text.split()
    pieces: list[str] = []
    for line in text.split("\n"):
        pieces += line.split()
        pieces.append("\n")
    pieces.pop()
    return pieces


def _may_open_single_quote(text: str) -> bool:
    """Whether a single quote in ``text`` may open a passage (one with no letter before it): most
    prompts' single quotes are apostrophes ("don't"), and :func:`_strip_quoted` has nothing to do."""
    i = text.find("'")
    while i != -1:
        if not i or not _is_word(text[i - 1]):
            return True
        i = text.find("'", i + 1)
    return False


def _is_word(char: str) -> bool:
    return char.isalnum() or char == "_"


def _strip_quoted(text: str) -> tuple[str, int]:
    """``text`` with each quoted passage replaced by a sentence break, and how many there were.

    One left-to-right pass over the quote characters (found with str.find, which outruns a pattern
    search over the whole text): each opening quote looks up the next closing quote and line break, and
    those positions are remembered until the scan passes them, so the work is linear in the prompt (a
    pattern that searched on from every opening quote took seconds on 20,000 unclosed quotes). A single
    quote opens only where it is not an apostrophe (no letter before it) and closes only before a
    non-letter, with at least one character between.
    """
    find = text.find
    opens: list[int] = []
    for quote in _OPENERS:
        k = find(quote)
        while k != -1:
            opens.append(k)
            k = find(quote, k + 1)
    opens.sort()
    # next index at or after the scan of each closing quote and of the line break (-1: none left)
    nearest: dict[str, int] = {} if "\n" in text else {"\n": -1}
    parts: list[str] = []
    last = 0
    n = len(text)
    for i in opens:
        if i < last:
            continue  # inside a passage already taken out
        opener = text[i]
        if opener == "'" and i and ((before := text[i - 1]).isalnum() or before == "_"):
            continue  # an apostrophe
        closer = _CLOSER[opener]
        close = nearest.get(closer, -2)
        if close == -2 or -1 != close <= i:
            close = nearest[closer] = find(closer, i + 1)
        if opener == "„":  # „ closes with “ or ”
            other = nearest.get("“", -2)
            if other == -2 or -1 != other <= i:
                other = nearest["“"] = find("“", i + 1)
            if other != -1 and (close == -1 or other < close):
                close = other
        if close == -1:
            continue
        inner = close - i - 1
        if inner > _MAX_QUOTED:
            continue
        if opener == "'" and (
            inner < 1 or (close + 1 < n and ((after := text[close + 1]).isalnum() or after == "_"))
        ):
            continue
        line_break = nearest.get("\n", -2)
        if line_break == -2 or -1 != line_break <= i:
            line_break = nearest["\n"] = find("\n", i + 1)
        if line_break != -1 and line_break < close:
            continue
        parts.append(text[last:i])
        parts.append(" ; ")
        last = close + 1
    if not parts:
        return text, 0
    parts.append(text[last:])
    return "".join(parts), len(parts) // 2


_ARTICLES = frozenset(["a", "an", "the", "one", "this", "that", "ein", "eine", "einen", "die", "der", "das"])


#: Words between a light verb and its noun that do not change it ("mach bitte ein Backup", "make us a copy").
_FILLERS = frozenset(stem(w) for w in ["please", "bitte", "mal", "uns", "us", "me", "mir", "quick", "kurz"])


def _after_light_verb(lex: Lexicon, stemmed: tuple[str, ...], start: int) -> bool:
    k = start - 1
    if k >= 0 and stemmed[k] in _ARTICLES:
        k -= 1
    while k >= 0 and stemmed[k] in _FILLERS and k > start - 4:
        k -= 1
    return k >= 0 and stemmed[k] in lex.light_verbs


def _negation_scopes(
    catalog: _CompiledCatalog,
    tokens: tuple[str, ...],
    context: tuple[int, ...],
    actions: list[_Action],
    cue_at: list[int],
    scope_of: list[int],
    cue_of: list[str],
) -> None:
    """Marks the words each negation cue covers in ``scope_of`` (its index in ``cue_of``)."""
    n = len(tokens)
    starts: set[int] | None = None
    ends: set[int] = set()
    after = 0  # a cue's words are not cues again ("not … no")
    cues = catalog.cues
    for i in cue_at:
        if i < after:
            continue
        cue_len = 0
        for cue in cues.get(tokens[i], ()):  # longest first
            cue_len = len(cue)
            if cue_len == 1 or tokens[i : i + cue_len] == cue:
                break
            cue_len = 0
        if not cue_len:
            continue
        after = i + cue_len
        scope = len(cue_of)
        cue_of.append(tokens[i] if cue_len == 1 else " ".join(tokens[i : i + cue_len]))
        k = i + cue_len
        # The common scope: the next words up to the sentence's end or NEGATION_WINDOW words, with no
        # comma, colon or clause word among them (punctuation is where the context bits are 0).
        end = min(n, k + NEGATION_WINDOW)
        window = context[k:end]
        cut = window.index(0) if 0 in window else end - k
        if (k + cut == end or tokens[k + cut] in SENTENCE_TOKENS) and _SCOPE_STOP_WORDS.isdisjoint(
            tokens[k : k + cut]
        ):
            if scope_of[k : k + cut].count(-1) == cut:
                scope_of[k : k + cut] = [scope] * cut
            else:
                for j in range(k, k + cut):
                    if scope_of[j] == -1:
                        scope_of[j] = scope
            continue
        if starts is None:
            # Weak terms ("any", "open") do not count as the action a negation scope has reached.
            starts = set()
            for term, start, *_ in actions:
                if term is not None:
                    if term.strong or term.noun:
                        starts.add(start)
                    ends.add(start + len(term.words))
        # A cue right after a verb ("lösche keine Snapshots") has that verb: its scope ends at a comma.
        words, covered_action = 0, i in ends
        if k < n and (tokens[k] in _PARTICIPLES or tokens[k].endswith("ed")):
            covered_action = True  # "never received, push it back": a state; the comma ends the scope
        while k < n and words < NEGATION_WINDOW:
            tok = tokens[k]
            if tok in _SCOPE_ENDS:
                break
            if tok in BREAK_TOKENS:  # "," or ":" ends the scope only once it has covered an action
                if covered_action:
                    break
            else:
                if scope_of[k] == -1:
                    scope_of[k] = scope
                covered_action = covered_action or k in starts
                words += 1
            k += 1


def _named_before(sentence_objects: dict[int, frozenset[str]], s: int) -> frozenset[str]:
    """The objects of the last sentence before ``s`` that names any (there is one), kept for ``s`` and for
    the sentences walked past: each sentence is walked past once at most, so the work stays linear."""
    missing = [s]
    k = s - 1
    objs = sentence_objects.get(k)
    while objs is None:
        missing.append(k)
        k -= 1
        objs = sentence_objects.get(k)
    for k in missing:
        sentence_objects[k] = objs
    return objs


def _undetermined(truncated: bool, terms: set[str] | frozenset[str] = frozenset()) -> Intent:
    why = "nothing in the prompt was recognized as a request for a catalog tool"
    if truncated:
        why += f" (prompt truncated to {MAX_PROMPT_CHARS} characters)"
    return Intent.trusted(
        frozenset(),
        frozenset(),
        0.0,
        why,
        "catalog",
        "undetermined",
        determined=False,
        terms=tuple(sorted(terms))[:_MAX_TERMS],
    )


def _targets(
    catalog: _CompiledCatalog, classes: frozenset[str], objs: set[str], *, require_object: bool
) -> tuple[str, ...]:
    """Tools of ``classes``: those whose objects are in ``objs``, else (unless required) all of them."""
    if not classes:
        return ()
    tools = catalog.class_tools.get(classes)
    if tools is None:
        tools = _class_tools(catalog, classes)
    named = _named(catalog, tools, objs)
    if named or require_object:
        return named
    return tools


def _class_tools(catalog: _CompiledCatalog, classes: frozenset[str]) -> tuple[str, ...]:
    """The tools of ``classes`` in name order (a handful of class sets per catalog: computed once)."""
    tools = tuple(sorted({t for cls in classes for t in catalog.by_class.get(cls, ())}))
    catalog.class_tools[classes] = tools
    return tools


def _named(catalog: _CompiledCatalog, tools: Iterable[str], objs: set[str]) -> tuple[str, ...]:
    if not objs:
        return ()
    tool_objects = catalog.tool_objects
    return tuple(t for t in tools if not tool_objects[t].isdisjoint(objs))


def _term_positions(
    term: ActionTerm, stemmed: tuple[str, ...], sentence_of: list[int], i: int, taken: set[int]
) -> list[int] | None:
    """The positions of a term with a gap ("shut … down") starting at ``i``: its head there, and its
    tail at the first place within reach in the same sentence that no other term has taken."""
    words, gap = term.words, term.gap
    if stemmed[i : i + gap] != words[:gap]:
        return None
    first, tail_len = words[gap], len(words) - gap
    sentence = sentence_of[i]
    k = i + gap
    stop = min(len(stemmed), k + GAP_WINDOW)
    index = stemmed.index
    # (jumping to the tail's next first word: sentences only move on, so a sentence change before that
    # place shows at it; membership first, because a raised ValueError costs more than the search)
    while first in stemmed[k:stop]:
        k = index(first, k, stop)
        if sentence_of[k] != sentence:
            return None
        if (tail_len == 1 or stemmed[k : k + tail_len] == words[gap:]) and k not in taken:
            return [*range(i, i + gap), *range(k, k + tail_len)]
        k += 1
    return None


def _injection_at(lex: Lexicon, stemmed: tuple[str, ...], candidates: list[int]) -> int:
    """Index of the first injection marker (``len(stemmed)`` when there is none)."""
    n = len(stemmed)
    for i in candidates:
        for words, gap in lex.injection_by_first.get(stemmed[i], ()):
            if not gap:
                if stemmed[i : i + len(words)] == words:
                    return i
                continue
            head, tail = words[:gap], words[gap:]
            if stemmed[i : i + gap] != head:
                continue
            for k in range(i + gap, min(n, i + gap + 5)):
                if stemmed[k : k + len(tail)] == tail:
                    return i
    return n


def _read_only(lex: Lexicon, stemmed: tuple[str, ...], candidates: list[int], limit: int) -> bool:
    by_first = lex.read_only_by_first
    for i in candidates:
        if i >= limit:
            break
        for words in by_first.get(stemmed[i], ()):
            if stemmed[i : i + len(words)] == words:
                return True
    return False


def _compound(catalog: _CompiledCatalog, token: str) -> frozenset[str] | None:
    # The longest suffix that names an object wins, of at least 4 letters and leaving at least 3 before it.
    # Only the lengths of object words with the same last four letters are tried, so a 20,000-letter
    # word costs as much as a short one (trying every suffix was quadratic: 60 ms).
    limit = len(token) - 3
    single = catalog.single_objects
    for length in catalog.suffixes.get(token[-4:], ()):
        if length <= limit:
            names = single.get(token[-length:])
            if names:
                return names
    return None

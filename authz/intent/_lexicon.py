"""The shipped intent lexicon (``authz/intent/lexicon.yaml``), compiled once for matching.

Terms are normalized and stemmed exactly like prompts (:mod:`authz.intent._text`), so matching compares
stems. A term written ``"gib … frei"`` has a gap: its first part and its last part match apart within one
sentence (German separable verbs).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from importlib import resources
from typing import Any

import yaml

from authz.errors import ConfigError
from authz.intent._text import BREAK_TOKENS, stem, tokenize

__all__ = ["ActionTerm", "Lexicon", "load_lexicon"]

GAP = "…"


@dataclass(frozen=True, slots=True)
class ActionTerm:
    """One action term: its stems (``gap`` > 0: parts before/after the gap match apart) and classes."""

    words: tuple[str, ...]
    gap: int
    strong: frozenset[str]  # classes asked for without further evidence
    weak: frozenset[str]  # classes asked for only together with one of the tool's objects
    noun: frozenset[str]  # classes that count only when negated
    text: str
    label: str = ""  # "pay:wire", as recorded in an intent's terms


def _stems(text: str) -> tuple[str, ...]:
    return tuple(stem(t) for t in tokenize(text) if t not in BREAK_TOKENS)


def _marker_stems(text: str) -> tuple[str, ...]:
    # Punctuation is part of a marker ("system :" is a marker, the word "system" alone is not).
    return tuple(stem(t) for t in tokenize(text))


#: Particles of English phrasal verbs: "shut down" also matches "shut the boxes down".
_EN_PARTICLES = frozenset(["up", "down", "off", "out", "back", "in", "on", "away"])
#: Separable prefixes of German verbs: "fahr … runter" also matches "runterfahren", "runterzufahren",
#: "runtergefahrt" (regular participles; irregular ones are listed as they are written).
_DE_PARTICLES = frozenset(
    [
        "ab",
        "an",
        "auf",
        "aus",
        "bei",
        "durch",
        "ein",
        "fest",
        "frei",
        "heraus",
        "herunter",
        "hinzu",
        "hoch",
        "los",
        "mit",
        "nach",
        "raus",
        "runter",
        "um",
        "vor",
        "weg",
        "weiter",
        "zu",
        "zurück",
        "zusammen",
    ]
)


def derived_forms(text: str) -> list[str]:
    """``text`` and the forms derived from it: phrasal verbs split by their object, German verbs joined."""
    forms = [text]
    if GAP in text:
        head, _, tail = (part.strip() for part in text.partition(GAP))
        if " " not in head and tail in _DE_PARTICLES and head.isalpha():
            base = head[:-1] if head.endswith("e") else head
            forms += [f"{tail}{base}en", f"{tail}zu{base}en", f"{tail}ge{base}t"]
    else:
        words = text.split()
        if len(words) == 2 and words[1] in _EN_PARTICLES and words[0].isalpha():
            forms.append(f"{words[0]} {GAP} {words[1]}")
    return forms


def _split_gap(text: str, stems: Any = _stems) -> tuple[tuple[str, ...], int]:
    if GAP in text:
        head, _, tail = text.partition(GAP)
        h, t = stems(head), stems(tail)
        return h + t, len(h)
    return stems(text), 0


class Lexicon:
    """Compiled lexicon: action terms indexed by first stem, objects, cues (see ``lexicon.yaml``)."""

    def __init__(self, data: Any, *, origin: str = "lexicon"):
        if not isinstance(data, dict) or not isinstance(data.get("actions"), dict):
            raise ConfigError(f"{origin}: expected a mapping with 'actions'")
        self.version = data.get("version")
        if not isinstance(self.version, int) or isinstance(self.version, bool):
            raise ConfigError(f"{origin}: 'version' must be an integer")
        collected: dict[tuple[tuple[str, ...], int], dict[str, set[str]]] = {}
        texts: dict[tuple[tuple[str, ...], int], str] = {}
        safe: set[str] = set()
        for cls, spec in data["actions"].items():
            if not isinstance(spec, dict):
                raise ConfigError(f"{origin}: actions.{cls} must be a mapping")
            if spec.get("safe"):
                safe.add(cls)
            for kind in ("terms", "weak", "nouns"):
                for written in spec.get(kind) or ():
                    for text in derived_forms(str(written)) if kind != "nouns" else [str(written)]:
                        words, gap = _split_gap(text)
                        if not words:
                            raise ConfigError(f"{origin}: actions.{cls}.{kind}: {text!r} contains no word")
                        key = (words, gap)
                        texts.setdefault(key, text)
                        entry = collected.setdefault(key, {"strong": set(), "weak": set(), "noun": set()})
                        entry[{"terms": "strong", "weak": "weak", "nouns": "noun"}[kind]].add(cls)
        self.classes = frozenset(data["actions"])
        self.safe = frozenset(safe)
        index: dict[str, list[ActionTerm]] = {}
        for (words, gap), entry in collected.items():
            weak = entry["weak"] - entry["strong"]
            noun = entry["noun"] - entry["strong"] - weak
            label = "/".join(sorted(entry["strong"] or weak or noun)) + ":" + texts[(words, gap)]
            term = ActionTerm(
                words,
                gap,
                frozenset(entry["strong"]),
                frozenset(weak),
                frozenset(noun),
                texts[(words, gap)],
                label,
            )
            index.setdefault(words[0], []).append(term)
        for options in index.values():
            options.sort(key=lambda t: (-len(t.words), t.gap))
        self.actions = index
        self.light_verbs = frozenset(_stems(" ".join(data.get("light_verbs") or ())))
        self.generic_change = frozenset(s for t in data.get("generic_change") or () for s in _stems(t))
        self.only = frozenset(s for t in data.get("only") or () for s in _stems(t))
        self.read_only_phrases = tuple(_stems(t) for t in data.get("read_only_phrases") or ())
        self.negations = tuple(str(t) for t in data.get("negations") or ())
        self.post_negations = frozenset(tokenize(" ".join(data.get("post_negations") or ())))
        self.injection = tuple(_split_gap(str(t), _marker_stems) for t in data.get("injection_markers") or ())
        #: first stems of injection markers and read-only phrases, to skip the rest of a prompt quickly
        self.injection_first = frozenset(words[0] for words, _ in self.injection)
        by_first: dict[str, list[tuple[tuple[str, ...], int]]] = {}
        for words, gap in self.injection:
            by_first.setdefault(words[0], []).append((words, gap))
        #: the markers by first stem, each list in the order written
        self.injection_by_first = {first: tuple(markers) for first, markers in by_first.items()}
        self.read_only_first = frozenset(words[0] for words in self.read_only_phrases)
        read_only: dict[str, list[tuple[str, ...]]] = {}
        for words in self.read_only_phrases:
            read_only.setdefault(words[0], []).append(words)
        #: the read-only phrases by first stem
        self.read_only_by_first = {first: tuple(phrases) for first, phrases in read_only.items()}
        objects: dict[tuple[str, ...], set[str]] = {}
        self.labels: dict[str, str] = {}
        for canonical, synonyms in (data.get("objects") or {}).items():
            head = _stems(str(canonical))
            name = " ".join(head)
            self.labels[name] = str(canonical)
            objects.setdefault(head, set()).add(name)
            for syn in synonyms or ():
                objects.setdefault(_stems(str(syn)), set()).add(name)
        self.objects = {words: frozenset(names) for words, names in objects.items()}
        self.addressed = {
            str(cls): frozenset(" ".join(_stems(str(o))) for o in names or ())
            for cls, names in (data.get("addressed") or {}).items()
        }

    def classes_of(self, text: str) -> frozenset[str]:
        """The action classes a tool's verb names (strong, else weak, else noun senses)."""
        words = _stems(text)
        for term in self.actions.get(words[0], ()) if words else ():
            if term.words == words and not term.gap:
                return term.strong or term.weak or term.noun
        return frozenset()

    def canonical_objects(self, words: tuple[str, ...]) -> frozenset[str]:
        """The object names a keyword stands for: itself, and what the lexicon lists it under."""
        return self.objects.get(words, frozenset()) | {" ".join(words)}


@functools.cache
def load_lexicon() -> Lexicon:
    """The shipped lexicon (parsed once per process)."""
    source = resources.files("authz.intent").joinpath("lexicon.yaml").read_text(encoding="utf-8")
    return Lexicon(yaml.safe_load(source), origin="authz/intent/lexicon.yaml")

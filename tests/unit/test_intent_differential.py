"""The shipped catalog extractor gives exactly the reference extractor's Intent (tests/intent_reference.py).

The shipped extractor reads a prompt through tables compiled per catalog (issue 17: a check adds at most
50 µs); the reference is the plain reading of the same rules it replaced. Both run here on the same
catalogs and prompts, and every field of the two Intents must be equal: allowed and forbidden tools,
confidence, rationale, summary, ``determined`` and the matched terms the audit records.

Prompts: the whole labelled corpus against every catalog (each catalog's own prompts and the others'), and
prompts generated from the words the extractor reacts to (lexicon terms in English and German, catalog
keywords, negation cues, injection markers, read-only phrases, quotes, punctuation, line breaks, numbers,
identifiers, non-ASCII letters), seeded and bounded in ``make test``; ``make fuzz`` runs many more.
"""

from __future__ import annotations

import json
import os
import random
import unicodedata
from importlib import resources
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from authz.intent import CatalogExtractor, ToolCatalog, catalog_from_tools_list, load_catalogs
from authz.intent._catalog_extractor import DEFAULT_NEGATIONS, MAX_PROMPT_CHARS, _chunks
from authz.intent._text import TOKEN_PATTERN, normalize, tokenize
from tests import intent_reference

DATA = Path(__file__).resolve().parents[1] / "data" / "intent"
CATALOGS = ("demo", "ap", "cloud", "crm")
#: A bounded run in `make test`; `make fuzz` sets TESSERA_PROPERTY_EXAMPLES much higher.
EXAMPLES = int(os.environ.get("TESSERA_PROPERTY_EXAMPLES", "300"))
FIELDS = ("allowed_tools", "forbidden_tools", "confidence", "rationale", "source", "summary", "determined")


def _catalogs() -> dict[str, ToolCatalog]:
    catalogs = {
        name: catalog_from_tools_list(json.loads((DATA / f"{name}_tools.json").read_text()))
        for name in CATALOGS
    }
    example = resources.files("authz.intent").joinpath("examples/demo_catalog.yaml")
    with resources.as_file(example) as path:
        for tenant, catalog in load_catalogs(path).items():
            catalogs[f"yaml-{tenant}"] = catalog
    # Hand-written entries: phrases, tenant negation cues, a verb the lexicon does not know.
    catalogs["handwritten"] = ToolCatalog.from_mapping(
        {
            "negations": ["keinesfalls", "under no circumstances"],
            "tools": {
                "read_invoice": {"verbs": ["read", "show"], "keywords": ["invoice", "bill"]},
                "pay_invoice": {"verbs": ["pay"], "keywords": ["invoice"], "phrases": ["settle up now"]},
                "frobnicate_ledger": {"verbs": ["frobnicate"], "keywords": ["ledger", "Hauptbuch"]},
                "wire_money": {"phrases": ["wire transfer", "send money"]},
            },
        }
    )
    return catalogs


CATALOG_SET = _catalogs()


@pytest.fixture(scope="module")
def extractors() -> tuple[CatalogExtractor, CatalogExtractor]:
    shipped = CatalogExtractor(CATALOG_SET, cache_size=0)
    reference = intent_reference.CatalogExtractor(CATALOG_SET, cache_size=0)
    return shipped, reference


def assert_same(extractors: tuple[CatalogExtractor, CatalogExtractor], tenant: str, prompt: str) -> None:
    shipped, reference = extractors
    got, want = shipped.extract_now(tenant, prompt), reference.extract_now(tenant, prompt)
    for name in FIELDS:
        assert getattr(got, name) == getattr(want, name), (tenant, prompt, name)
    assert tuple(got.terms) == tuple(want.terms), (tenant, prompt, "terms")


def corpus_prompts() -> list[str]:
    return sorted(
        {
            json.loads(line)["prompt"]
            for path in DATA.glob("*.jsonl")
            for line in path.read_text(encoding="utf-8").splitlines()
            if line.strip()
        }
    )


def test_every_corpus_prompt_gives_the_reference_intent_on_every_catalog(extractors):
    prompts = corpus_prompts()
    assert len(prompts) >= 500
    for tenant in CATALOG_SET:
        for prompt in prompts:
            assert_same(extractors, tenant, prompt)
            # The same prompt again: what the first reading learned must not change the second.
            assert_same(extractors, tenant, prompt)


def _vocabulary() -> list[str]:
    source = yaml.safe_load(
        resources.files("authz.intent").joinpath("lexicon.yaml").read_text(encoding="utf-8")
    )
    words: set[str] = set()
    for spec in source["actions"].values():
        for kind in ("terms", "weak", "nouns"):
            for text in spec.get(kind) or ():
                words.update(str(text).replace("…", " ").split())
                words.add(str(text).replace("… ", ""))
    for key in (
        "light_verbs",
        "generic_change",
        "only",
        "read_only_phrases",
        "negations",
        "post_negations",
        "injection_markers",
    ):
        for text in source.get(key) or ():
            words.add(str(text).replace("… ", ""))
            words.update(str(text).replace("…", " ").split())
    for canonical, synonyms in (source.get("objects") or {}).items():
        words.add(str(canonical))
        words.update(str(s) for s in synonyms or ())
    words.update(DEFAULT_NEGATIONS)
    for catalog in CATALOG_SET.values():
        for tool in catalog.tools.values():
            words.update(tool.verbs)
            words.update(tool.keywords)
            words.update(tool.phrases)
            words.update(tool.description.split()[:12])
    words.update(
        [
            "the",
            "a",
            "an",
            "it",
            "them",
            "is",
            "are",
            "was",
            "be",
            "i",
            "we",
            "i'll",
            "will",
            "please",
            "and",
            "then",
            "but",
            "however",
            "aber",
            "sondern",
            "und",
            "to",
            "already",
            "approved",
            "paid",
            "sent",
            "closing",
            "moved",
            "changed",
            "deleted",
            "green",
            "screen",
            "any",
            "all",
            "everything",
            "nothing",
            "Lieferantenrechnungen",
            "Rechnungsfreigabe",
            "INV-1001",
            "VI-5000",
            "9,000",
            "10,000.50",
            "EUR",
            "€",
            "$",
            "O'Brien's",
            "don't",
            "DON\u2019T",
            "Ü",
            "ÜBERWEISUNG",
            "\uff49\uff4e\uff56\uff4f\uff49\uff43\uff45",
            "db-1",
            "x" * 70,
        ]
    )
    return sorted(w for w in words if w)


VOCABULARY = _vocabulary()
SEPARATORS = [
    " ",
    " ",
    " ",
    " ",
    ", ",
    ". ",
    "; ",
    "! ",
    "? ",
    ": ",
    "\n",
    " \n ",
    "  ",
    "\t",
    " - ",
    "",
    "'",
    '"',
    " '",
    "' ",
    " “",
    "” ",
    " „",
    "`",
]
TENANTS = sorted(CATALOG_SET)


def generated_prompt(rnd: random.Random) -> str:
    parts = []
    for _ in range(rnd.randint(1, 40)):
        parts.append(
            rnd.choice(VOCABULARY) if rnd.random() < 0.85 else rnd.choice(["Bitte", "Ignore", "SYSTEM"])
        )
        parts.append(rnd.choice(SEPARATORS))
    text = "".join(parts)
    if rnd.random() < 0.2:
        text = text.upper()
    elif rnd.random() < 0.3:
        text = text.capitalize()
    return text


def test_every_pair_of_words_that_tells_a_request_from_a_state_gives_the_reference_intent(extractors):
    """The words before an action that make it a state, a report or the user's own step ("the approved",
    "Tom moved", "are closing", "I'll send", "will send") and those after which it is the action ("please
    email"), each before every kind of action word: the extractor reads these from bits per word."""
    leads = sorted(
        intent_reference._STATE_WORDS
        | intent_reference._REQUEST_LEADS
        | intent_reference._BE
        | intent_reference._SELF
        | intent_reference._VERB_LEADS
        | {"will", "tom", "it", ",", "invoices"}
    )
    actions = sorted(
        intent_reference._PARTICIPLES
        | intent_reference._BE
        | {"approved", "moved", "closing", "send", "email", "reply", "are", "pay", "deleted", "green", "open"}
    )
    for lead in leads:
        for action in actions:
            for tenant in ("ap", "crm"):
                assert_same(extractors, tenant, f"{lead} {action} there invoices and contacts")
                assert_same(extractors, tenant, f"we will {lead} {action} the deal")


def test_generated_prompts_give_the_reference_intent(extractors):
    rnd = random.Random(17)
    for _ in range(10 * EXAMPLES):
        assert_same(extractors, rnd.choice(TENANTS), generated_prompt(rnd))


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    tenant=st.sampled_from(TENANTS),
    pieces=st.lists(
        st.one_of(st.sampled_from(VOCABULARY), st.sampled_from(SEPARATORS), st.text(max_size=6)), max_size=40
    ),
)
def test_hypothesis_prompts_give_the_reference_intent(extractors, tenant, pieces):
    assert_same(extractors, tenant, " ".join(pieces))
    assert_same(extractors, tenant, "".join(pieces))


def test_long_and_truncated_prompts_give_the_reference_intent(extractors):
    rnd = random.Random(18)
    body = " ".join(generated_prompt(rnd) for _ in range(400))
    assert len(body) > MAX_PROMPT_CHARS
    for tenant in ("demo", "handwritten"):
        assert_same(extractors, tenant, body)
        assert_same(extractors, tenant, "pay the invoice " + "x" * 30_000)
        assert_same(extractors, tenant, "“" * 20_000 + " pay the invoice")


def _pieces_tokens(text: str) -> list[str]:
    return [token for chunk in _chunks(text) for token in TOKEN_PATTERN.findall(normalize(chunk))]


def _around(chars: list[str]) -> str:
    # Each character inside a word, after a space and before a combining mark, after a no-break space
    # (NFKC makes it a space), and after a line break.
    return "".join(f"a{c}b {c}\u0301 \u00a0{c}x\n{c}" for c in chars)


def test_pieces_cut_at_whitespace_give_the_tokens_of_the_whole_normalized_text():
    """The extractor normalizes and tokenizes each whitespace-delimited piece on its own (_chunks): the
    same tokens as normalizing and tokenizing the whole text, for every character whose normalization,
    case folding or whitespace-ness could make a difference, and a seeded sample of the others (every
    code point under `make fuzz`)."""
    everything = EXAMPLES > 1000
    rnd = random.Random(19)
    chars = []
    for code in range(0x110000):
        c = chr(code)
        if (
            everything
            or c.isspace()
            or unicodedata.combining(c)
            or unicodedata.normalize("NFKC", c) != c
            or c.casefold() != c
            or rnd.random() < 0.02
        ):
            chars.append(c)
    for start in range(0, len(chars), 4096):
        text = _around(chars[start : start + 4096])
        assert _pieces_tokens(text) == tokenize(text)
    for text in (
        "Stra\u00dfe \u03a3\u039f\u03a3 \u0130stanbul \ufb01le",
        "a\u00b4b \u3000x\u2028y",
        "e\u0301 \u0301e",
    ):
        assert _pieces_tokens(text) == tokenize(text)

"""Prompt text → tokens: Unicode-aware, deterministic, no dictionaries.

* Normalization: NFKC, then ``casefold`` (so "Überweisung", "ÜBERWEISUNG" and full-width letters
  compare equal), typographic apostrophes become ``'``.
* Tokens: words (letters/digits, with inner apostrophes kept, so "don't" is one token), numbers
  (``10,000.50`` is one token, so its dot does not end a sentence), currency signs, and the
  punctuation that bounds clauses (``. ; ! ? , :`` and line breaks, each its own token).
* Stemming: a light English suffix stripper (plurals, -ing, -ed, final -e, doubled final consonant),
  applied identically to the catalog's terms and to the prompt, so only consistency matters:
  invoice/invoices/invoicing, delete/deleted/deleting, transfer/transferred/transferring all meet.
  Words with non-letters (digits, apostrophes) are left alone. Irregular forms (paid, sent, shown)
  must be listed in the catalog.
"""

from __future__ import annotations

import re
import unicodedata

__all__ = ["BREAK_TOKENS", "SENTENCE_TOKENS", "TOKEN_PATTERN", "normalize", "stem", "stems", "tokenize"]

#: What a token is (``tokenize`` finds every match in the normalized text).
TOKEN_PATTERN = re.compile(
    r"\d+(?:[.,]\d+)*"  # numbers, with thousands separators / decimals
    r"|[^\W_]+(?:'[^\W_]+)*"  # words, keeping inner apostrophes (don't, o'brien)
    r"|[$€£¥₹]"  # currency signs (a transfer prompt may name no currency word)
    r"|[.;!?,:]|\n"  # clause punctuation
)
_APOSTROPHES = str.maketrans({"\u2019": "'", "\u2018": "'", "\u02bc": "'", "`": "'", "\uff07": "'"})

#: Tokens that end a sentence (the unit in which a verb and a keyword must meet).
SENTENCE_TOKENS = frozenset({".", ";", "!", "?", "\n"})
#: Every punctuation token (they also end a negation's scope).
BREAK_TOKENS = SENTENCE_TOKENS | {",", ":"}


def normalize(text: str) -> str:
    if text.isascii():  # NFKC is the identity and casefold is lower() on ASCII: the common, fast case
        return text.lower().replace("`", "'")
    return unicodedata.normalize("NFKC", text).casefold().translate(_APOSTROPHES)


def tokenize(text: str) -> list[str]:
    """Normalized tokens of ``text`` (words, numbers and clause punctuation), in order."""
    return TOKEN_PATTERN.findall(normalize(text))


def stem(word: str) -> str:
    """Light, consistent suffix stripping (see the module docstring)."""
    if len(word) <= 3 or not word.isalpha():
        return word
    if word.endswith("ies") and len(word) > 4:
        word = word[:-3] + "y"
    elif word.endswith("sses"):
        word = word[:-2]
    elif word.endswith("s") and not word.endswith(("ss", "us", "is")):
        word = word[:-1]
    for suffix in ("ing", "ed"):
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            word = word[: -len(suffix)]
            if word[-1] == word[-2] and word[-1] not in "lsz":
                word = word[:-1]
            break
    if word.endswith("e") and len(word) > 3:
        word = word[:-1]
    return word


def stems(text: str) -> tuple[str, ...]:
    """Stemmed word tokens of a catalog term (punctuation dropped)."""
    return tuple(stem(t) for t in tokenize(text) if t not in BREAK_TOKENS)

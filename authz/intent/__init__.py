"""Intent: what the user's prompt asked the agent to do, in tool names (ARCHITECTURE §5).

An extractor turns the prompt (``X-Intent-Prompt`` or ``params._meta["tessera/intent-prompt"]``) into an
:class:`Intent` ``{allowed_tools, forbidden_tools, confidence, rationale, source, summary}``:

* :class:`CatalogExtractor` — built in, deterministic matching against each tenant's
  :class:`ToolCatalog` and the shipped, versioned lexicon of task language in English and German
  (``lexicon.yaml``), no network, no model. A catalog is derived from the upstream's own MCP
  ``tools/list`` (:func:`catalog_from_tools_list`, fetched by :mod:`authz.intent._refresh`), with
  hand-written entries (:func:`load_catalogs`) as overrides;
* :class:`HttpExtractor` — ``POST {url}/v1/extract`` to an external service, cached, with a timeout,
  failing with :class:`authz.errors.DependencyError` (the pipeline denies: fail closed).

:func:`judge_intent` is the pipeline's intent stage as a pure function of the tenant's
:class:`IntentSettings` (``off`` | ``advisory`` | ``enforce``, ``require_prompt``), the prompt, the
intent and the tool. In every mode but ``off`` the intent also reaches the policy as ``input.intent``
(:meth:`Intent.to_policy_input`).
"""

from importlib import resources

from authz.intent._catalog import CatalogTool, ToolCatalog, load_catalogs, parse_catalogs
from authz.intent._catalog_extractor import DEFAULT_NEGATIONS, CatalogExtractor
from authz.intent._derive import catalog_from_tools_list, merge_catalogs, split_name
from authz.intent._http import HttpExtractor
from authz.intent._lexicon import Lexicon, load_lexicon
from authz.intent._model import (
    INTENT_MODES,
    INTENT_SOURCES,
    UNDETERMINED_CHOICES,
    UNDETERMINED_REASON,
    Intent,
    IntentExtractor,
    IntentSettings,
    IntentVerdict,
    judge_intent,
)
from authz.intent._refresh import CatalogRefresher, catalog_for_settings, fetch_tools_list, refresh_catalogs

__all__ = [
    "DEFAULT_NEGATIONS",
    "INTENT_MODES",
    "INTENT_SOURCES",
    "UNDETERMINED_CHOICES",
    "UNDETERMINED_REASON",
    "CatalogExtractor",
    "CatalogRefresher",
    "CatalogTool",
    "HttpExtractor",
    "Intent",
    "IntentExtractor",
    "IntentSettings",
    "IntentVerdict",
    "Lexicon",
    "ToolCatalog",
    "catalog_for_settings",
    "catalog_from_tools_list",
    "demo_catalog_path",
    "fetch_tools_list",
    "judge_intent",
    "load_catalogs",
    "load_lexicon",
    "merge_catalogs",
    "parse_catalogs",
    "refresh_catalogs",
    "split_name",
]


def demo_catalog_path() -> str:
    """Filesystem path of the shipped demo catalog (``authz/intent/examples/demo_catalog.yaml``)."""
    return str(resources.files("authz.intent").joinpath("examples").joinpath("demo_catalog.yaml"))

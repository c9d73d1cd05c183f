"""The intent value, the extractor protocol, per-tenant settings and the pure judging function."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from authz.echo import echo
from authz.errors import InvalidArgument

__all__ = [
    "INTENT_MODES",
    "INTENT_SOURCES",
    "UNDETERMINED_CHOICES",
    "UNDETERMINED_REASON",
    "Intent",
    "IntentExtractor",
    "IntentSettings",
    "IntentVerdict",
    "judge_intent",
]

#: ``off``: no intent stage. ``advisory``: the intent only goes to the policy input.
#: ``enforce``: the intent stage can deny (-32011).
INTENT_MODES = ("off", "advisory", "enforce")
#: Where an intent came from.
INTENT_SOURCES = ("catalog", "http")
#: Enforce mode, for a prompt the extractor did not understand: ``deny`` (-32011, its own reason) or
#: ``policy`` (the Rego policy decides; it sees ``input.intent.determined == false``).
UNDETERMINED_CHOICES = ("deny", "policy")
#: The reason of an enforce-mode denial for a prompt nothing of which was understood.
UNDETERMINED_REASON = (
    "intent undetermined: nothing in the prompt was recognized as a request for a catalog tool"
)


def _tool_set(value: Iterable[str], field: str) -> frozenset[str]:
    if isinstance(value, str):
        raise InvalidArgument(f"intent {field} must be a collection of tool names, not a string")
    tools = frozenset(value)
    for tool in tools:
        if not isinstance(tool, str) or not tool:
            raise InvalidArgument(f"intent {field} must contain non-empty strings, got {tool!r}")
    return tools


@dataclass(frozen=True, slots=True)
class Intent:
    """What the user's prompt asked for, in tool names.

    ``forbidden_tools`` wins over ``allowed_tools``: a tool named in both is removed from
    ``allowed_tools`` on construction, so the two sets are always disjoint. ``confidence`` is in
    [0, 1] (0: nothing understood). ``source`` is ``"catalog"`` or ``"http"``.

    ``determined`` says whether the extractor understood the prompt at all (some tool allowed or
    forbidden); ``None`` on construction means exactly that. ``terms`` are the lexicon and catalog words
    that matched (``"pay:wire"``, ``"object:invoice"``, ``"negated:delete"``): the audit event records
    them, never the prompt text.
    """

    allowed_tools: frozenset[str]
    forbidden_tools: frozenset[str]
    confidence: float
    rationale: str
    source: str
    summary: str = ""
    determined: bool | None = None
    terms: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        allowed = _tool_set(self.allowed_tools, "allowed_tools")
        forbidden = _tool_set(self.forbidden_tools, "forbidden_tools")
        object.__setattr__(self, "allowed_tools", allowed - forbidden)
        object.__setattr__(self, "forbidden_tools", forbidden)
        confidence = self.confidence
        if isinstance(confidence, bool) or not isinstance(confidence, int | float) or math.isnan(confidence):
            raise InvalidArgument(f"intent confidence must be a number, got {confidence!r}")
        if not 0.0 <= confidence <= 1.0:
            raise InvalidArgument(f"intent confidence must be in [0, 1], got {confidence}")
        object.__setattr__(self, "confidence", float(confidence))
        if self.source not in INTENT_SOURCES:
            raise InvalidArgument(
                f"intent source must be one of {', '.join(INTENT_SOURCES)}, got {self.source!r}"
            )
        if not isinstance(self.rationale, str) or not isinstance(self.summary, str):
            raise InvalidArgument("intent rationale and summary must be strings")
        if self.determined is None:
            object.__setattr__(self, "determined", bool(allowed or forbidden))
        object.__setattr__(self, "terms", tuple(self.terms))

    @classmethod
    def trusted(
        cls,
        allowed_tools: frozenset[str],
        forbidden_tools: frozenset[str],
        confidence: float,
        rationale: str,
        source: str,
        summary: str,
        determined: bool,
        terms: tuple[str, ...],
    ) -> Intent:
        """An intent from Tessera's own extractor, whose values are valid by construction (disjoint
        frozensets of names, a float confidence in [0, 1]): built without re-validating them, because
        this runs once per new prompt on the check path. Input from outside goes through the
        constructor."""
        if cls is not Intent:  # a subclass may have another layout
            intent = object.__new__(cls)
            for name, value in zip(
                _FIELDS,
                (allowed_tools, forbidden_tools, confidence, rationale, source, summary, determined, terms),
                strict=True,
            ):
                object.__setattr__(intent, name, value)
            return intent
        # Filled as an unfrozen object of the same slots, then made an Intent: plain slot stores instead of
        # eight calls through object.__setattr__ (a quarter of the cost; this runs once per new prompt).
        fields = _IntentFields()
        fields.allowed_tools = allowed_tools
        fields.forbidden_tools = forbidden_tools
        fields.confidence = confidence
        fields.rationale = rationale
        fields.source = source
        fields.summary = summary
        fields.determined = determined
        fields.terms = terms
        fields.__class__ = Intent  # type: ignore[assignment]
        return fields  # type: ignore[return-value]

    @classmethod
    def empty(cls, source: str, rationale: str, summary: str = "") -> Intent:
        """An intent that allows and forbids nothing, with confidence 0."""
        return cls(frozenset(), frozenset(), 0.0, rationale, source, summary)

    def to_policy_input(self) -> dict[str, Any]:
        """The ``input.intent`` object the policy sees (tool lists sorted, so the input is stable)."""
        return {
            "allowed_tools": sorted(self.allowed_tools),
            "forbidden_tools": sorted(self.forbidden_tools),
            "confidence": self.confidence,
            "rationale": self.rationale,
            "source": self.source,
            "summary": self.summary,
            "determined": self.determined,
            "terms": list(self.terms),
        }


class _IntentFields:
    """:class:`Intent`'s slots, in its order, without its frozen ``__setattr__`` (see ``Intent.trusted``)."""

    __slots__ = Intent.__slots__


_FIELDS = Intent.__slots__


@runtime_checkable
class IntentExtractor(Protocol):
    """Turns a prompt into an :class:`Intent`.

    Implementations raise :class:`authz.errors.DependencyError` when they cannot answer (the pipeline
    denies with -32018: fail closed); they never return a guess on failure.
    """

    async def extract(self, tenant: str, agent: str | None, prompt: str) -> Intent: ...


@dataclass(frozen=True, slots=True)
class IntentVerdict:
    """The intent stage's answer for one call: ``allowed`` or not, and why.

    ``intent`` is the denial's ``data.intent`` value: ``"undetermined"`` (the prompt was not understood),
    ``"forbidden"`` or ``"absent"`` (understood, and it asked for something else); ``None`` otherwise.
    """

    allowed: bool
    reason: str
    intent: str | None = None


@dataclass(frozen=True, slots=True)
class IntentSettings:
    """A tenant's intent settings.

    ``require_prompt`` only has an effect in ``enforce`` mode (a missing prompt then denies); it is
    accepted in the other modes so a tenant can switch modes without losing it.
    Raises :class:`authz.errors.InvalidArgument` for an unknown mode or a non-boolean flag.
    """

    mode: str = "off"
    require_prompt: bool = False
    undetermined: str = "deny"

    def __post_init__(self) -> None:
        if self.mode not in INTENT_MODES:
            raise InvalidArgument(f"intent mode must be one of {', '.join(INTENT_MODES)}, got {self.mode!r}")
        if not isinstance(self.require_prompt, bool):
            raise InvalidArgument(f"intent require_prompt must be a boolean, got {self.require_prompt!r}")
        if self.undetermined not in UNDETERMINED_CHOICES:
            raise InvalidArgument(
                f"intent undetermined must be one of {', '.join(UNDETERMINED_CHOICES)}, "
                f"got {self.undetermined!r}"
            )

    @property
    def extracts(self) -> bool:
        """Whether calls with a prompt need an extraction at all (not in ``off`` mode)."""
        return self.mode != "off"

    def judge(self, *, prompt: str | None, intent: Intent | None, tool: str) -> IntentVerdict:
        return judge_intent(
            mode=self.mode,
            require_prompt=self.require_prompt,
            prompt=prompt,
            intent=intent,
            tool=tool,
            undetermined=self.undetermined,
        )


def _tool_list(tools: frozenset[str]) -> str:
    return ", ".join(sorted(tools)) if tools else "none"


def judge_intent(
    *,
    mode: str,
    require_prompt: bool,
    prompt: str | None,
    intent: Intent | None,
    tool: str,
    undetermined: str = "deny",
) -> IntentVerdict:
    """The intent stage's rule (ARCHITECTURE §5), as a pure function.

    * ``off`` and ``advisory``: allowed (in ``advisory`` the intent only feeds the policy input).
    * ``enforce``:

      1. no prompt (``None`` or only whitespace): denied when ``require_prompt``, otherwise allowed;
      2. a prompt but no intent: denied (the caller should have extracted one; never fail open);
      3. the intent is undetermined (nothing recognized): denied with its own reason
         (``data.intent = "undetermined"``) when ``undetermined`` is ``deny``; with ``policy`` the call
         goes on and the policy decides (it sees ``input.intent.determined == false``);
      4. the tool is in ``forbidden_tools``: denied (forbidden wins);
      5. the tool is not in ``allowed_tools``: denied. This includes an **empty** allow list: the
         prompt asked for nothing this tool does, so in enforce mode nothing may run on its behalf;
      6. otherwise allowed.

    Raises :class:`authz.errors.InvalidArgument` for an unknown mode.
    """
    if mode == "off":
        return IntentVerdict(True, "intent check is off")
    if mode == "advisory":
        return IntentVerdict(True, "intent is advisory (passed to the policy only)")
    if mode != "enforce":
        raise InvalidArgument(f"intent mode must be one of {', '.join(INTENT_MODES)}, got {mode!r}")
    if prompt is None or not prompt.strip():
        if require_prompt:
            return IntentVerdict(False, "intent prompt required but missing")
        return IntentVerdict(True, "no intent prompt given and none is required")
    if intent is None:
        return IntentVerdict(False, "an intent prompt was given but no intent was extracted from it")
    if not intent.determined:
        if undetermined == "policy":
            return IntentVerdict(True, "intent undetermined: the policy decides")
        return IntentVerdict(False, UNDETERMINED_REASON, "undetermined")
    if tool in intent.forbidden_tools:
        return IntentVerdict(
            False, f"tool {echo(tool)} is forbidden by the intent extracted from the prompt", "forbidden"
        )
    if tool not in intent.allowed_tools:
        return IntentVerdict(
            False,
            f"tool {echo(tool)} is absent from the intent extracted from the prompt "
            f"(allowed: {_tool_list(intent.allowed_tools)})",
            "absent",
        )
    return IntentVerdict(True, f"tool {echo(tool)} matches the intent extracted from the prompt")

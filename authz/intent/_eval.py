"""Measured accuracy: run labelled cases through an extractor and the enforce-mode rule.

A case is ``{"prompt": ..., "tool": ..., "expect": "allow" | "deny"}`` (other keys, such as ``kind``, are
kept in the report of a failing case). Each case is judged as enforce mode with ``undetermined: deny``
would judge it. ``false_deny_rate`` is the share of ``allow`` cases denied; ``catch_rate`` the share of
``deny`` cases denied.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from typing import Any

from authz.errors import ConfigError
from authz.intent._catalog_extractor import CatalogExtractor
from authz.intent._derive import catalog_from_tools_list
from authz.intent._model import IntentExtractor, judge_intent

__all__ = ["EVAL_TENANT", "evaluate", "load_cases", "load_tools_list"]

#: The tenant name the evaluation extracts for (an HTTP extractor receives it as ``x-tessera-tenant``).
EVAL_TENANT = "eval"
EXPECTS = ("allow", "deny")


def load_tools_list(path: str | os.PathLike[str]) -> dict[str, Any]:
    """An MCP ``tools/list`` result from a JSON file."""
    try:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
    except OSError as exc:
        raise ConfigError(f"{os.fspath(path)}: cannot read tools list: {exc.strerror or exc}") from None
    except ValueError as exc:
        raise ConfigError(f"{os.fspath(path)}: tools list is not JSON: {exc}") from None
    if not isinstance(data, dict) or not isinstance(data.get("tools"), list):
        raise ConfigError(f'{os.fspath(path)}: expected a tools/list result {{"tools": [...]}}')
    return data


def load_cases(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Cases from a JSON Lines file (blank lines ignored); raises :class:`ConfigError` naming the line."""
    cases = []
    try:
        with open(path, encoding="utf-8") as fh:
            lines = fh.readlines()
    except OSError as exc:
        raise ConfigError(f"{os.fspath(path)}: cannot read cases: {exc.strerror or exc}") from None
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        where = f"{os.fspath(path)}:{number}"
        try:
            case = json.loads(line)
        except ValueError:
            raise ConfigError(f"{where}: not JSON") from None
        if (
            not isinstance(case, dict)
            or not isinstance(case.get("prompt"), str)
            or not isinstance(case.get("tool"), str)
            or case.get("expect") not in EXPECTS
        ):
            raise ConfigError(f'{where}: expected {{"prompt": str, "tool": str, "expect": "allow"|"deny"}}')
        cases.append(case)
    return cases


def catalog_extractor(tools_list: Mapping[str, Any]) -> CatalogExtractor:
    return CatalogExtractor({EVAL_TENANT: catalog_from_tools_list(tools_list)}, cache_size=4096)


async def evaluate(extractor: IntentExtractor, cases: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """Judge every case; returns the report (counts, rates and the failing cases)."""
    allows = denies = false_denies = missed_denies = 0
    failures: list[dict[str, Any]] = []
    for case in cases:
        intent = await extractor.extract(EVAL_TENANT, None, case["prompt"])
        verdict = judge_intent(
            mode="enforce", require_prompt=True, prompt=case["prompt"], intent=intent, tool=case["tool"]
        )
        got = "allow" if verdict.allowed else "deny"
        if case["expect"] == "allow":
            allows += 1
        else:
            denies += 1
        if got == case["expect"]:
            continue
        if got == "deny":
            false_denies += 1
        else:
            missed_denies += 1
        failures.append({**case, "got": got, "reason": verdict.reason, "matched": list(intent.terms)})
    return {
        "cases": allows + denies,
        "allow_cases": allows,
        "deny_cases": denies,
        "false_denies": false_denies,
        "missed_denies": missed_denies,
        "false_deny_rate": round(false_denies / allows, 4) if allows else 0.0,
        "catch_rate": round((denies - missed_denies) / denies, 4) if denies else 1.0,
        "failures": failures,
    }

"""The labelled intent corpus holds the built-in extractor to its targets, and `tessera intent eval`.

Targets (issue 17): false-deny rate ≤ 2 % on benign in-scope calls, catch rate ≥ 95 % on out-of-scope
calls, over the whole corpus (≥ 400 cases, four tool catalogs). ``*_holdout.jsonl`` were written before
any tuning of the extractor and are reported on their own by ``make eval-intent``; ``*_holdout2.jsonl``
(business-task prompts in the style of agent SDK examples) was written before the second round of tuning
and is development data since the third; ``*_holdout3.jsonl`` was written before the third round and never
tuned on.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from authz.cli import main
from authz.intent import CatalogExtractor, catalog_from_tools_list
from authz.intent._eval import EVAL_TENANT, catalog_extractor, evaluate, load_cases, load_tools_list

DATA = Path(__file__).resolve().parents[1] / "data" / "intent"
CATALOGS = ("demo", "ap", "cloud", "crm")
KINDS = {"para", "syn", "multi", "neg", "scope", "inj", "de", "other"}


#: The parts the targets are held on, each on its own. holdout2 was added untuned (false-deny rate 16.9 %,
#: catch 100 %), stood at 12.5 % / 99.3 % after the second round, and is development data since the third
#: round read its misses (lexicon 3: 0.7 % / 99.3 %). holdout3, never tuned on: 1.6 % / 99.5 % measured
#: after the third round, 1.6 % / 99.1 % once schema identifiers became objects.
TARGET_PARTS = ("cases", "holdout", "holdout2", "holdout3")


def corpus(parts: tuple[str, ...] | None = None) -> list[tuple[str, Path]]:
    return [
        (name, path)
        for name in CATALOGS
        for path in sorted(DATA.glob(f"{name}_*.jsonl"))
        if parts is None or path.stem.split("_", 1)[1] in parts
    ]


def test_the_second_held_out_set_is_large_enough():
    cases = [case for _, path in corpus(("holdout2",)) for case in load_cases(path)]
    assert len(cases) >= 150
    assert sum(c["kind"] == "de" for c in cases) >= 20 and sum(c["kind"] == "inj" for c in cases) >= 15


def test_the_third_held_out_set_is_large_and_covers_every_catalog_and_kind():
    parts = corpus(("holdout3",))
    assert {name for name, _ in parts} == set(CATALOGS)
    cases = [case for _, path in parts for case in load_cases(path)]
    assert len(cases) >= 200 and {c["kind"] for c in cases} == KINDS
    assert sum(c["kind"] == "de" for c in cases) >= 40 and sum(c["kind"] == "inj" for c in cases) >= 20


def test_the_corpus_is_large_varied_and_well_formed():
    cases = [case for _, path in corpus() for case in load_cases(path)]
    assert len(cases) >= 400
    assert {name for name, _ in corpus()} == set(CATALOGS)
    assert {case["kind"] for case in cases} == KINDS
    for name in CATALOGS:  # every case names a tool its catalog has
        tools = {t["name"] for t in load_tools_list(DATA / f"{name}_tools.json")["tools"]}
        for path in DATA.glob(f"{name}_*.jsonl"):
            assert {case["tool"] for case in load_cases(path)} <= tools, path.name
    german = [c for c in cases if c["kind"] == "de"]
    assert len(german) >= 40 and sum(c["kind"] == "inj" for c in cases) >= 30


@pytest.mark.parametrize("part", TARGET_PARTS)
def test_the_built_in_extractor_meets_the_targets_on_each_part_of_the_corpus(part):
    totals = {"allow_cases": 0, "deny_cases": 0, "false_denies": 0, "missed_denies": 0}
    for name, path in corpus((part,)):
        report = asyncio.run(
            evaluate(catalog_extractor(load_tools_list(DATA / f"{name}_tools.json")), load_cases(path))
        )
        for key in totals:
            totals[key] += report[key]
    false_deny_rate = totals["false_denies"] / totals["allow_cases"]
    catch_rate = 1 - totals["missed_denies"] / totals["deny_cases"]
    assert false_deny_rate <= 0.02, totals
    assert catch_rate >= 0.95, totals


def test_eval_prints_one_json_object_with_rates_and_failures(capsys):
    code = main(
        [
            "intent",
            "eval",
            "--tools",
            str(DATA / "demo_tools.json"),
            "--cases",
            str(DATA / "demo_cases.jsonl"),
        ]
    )
    report = json.loads(capsys.readouterr().out)
    assert code == 0
    assert (
        report["cases"]
        == report["allow_cases"] + report["deny_cases"]
        == len(load_cases(DATA / "demo_cases.jsonl"))
    )
    assert set(report) >= {
        "cases",
        "false_denies",
        "missed_denies",
        "false_deny_rate",
        "catch_rate",
        "failures",
    }
    assert len(report["failures"]) == report["false_denies"] + report["missed_denies"]
    for failure in report["failures"]:
        assert {"prompt", "tool", "expect", "got", "reason", "matched"} <= set(failure)


def test_eval_exit_code_reflects_targets(tmp_path, capsys):
    cases = tmp_path / "cases.jsonl"
    cases.write_text(
        json.dumps({"prompt": "What's the weather?", "tool": "read_invoice", "expect": "allow"}) + "\n"
    )
    args = ["intent", "eval", "--tools", str(DATA / "demo_tools.json"), "--cases", str(cases)]
    assert main([*args, "--max-false-deny-rate", "0.02"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["false_denies"] == 1 and report["failures"][0]["reason"].startswith("intent undetermined")
    cases.write_text('{"prompt": "x"}\n')
    assert main(args) == 2  # a malformed case line is a usage error naming the line
    assert "cases.jsonl:1" in capsys.readouterr().err


@pytest.fixture
def classifier() -> Iterator[str]:
    """A stand-in for a team's external classifier: a real HTTP service on 127.0.0.1 answering
    ``POST /v1/extract`` (the HTTP extractor protocol) with the built-in extractor's reading of the
    demo catalog, so the numbers of both paths can be compared."""
    built_in = CatalogExtractor(
        {EVAL_TENANT: catalog_from_tools_list(load_tools_list(DATA / "demo_tools.json"))}
    )
    seen: list[str] = []

    async def extract(request: Request) -> JSONResponse:
        body = await request.json()
        seen.append(request.headers["x-tessera-tenant"])
        intent = built_in.extract_now(EVAL_TENANT, body["prompt"]).to_policy_input()
        return JSONResponse({"intent": intent})

    app = Starlette(routes=[Route("/v1/extract", extract, methods=["POST"])])
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()
    assert seen and set(seen) == {EVAL_TENANT}


def test_eval_with_an_http_extractor_uses_the_same_command(classifier, capsys, monkeypatch):
    base = [
        "intent",
        "eval",
        "--tools",
        str(DATA / "demo_tools.json"),
        "--cases",
        str(DATA / "demo_cases.jsonl"),
    ]
    assert main([*base, "--summary"]) == 0
    built_in = json.loads(capsys.readouterr().out)
    assert main([*base, "--summary", "--extractor", classifier]) == 2  # loopback: refused by default
    assert "refused" in capsys.readouterr().err
    monkeypatch.setenv("TESSERA_OUTBOUND_ALLOW", "127.0.0.1")  # the operator allowlists the classifier
    assert main([*base, "--summary", "--extractor", classifier]) == 0
    remote = json.loads(capsys.readouterr().out)
    assert remote["extractor"] == classifier and built_in["extractor"] == "catalog"
    for key in ("cases", "false_denies", "missed_denies", "false_deny_rate", "catch_rate"):
        assert remote[key] == built_in[key], key


def test_eval_reads_the_outbound_rules_through_the_public_config_api(monkeypatch):
    import ast
    import inspect

    import authz.intent.cli
    from authz.config import outbound_config

    tree = ast.parse(inspect.getsource(authz.intent.cli))
    imported = {
        (node.module, alias.name)
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom)
        for alias in node.names
    }
    assert not any(name.startswith("_") for _, name in imported), imported
    monkeypatch.setenv("TESSERA_OUTBOUND_ALLOW", "127.0.0.1,10.0.0.0/8")
    monkeypatch.setenv("TESSERA_OUTBOUND_REFUSED_PORTS", "7000")
    rules = outbound_config()
    assert rules.allow == ("127.0.0.1", "10.0.0.0/8") and rules.refused_ports == (7000,)

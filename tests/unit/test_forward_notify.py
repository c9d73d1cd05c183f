"""Slack, Teams and PagerDuty notifications through the forwarder driver, against real HTTP receivers on
127.0.0.1 that check each vendor's documented payload and answer its documented statuses (429 with
Retry-After, 5xx, 4xx). HTTP goes through the outbound client with loopback allowlisted explicitly."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from authz.audit import event_from_decision
from authz.check.models import Check, Decision, Outcome
from authz.forward import Forwarder, ForwarderSettings
from authz.forward._notify import NotifyRule, PagerDutySink, SlackSink, TeamsSink
from authz.outbound import OutboundClient, OutboundPolicy
from authz.secrets import Secret
from authz.storage.sqlite import SQLiteStore
from tests.forward_receivers import Answer, Received, Receiver

FAST = ForwarderSettings(batch_size=10, backoff_base_s=0.01, backoff_cap_s=0.05, max_retry_after_s=0.2)
LINK = "https://console.example.com/{tenant}/approvals/{approval_id}?event={seq}"


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SQLiteStore]:
    s = SQLiteStore(tmp_path / "tessera.db")
    common = {"tenant": "acme", "agent": "agent-1"}
    decisions = [
        Decision("d1", Outcome.ALLOW, tool="read_invoice", **common),
        Decision("d2", Outcome.ESCALATE, Check.APPROVAL, "needs approval", tool="transfer_funds",
                 approval_id="ap-1", **common),
        Decision("d3", Outcome.DENY, Check.BUDGET, "budget exhausted", tool="transfer_funds", **common),
        Decision("d4", Outcome.DENY, Check.INTENT, "not asked for", tool="delete_invoice", **common),
    ]  # fmt: skip
    await s.append_events([("acme", event_from_decision(d, time_ms=1_765_000_000_000)) for d in decisions])
    yield s
    await s.close()


@pytest.fixture
async def http() -> AsyncIterator[OutboundClient]:
    async with OutboundClient(OutboundPolicy.build(["127.0.0.1"]), timeout_s=2.0) as client:
        yield client


def slack_check(request: Received) -> Answer | None:
    if request.path != "/services/T000/B000/XXXX":
        return (404, {}, b"no_service")
    try:
        body = request.json()
    except ValueError:
        return (400, {}, b"invalid_payload")
    if not isinstance(body.get("text"), str) or not body["text"] or not isinstance(body.get("blocks"), list):
        return (400, {}, b"invalid_payload")
    return None


async def test_slack_gets_escalations_with_a_link_and_429_is_retried(store, http):
    receiver = Receiver(
        slack_check, ok=(200, {}, b"ok"), script=[(429, {"retry-after": "0"}, b"rate_limited")]
    ).start()
    try:
        sink = SlackSink("slack", Secret(receiver.url + "/services/T000/B000/XXXX"), http, link_template=LINK)
        await Forwarder(store, sink, FAST).pass_once()
    finally:
        receiver.stop()
    assert [status for _, status in receiver.refused] == [429]
    (message,) = [r.json() for r in receiver.accepted]  # only the escalation matches the default rule
    assert message["text"].startswith("Approval needed: agent-1 wants to call transfer_funds in acme")
    assert "<https://console.example.com/acme/approvals/ap-1?event=2|Open in Tessera>" in json.dumps(message)
    assert (await store.get_forwarder_cursor("acme", "slack")).seq == 4  # non-matching events acknowledged


def teams_check(request: Received) -> Answer | None:
    body = request.json()
    attachments = body.get("attachments") or []
    if body.get("type") != "message" or len(attachments) != 1:
        return (400, {}, b"Bad payload")
    card = attachments[0]
    if card.get("contentType") != "application/vnd.microsoft.card.adaptive":
        return (400, {}, b"Bad payload")
    if card["content"].get("type") != "AdaptiveCard" or not card["content"].get("body"):
        return (400, {}, b"Bad payload")
    return None


async def test_teams_gets_adaptive_cards_for_denials_a_rule_selects(store, http):
    receiver = Receiver(teams_check, ok=(202, {}, b""), script=[(503, {}, b"")]).start()
    try:
        rule = NotifyRule(decisions=("deny",), checks=("budget",))
        sink = TeamsSink("teams", Secret(receiver.url + "/workflows/hook"), http, rule=rule)
        await Forwarder(store, sink, FAST).pass_once()
    finally:
        receiver.stop()
    (card,) = [r.json()["attachments"][0]["content"] for r in receiver.accepted]
    assert (
        card["body"][0]["text"] == "Denied (budget): agent-1 calling transfer_funds in acme: budget exhausted"
    )
    assert [status for _, status in receiver.refused] == [503]


def pagerduty_check(request: Received) -> Answer | None:
    body = request.json()
    errors = []
    if request.path != "/v2/enqueue":
        return (404, {}, b"")
    if body.get("routing_key") != "R0UT1NGKEY" or body.get("event_action") != "trigger":
        errors.append("Invalid routing key or event action")
    payload = body.get("payload") or {}
    for field in ("summary", "source", "severity"):
        if not payload.get(field):
            errors.append(f"'{field}' is missing or blank")
    if payload.get("severity") not in ("critical", "error", "warning", "info"):
        errors.append("'severity' is invalid")
    if errors:
        return (
            400,
            {},
            json.dumps(
                {"status": "invalid event", "message": "Event object is invalid", "errors": errors}
            ).encode(),
        )
    return None


async def test_pagerduty_triggers_with_the_chain_hash_as_dedup_key_and_a_bad_key_is_a_dead_letter(
    store, http
):
    ok = (202, {}, b'{"status":"success","message":"Event processed","dedup_key":"x"}')
    receiver = Receiver(pagerduty_check, ok=ok).start()
    try:
        rule = NotifyRule(decisions=("escalate", "deny"), tools=("transfer_funds",))
        sink = PagerDutySink(
            "pd", Secret("R0UT1NGKEY"), http, url=receiver.url, rule=rule, link_template=LINK
        )
        await Forwarder(store, sink, FAST).pass_once()
        wrong = PagerDutySink("pd-wrong", Secret("nope"), http, url=receiver.url)
        await Forwarder(store, wrong, FAST).pass_once()
    finally:
        receiver.stop()
    sent = [r.json() for r in receiver.accepted]
    assert [e["payload"]["severity"] for e in sent] == ["warning", "error"]
    heads = {r.seq: r.hash async for r in store.iter_events("acme")}
    assert [e["dedup_key"] for e in sent] == [heads[2], heads[3]]
    assert sent[0]["links"][0]["href"] == "https://console.example.com/acme/approvals/ap-1?event=2"
    (dead,) = await store.list_dead_letters(sink="pd-wrong")
    assert "HTTP 400" in dead.reason and "Invalid routing key" in dead.reason

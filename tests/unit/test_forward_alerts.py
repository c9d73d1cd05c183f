"""Notifications for what happens beside the decisions: approval timeouts, chain verification failures
and forwarder dead letters (each an event Tessera writes to the tenant's chain), and rate rules ("more than
N denials of code C for tool T in M minutes"). Real Slack, Teams and PagerDuty receivers on 127.0.0.1
(tests.unit.test_forward_notify's vendor checks), real SQLite store, the real admin gRPC service for
verification."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from authz.admin.expiry import ApprovalExpiry
from authz.api.admin.v1 import audit_service_pb2 as audit_pb
from authz.api.admin.v1 import audit_service_pb2_grpc as audit_grpc
from authz.audit import admin_event, event_from_decision
from authz.check.models import Check, Decision, Outcome
from authz.forward import Forwarder, ForwarderSettings, NotifyRule, RateRule, WebhookSink
from authz.forward._notify import PagerDutySink, SlackSink, TeamsSink
from authz.outbound import OutboundClient, OutboundPolicy
from authz.secrets import Secret
from authz.storage import Approval, TenantSettings
from authz.storage.sqlite import SQLiteStore
from tests.forward_receivers import Receiver
from tests.sqlite_raw import raw_sqlite
from tests.unit.test_admin_service import ROOT, admin, auth  # noqa: F401  (admin is a fixture)
from tests.unit.test_forward_notify import pagerduty_check, slack_check, teams_check

FAST = ForwarderSettings(batch_size=10, backoff_base_s=0.01, backoff_cap_s=0.05, max_retry_after_s=0.2)
SLACK_PATH = "/services/T000/B000/XXXX"
EVENT_LINK = "https://console.example.com/{tenant}/events/{seq}"
APPROVAL_LINK = "https://console.example.com/{tenant}/approvals/{approval_id}"


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SQLiteStore]:
    s = SQLiteStore(tmp_path / "tessera.db")
    yield s
    await s.close()


@pytest.fixture
async def http() -> AsyncIterator[OutboundClient]:
    async with OutboundClient(OutboundPolicy.build(["127.0.0.1"]), timeout_s=2.0) as client:
        yield client


def approval(approval_id: str, expires_at: float) -> Approval:
    return Approval(
        approval_id, "acme", "agent-1", "transfer_funds", "ab" * 32, "needs approval", "pending", 1,
        expires_at - 600, expires_at, f"d-{approval_id}",
    )  # fmt: skip


async def test_an_approval_that_times_out_is_recorded_once_and_slack_links_to_it(store, http):
    now = time.time()
    await store.create_approval(approval("ap-late", now - 1))
    await store.create_approval(approval("ap-open", now + 600))
    expiry = ApprovalExpiry(store)
    assert [a.approval_id for a in await expiry.sweep_once()] == ["ap-late"]
    assert await expiry.sweep_once() == []  # recorded once
    assert (await store.get_approval("acme", "ap-late")).status == "expired"
    assert (await store.get_approval("acme", "ap-open")).status == "pending"

    receiver = Receiver(slack_check, ok=(200, {}, b"ok")).start()
    try:
        sink = SlackSink(
            "slack",
            Secret(receiver.url + SLACK_PATH),
            http,
            link_template=EVENT_LINK,
            approval_link_template=APPROVAL_LINK,
        )
        await Forwarder(store, sink, FAST).pass_once()
    finally:
        receiver.stop()
    (message,) = [r.json() for r in receiver.accepted]
    assert message["text"].startswith(
        "Approval timed out in acme: agent-1 calling transfer_funds was never decided (approval ap-late)"
    )
    assert "<https://console.example.com/acme/approvals/ap-late|Open in Tessera>" in json.dumps(message)


async def test_two_replicas_sweeping_at_once_record_each_timeout_once(tmp_path: Path):
    one, two = SQLiteStore(tmp_path / "t.db"), SQLiteStore(tmp_path / "t.db")
    try:
        for i in range(5):
            await one.create_approval(approval(f"ap-{i}", time.time() - 1))
        first = await ApprovalExpiry(one).sweep_once()
        second = await ApprovalExpiry(two).sweep_once()
        assert len(first) + len(second) == 5
        actions = [
            json.loads(r.event)["tessera"]["action"]
            async for r in one.iter_events("acme")
            if r.decision == "admin"
        ]
        assert actions == ["approval.expired"] * 5
    finally:
        await one.close()
        await two.close()


async def test_a_failed_chain_verification_reaches_teams(admin, http) -> None:  # noqa: F811
    store = admin.store
    await store.put_tenant("tampered", TenantSettings())
    await store.append_events(
        [
            ("tampered", admin_event("tampered", "alice", "tenant.update", f"t:{i}", time_ms=1_000))
            for i in range(3)
        ]
    )
    with raw_sqlite(store.db.path) as conn:  # someone edits a stored event behind Tessera's back
        conn.execute(
            "UPDATE audit_events SET event = replace(event, 't:1', 't:X') "
            "WHERE tenant = 'tampered' AND seq = 2"
        )
    answer = await audit_grpc.AuditServiceStub(admin.channel).VerifyAuditChain(
        audit_pb.VerifyAuditChainRequest(tenant="tampered"), metadata=auth(ROOT)
    )
    assert not answer.ok and answer.results[0].first_bad_seq == 2

    receiver = Receiver(teams_check, ok=(202, {}, b"")).start()
    try:
        sink = TeamsSink("teams", Secret(receiver.url + "/workflows/hook"), http, link_template=EVENT_LINK)
        await Forwarder(store, sink, ForwarderSettings(batch_size=10, tenants=("tampered",))).pass_once()
    finally:
        receiver.stop()
    (card,) = [r.json()["attachments"][0]["content"] for r in receiver.accepted]
    text = card["body"][0]["text"]
    assert text.startswith("Audit chain verification FAILED for tampered:") and "2" in text
    assert card["actions"][0]["url"] == "https://console.example.com/tampered/events/4"  # the failure event


async def test_a_dead_letter_triggers_pagerduty_with_a_link_to_its_event(store, http):
    await store.append_events(
        [("acme", admin_event("acme", "alice", "tenant.update", f"t:{i}", time_ms=1_000)) for i in range(3)]
    )
    siem = Receiver(lambda r: (400, {}, b"schema error")).start()
    ok = (202, {}, b'{"status":"success","message":"Event processed","dedup_key":"x"}')
    pagerduty = Receiver(pagerduty_check, ok=ok).start()
    try:
        await Forwarder(store, WebhookSink("siem", siem.url, Secret(b"k"), http), FAST).pass_once()
        sink = PagerDutySink("pd", Secret("R0UT1NGKEY"), http, url=pagerduty.url, link_template=EVENT_LINK)
        await Forwarder(store, sink, FAST).pass_once()
    finally:
        siem.stop()
        pagerduty.stop()
    (dead, _announced) = await store.list_dead_letters(sink="siem")
    (page,) = [r.json() for r in pagerduty.accepted]
    assert page["payload"]["summary"].startswith(
        f"Forwarder siem gave up on events 1..3 of acme (dead letter {dead.id}): "
        "webhook siem answered HTTP 400"
    )
    assert page["payload"]["severity"] == "error"
    heads = {r.seq: r.hash async for r in store.iter_events("acme")}
    assert page["dedup_key"] == heads[4]  # the dead letter's own event
    assert page["links"][0]["href"] == "https://console.example.com/acme/events/4"


def deny(decision_id: str, tool: str, minute: float, check: Check = Check.POLICY) -> tuple[str, dict]:
    d = Decision(decision_id, Outcome.DENY, check, "refused", tool=tool, tenant="acme", agent="agent-1")
    return ("acme", event_from_decision(d, time_ms=1_765_000_000_000 + int(minute * 60_000)))


async def test_a_rate_rule_posts_once_per_burst_and_counts_nothing_twice_on_a_resend(store, http):
    events = [
        deny("a1", "transfer_funds", 0),
        deny("x1", "read_invoice", 0.5),  # another tool: not counted
        deny("a2", "transfer_funds", 1),
        deny("x2", "transfer_funds", 1.5, Check.BUDGET),  # another code: not counted
        deny("a3", "transfer_funds", 2),
        deny("a4", "transfer_funds", 3),  # 4 within 5 minutes: more than 3 -> one message
        deny("a5", "transfer_funds", 3.5),  # still above: no second message
        deny("b1", "transfer_funds", 20),  # the window emptied: re-armed, 1 in window
        deny("b2", "transfer_funds", 21),
        deny("b3", "transfer_funds", 21.5),
        deny("b4", "transfer_funds", 22),  # a second burst -> a second message
    ]
    await store.append_events(events)
    code = events[0][1]["tessera"]["code"]
    assert events[3][1]["tessera"]["code"] != code
    receiver = Receiver(slack_check, ok=(200, {}, b"ok"), script=[(500, {}, b"")]).start()
    try:
        rule = NotifyRule(decisions=("deny",), codes=(code,), tools=("transfer_funds",), actions=())
        sink = SlackSink(
            "slack",
            Secret(receiver.url + SLACK_PATH),
            http,
            rule=rule,
            rate=RateRule(3, 5),
            link_template=EVENT_LINK,
        )
        # batches of 4: the first message's batch (5..8) is answered 500 once and resent
        await Forwarder(store, sink, ForwarderSettings(batch_size=4, backoff_base_s=0.01)).pass_once()
    finally:
        receiver.stop()
    assert [status for _, status in receiver.refused] == [500]
    texts = [r.json()["text"] for r in receiver.accepted]
    assert len(texts) == 2
    assert texts[0].startswith(
        f"Rate alert in acme: 4 events matching decision deny, code {code}, tool transfer_funds within 5 min "
        "(more than 3); latest: Denied (policy): agent-1 calling transfer_funds in acme: refused"
    )
    assert texts[0].endswith("https://console.example.com/acme/events/6")  # the event that crossed it
    assert texts[1].startswith("Rate alert in acme: 4 events") and texts[1].endswith("/acme/events/11")


async def test_a_slack_url_is_never_in_an_error_a_log_or_an_event(store, http, caplog):
    """The incoming-webhook URL is the credential: an unreachable Slack keeps it out of the recorded
    error, the dead letter, its chain event and the logs."""
    from tests.pg import free_port

    caplog.set_level("DEBUG")
    secret_path = "/services/T000/B000/s3cr3t-token-part"
    await store.append_events([deny("d1", "x", 0)])
    url = f"http://127.0.0.1:{free_port()}{secret_path}"  # nothing listens there
    rule = NotifyRule(decisions=("deny",), actions=())
    sink = SlackSink("slack", Secret(url), http, rule=rule)
    await Forwarder(store, sink, ForwarderSettings(max_attempts=2, backoff_base_s=0.0)).pass_once()
    (dead,) = await store.list_dead_letters(sink="slack")
    cursor = await store.get_forwarder_cursor("acme", "slack")
    events = [r.event async for r in store.iter_events("acme")]
    assert "<webhook URL>" in dead.reason
    for text in (dead.reason, cursor.last_error or "", *events, caplog.text):
        assert "s3cr3t" not in text


async def test_a_restart_in_the_middle_of_a_burst_neither_misses_nor_repeats_the_rate_alert(store, http):
    await store.append_events([deny(f"a{i}", "transfer_funds", i) for i in range(3)])  # 3: not above 3
    code = (await anext(store.iter_events("acme"))).event
    code = json.loads(code)["tessera"]["code"]
    receiver = Receiver(slack_check, ok=(200, {}, b"ok")).start()

    def notifier() -> SlackSink:  # a fresh process: a new sink object with an empty window
        rule = NotifyRule(decisions=("deny",), codes=(code,), tools=("transfer_funds",), actions=())
        return SlackSink("slack", Secret(receiver.url + SLACK_PATH), http, rule=rule, rate=RateRule(3, 5))

    async def one_process_pass() -> None:
        """A process that starts, forwards what is there and stops (releasing its lease, as on SIGTERM)."""
        forwarder = Forwarder(store, notifier(), FAST)
        await forwarder.pass_once()
        await store.release_forwarder_lease("slack", forwarder.holder)

    try:
        await one_process_pass()
        assert receiver.accepted == []
        await store.append_events([deny("a3", "transfer_funds", 3)])  # the 4th within 5 minutes
        await one_process_pass()  # restarted: the window is read back from the chain
        assert len(receiver.accepted) == 1
        await store.append_events([deny("a4", "transfer_funds", 3.5)])  # still the same burst
        await one_process_pass()  # restarted again: no second alert
        assert len(receiver.accepted) == 1
        assert (await store.get_forwarder_cursor("acme", "slack")).seq == 5
    finally:
        receiver.stop()
    assert receiver.accepted[0].json()["text"].startswith("Rate alert in acme: 4 events")

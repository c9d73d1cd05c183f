"""The pipeline's one fail-closed boundary and its stage order, on real parts (SQLite, macaroons, Rego)."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta

import pytest

from authz.check import Check, CheckInput, Outcome, Pipeline, TenantDirectory
from authz.intent import CatalogExtractor, catalog_for_settings
from authz.policy import compile_policy, default_policy_source, policy_hash
from authz.secrets import Secret
from authz.storage import TenantSettings
from authz.storage.sqlite import SQLiteStore
from authz.token import KeyRing, TokenAuthenticator, mint

KEYRING = KeyRing(Secret("unit-test-master-key-0123456789abcdef0123"))
CAPTURE_POLICY = """package tessera
import rego.v1
decision := {"allow": false, "reason": concat(",", input.token.caveats)}
"""


async def make_pipeline(tmp_path, *, policy: str | None = None, settings: TenantSettings | None = None, **kw):
    store = SQLiteStore(tmp_path / "t.db")
    source = policy or default_policy_source()
    await store.put_tenant("demo", settings or TenantSettings())
    await store.promote_policy("demo", source, policy_hash(source), "test")

    def extractor(tenant, s):
        return (
            CatalogExtractor({tenant: catalog_for_settings(s.catalog, s.upstream_tools)})  # as the app does
            if s.intent_mode != "off"
            else None
        )

    directory = TenantDirectory(
        store, compile_policy=lambda src, v: compile_policy(src, version=v), build_extractor=extractor
    )
    await directory.refresh(force=True)
    pipeline = Pipeline(
        authenticator=TokenAuthenticator(KEYRING),
        store=store,
        directory=directory,
        memory_key=lambda t: KEYRING.derive_subkey("memory", t),
        **kw,
    )
    return pipeline, store


def call(token: str | None, tool: str | None = "read_invoice", **kw) -> CheckInput:
    return CheckInput(
        transport="mcp",
        http_method="POST",
        path="/v1/mcp",
        source_ip="127.0.0.1",
        token=token,
        rpc_method="tools/call" if tool else "ping",
        tool=tool,
        arguments=kw.pop("arguments", {"invoice_id": "INV-1001"}) if tool else {},
        **kw,
    )


def token(**caveats) -> str:
    caveats.setdefault("expires", datetime.now(UTC) + timedelta(hours=1))
    return mint(KEYRING, tenant="demo", agent="agent-1", **caveats)


async def test_allow_carries_what_the_audit_and_headers_need(tmp_path):
    pipeline, _ = await make_pipeline(tmp_path)
    decision = await pipeline.check(call(token()))
    assert decision.outcome is Outcome.ALLOW
    assert (decision.tenant, decision.agent, decision.tool) == ("demo", "agent-1", "read_invoice")
    assert decision.policy_version == 1 and decision.policy_hash.startswith("sha256:")
    assert decision.argument_keys == ("invoice_id",) and len(decision.arguments_sha256) == 64
    assert decision.latency_us > 0


async def test_policy_sees_the_token_caveats_as_written(tmp_path):
    pipeline, _ = await make_pipeline(tmp_path, policy=CAPTURE_POLICY)
    decision = await pipeline.check(call(token(tools=["read_invoice"])))
    assert decision.check is Check.POLICY  # the policy denies with the caveats as its reason
    assert decision.reason.split(",") == [
        "tenant = demo",
        "agent = agent-1",
        "tools = read_invoice",
        decision.reason.split(",")[-1],
    ]
    assert decision.reason.split(",")[-1].startswith("expires < ")


async def test_a_failing_stage_denies_with_unavailable(tmp_path):
    pipeline, store = await make_pipeline(tmp_path)

    async def broken(*args, **kwargs):
        raise RuntimeError("database on fire")

    store.is_revoked = broken
    decision = await pipeline.check(call(token()))
    assert decision.outcome is Outcome.DENY and decision.check is Check.UNAVAILABLE
    assert "capability" in decision.reason and "database on fire" in decision.reason
    assert decision.data["retry_after_ms"] > 0


async def test_a_cancelled_dependency_denies(tmp_path):
    pipeline, store = await make_pipeline(tmp_path)

    async def cancelled(*args, **kwargs):
        future = asyncio.get_running_loop().create_future()
        future.cancel()
        return await future

    store.reserve = cancelled
    decision = await pipeline.check(call(token(max_calls=3)))
    assert (
        decision.check is Check.UNAVAILABLE and "budget" in decision.reason and "cancelled" in decision.reason
    )


async def test_a_slow_stage_past_the_deadline_denies(tmp_path):
    pipeline, store = await make_pipeline(tmp_path)
    original = store.is_revoked

    async def slow(*args, **kwargs):
        await asyncio.sleep(1)
        return await original(*args, **kwargs)

    store.is_revoked = slow
    started = time.monotonic()
    decision = await pipeline.check(call(token(), deadline=time.monotonic() + 0.05))
    assert time.monotonic() - started < 0.5
    assert decision.check is Check.UNAVAILABLE and "deadline" in decision.reason


async def test_an_allow_reached_after_the_deadline_is_a_deny(tmp_path):
    pipeline, _ = await make_pipeline(tmp_path)
    decision = await pipeline.check(call(token(), deadline=time.monotonic() - 0.001))
    assert decision.outcome is Outcome.DENY and decision.check is Check.UNAVAILABLE


async def test_stage_order_first_failure_decides_and_budget_is_not_charged(tmp_path):
    catalog = {"tools": {"read_invoice": {"verbs": ["read", "show"], "keywords": ["invoice"]}}}
    settings = TenantSettings(intent_mode="enforce", require_prompt=True, catalog=catalog)
    pipeline, _ = await make_pipeline(tmp_path, settings=settings)
    limited = token(max_calls=1)
    for _ in range(3):  # no prompt: intent denies before policy and budget run
        denied = await pipeline.check(call(limited))
        assert denied.check is Check.INTENT and "prompt" in denied.reason
        assert denied.policy_version is None
    allowed = await pipeline.check(call(limited, intent_prompt="show me invoice INV-1001"))
    assert allowed.allowed, allowed.reason  # the denials charged nothing
    spent = await pipeline.check(call(limited, intent_prompt="show me invoice INV-1001"))
    assert spent.check is Check.BUDGET


async def test_session_messages_need_only_a_valid_token(tmp_path):
    pipeline, _ = await make_pipeline(tmp_path, policy='package tessera\ndecision := {"allow": false}\n')
    assert (await pipeline.check(call(token(), tool=None))).allowed
    assert (await pipeline.check(call(token()))).check is Check.POLICY
    missing = await pipeline.check(call(None, tool=None))
    assert missing.check is Check.CAPABILITY and "missing" in missing.reason


async def test_escalation_then_approval_is_consumed_once(tmp_path):
    pipeline, store = await make_pipeline(tmp_path)
    transfer = {"amount": 20_000, "iban": "DE89370400440532013000"}
    t = token()
    escalated = await pipeline.check(call(t, tool="transfer_funds", arguments=transfer))
    assert escalated.outcome is Outcome.ESCALATE
    approval_id = escalated.data["approval_id"]
    pending = await pipeline.check(
        call(t, tool="transfer_funds", arguments=transfer, approval_id=approval_id)
    )
    assert pending.outcome is Outcome.ESCALATE and pending.data["approval_id"] == approval_id
    await store.record_approval_decision("demo", approval_id, "ops-1", "approve", "", time.time())
    other_args = dict(transfer, amount=20_001)
    mismatch = await pipeline.check(
        call(t, tool="transfer_funds", arguments=other_args, approval_id=approval_id)
    )
    assert mismatch.check is Check.POLICY and "different call" in mismatch.reason
    resumed = await pipeline.check(
        call(t, tool="transfer_funds", arguments=transfer, approval_id=approval_id)
    )
    assert resumed.allowed
    again = await pipeline.check(call(t, tool="transfer_funds", arguments=transfer, approval_id=approval_id))
    assert again.check is Check.POLICY and "consumed" in again.reason


@pytest.mark.parametrize("bad", ["not-a-token", ""])
async def test_bad_tokens_deny_as_capability(tmp_path, bad):
    pipeline, _ = await make_pipeline(tmp_path)
    decision = await pipeline.check(call(bad))
    assert decision.check is Check.CAPABILITY

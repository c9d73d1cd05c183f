"""The intent stage with derived catalogs: undetermined prompts (deny | policy), data.intent on intent
denials, and the audit event's matched terms. Real parts: SQLite store, macaroon tokens, Rego policy."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

from authz.audit import event_from_decision
from authz.check import Check, CheckInput, Outcome, Pipeline, TenantDirectory
from authz.intent import UNDETERMINED_REASON, CatalogExtractor, catalog_for_settings
from authz.policy import compile_policy, default_policy_source, policy_hash
from authz.secrets import Secret
from authz.storage import TenantSettings
from authz.storage.sqlite import SQLiteStore
from authz.token import KeyRing, TokenAuthenticator, mint

KEYRING = KeyRing(Secret("unit-test-master-key-0123456789abcdef0123"))
DEMO_TOOLS = tuple(
    json.loads((Path(__file__).parents[1] / "data/intent/demo_tools.json").read_text())["tools"]
)
#: Sees whether the prompt was understood: denies undetermined prompts with its own reason.
UNDETERMINED_POLICY = """package tessera
import rego.v1
default decision := {"allow": true}
decision := {"allow": false, "reason": "policy: prompt not understood"} if {
    input.intent.determined == false
    input.tool != "read_invoice"
}
"""


async def pipeline_for(tmp_path, settings: TenantSettings, policy: str | None = None):
    store = SQLiteStore(tmp_path / "t.db")
    source = policy or default_policy_source()
    await store.put_tenant("demo", settings)
    await store.promote_policy("demo", source, policy_hash(source), "test")

    def extractor(tenant, s):
        return CatalogExtractor({tenant: catalog_for_settings(s.catalog, s.upstream_tools)})

    directory = TenantDirectory(
        store, compile_policy=lambda src, v: compile_policy(src, version=v), build_extractor=extractor
    )
    await directory.refresh(force=True)
    pipeline = Pipeline(
        authenticator=TokenAuthenticator(KEYRING),
        store=store,
        directory=directory,
        memory_key=lambda t: KEYRING.derive_subkey("memory", t),
    )
    return pipeline, store


def call(tool: str, prompt: str | None) -> CheckInput:
    token = mint(KEYRING, tenant="demo", agent="agent-1", expires=datetime.now(UTC) + timedelta(hours=1))
    return CheckInput(
        transport="mcp",
        http_method="POST",
        path="/v1/mcp",
        source_ip="127.0.0.1",
        token=token,
        rpc_method="tools/call",
        tool=tool,
        arguments=(
            {"amount": 100, "currency": "EUR", "iban": "DE89370400440532013000"}
            if tool == "transfer_funds"
            else {"invoice_id": "INV-1001"}
        ),
        intent_prompt=prompt,
    )


async def test_undetermined_prompt_denies_with_its_own_reason_and_data(tmp_path):
    settings = TenantSettings(intent_mode="enforce", upstream_tools=DEMO_TOOLS)
    pipeline, store = await pipeline_for(tmp_path, settings)
    try:
        denied = await pipeline.check(call("read_invoice", "Hi there, how are you today?"))
        assert (denied.outcome, denied.check, denied.reason) == (
            Outcome.DENY,
            Check.INTENT,
            UNDETERMINED_REASON,
        )
        assert denied.data["intent"] == "undetermined" and denied.intent_determined is False
        other = await pipeline.check(call("delete_invoice", "Show me invoice INV-1001"))
        assert other.check is Check.INTENT and other.data["intent"] == "absent"
        assert other.reason.startswith("tool 'delete_invoice' is absent") and other.intent_determined
        forbidden = await pipeline.check(call("delete_invoice", "Read INV-1001 but do not delete it"))
        assert forbidden.data["intent"] == "forbidden"
        allowed = await pipeline.check(
            call("transfer_funds", "Settle the Initech invoice from the operating account.")
        )
        assert allowed.allowed, allowed.reason
    finally:
        await store.close()


async def test_undetermined_policy_lets_the_policy_decide(tmp_path):
    settings = TenantSettings(intent_mode="enforce", intent_undetermined="policy", upstream_tools=DEMO_TOOLS)
    pipeline, store = await pipeline_for(tmp_path, settings, UNDETERMINED_POLICY)
    try:
        prompt = "Hi there, how are you today?"
        read = await pipeline.check(call("read_invoice", prompt))
        assert read.allowed, read.reason  # the policy allows reads of a prompt it did not understand
        pay = await pipeline.check(call("transfer_funds", prompt))
        assert (pay.check, pay.reason) == (Check.POLICY, "policy: prompt not understood")
        # understood prompts are still judged by the intent stage
        delete = await pipeline.check(call("delete_invoice", "Show me invoice INV-1001"))
        assert delete.check is Check.INTENT and delete.data["intent"] == "absent"
    finally:
        await store.close()


async def test_the_audit_event_records_matched_terms_never_the_prompt(tmp_path):
    settings = TenantSettings(intent_mode="enforce", upstream_tools=DEMO_TOOLS)
    pipeline, store = await pipeline_for(tmp_path, settings)
    try:
        prompt = "Pay invoice INV-1001 to Zorblax Widgets today but never delete it"
        decision = await pipeline.check(call("transfer_funds", prompt))
        assert decision.allowed, decision.reason
        event = event_from_decision(decision, time_ms=1)
        assert event["tessera"]["intent"]["determined"] is True
        assert {"pay:pay", "negated:delete", "object:invoice"} <= set(event["tessera"]["intent"]["terms"])
        text = json.dumps(event)
        assert "zorblax" not in text.lower() and "today" not in text
        # no prompt (none required): no intent was extracted, and the event has no intent block
        unprompted = await pipeline.check(call("read_invoice", None))
        assert unprompted.allowed and "intent" not in event_from_decision(unprompted, time_ms=1)["tessera"]
    finally:
        await store.close()

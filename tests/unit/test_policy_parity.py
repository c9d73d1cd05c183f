"""Decision parity: the shipped example policies decide the same through the embedded engine (regopy,
rego-cpp) and through OPA's REST API, and an OPA tenant fails closed.

The OPA server is ``tests.opa_standin.OpaStandIn``, a STAND-IN implementing OPA's REST Data API
(``POST /v1/data/{path}``, ``PUT /v1/policies/{id}``, ``GET /health``) over ``regorus`` (``opa-eval``):
no OPA binary is reachable here. Tessera talks to it through ``opa-python-client`` as it would to OPA.
"""

from __future__ import annotations

import itertools

import pytest

from authz.check import Check, Outcome, Pipeline, TenantDirectory
from authz.outbound import OutboundPolicy
from authz.policy import OpaClients, OpaSettings, compile_policy, default_policy_source, policy_hash
from authz.storage import PolicyVersion, TenantSettings
from authz.storage.sqlite import SQLiteStore
from authz.token import TokenAuthenticator
from tests.opa_standin import OpaStandIn
from tests.unit.test_pipeline import KEYRING, call, token

SHIPPED = {"demo.rego": default_policy_source()}


def policy_input(tool: str, arguments: dict, approval: dict | None = None) -> dict:
    return {
        "phase": "call",
        "tenant": "demo",
        "agent": "agent-1",
        "token": {"id": "ab" * 32, "jti": "j1", "caveats": ["tenant = demo"]},
        "request": {"transport": "mcp", "method": "POST", "path": "/v1/mcp", "source_ip": "127.0.0.1"},
        "tool": tool,
        "arguments": arguments,
        "intent": None,
        "provenance": {"presented": False, "verified": False, "entries": []},
        "approval": approval,
        "time": {"now": "2026-12-03T12:00:00Z", "unix": 1796385600},
    }


AMOUNTS = [None, "100", -5, 0, 1, 9999.5, 10000, 10001, 50000, 100000, 100001, 2_000_000]
APPROVALS = [None, {"id": "a1", "status": "pending"}, {"id": "a1", "status": "approved"}]
INPUTS = [
    *(
        policy_input(tool, {"invoice_id": "INV-1"})
        for tool in ("read_invoice", "list_invoices", "delete_invoice")
    ),
    policy_input("unknown_tool", {}),
    *(
        policy_input("transfer_funds", {} if amount is None else {"amount": amount}, approval)
        for amount, approval in itertools.product(AMOUNTS, APPROVALS)
    ),
]


def version_of(source: str, version: int = 1) -> PolicyVersion:
    return PolicyVersion("demo", version, source, policy_hash(source), 0.0, "test", True)


async def opa_pipeline(tmp_path, settings: TenantSettings, clients: OpaClients):
    """The real pipeline and tenant directory, the tenant deciding through OPA."""
    store = SQLiteStore(tmp_path / "t.db")
    source = default_policy_source()
    await store.put_tenant("demo", settings)
    await store.promote_policy("demo", source, policy_hash(source), "test")
    directory = TenantDirectory(
        store,
        compile_policy=lambda src, v: compile_policy(src, version=v),
        build_extractor=lambda tenant, s: None,
        remote_policy=clients.policy,
    )
    await directory.refresh(force=True)
    pipeline = Pipeline(
        authenticator=TokenAuthenticator(KEYRING),
        store=store,
        directory=directory,
        memory_key=lambda t: KEYRING.derive_subkey("memory", t),
        default_deadline_s=5.0,
    )
    return pipeline, store, directory


@pytest.fixture
def opa():
    with OpaStandIn() as server:
        yield server


@pytest.mark.parametrize("name", sorted(SHIPPED))
async def test_shipped_policies_decide_the_same_on_both_engines(opa, name):
    source = SHIPPED[name]
    embedded = compile_policy(source)
    clients = OpaClients()
    remote = clients.policy("demo", {"engine": "opa", "url": opa.url, "timeout_ms": 2000}, version_of(source))
    try:
        outcomes, reasons_differ = set(), []
        for doc in INPUTS:
            mine, theirs = embedded.evaluate(doc), await remote.evaluate(doc)
            same = (mine.outcome, mine.quorum, mine.requires_step_up, mine.error)
            assert same == (theirs.outcome, theirs.quorum, theirs.requires_step_up, theirs.error), doc
            if mine.reason != theirs.reason:
                reasons_differ.append((mine.reason, theirs.reason))
            outcomes.add(mine.outcome)
        # Known engine difference, not a decision: regorus formats sprintf("%v ...") without the space
        # after a number ("transfer of 50000exceeds"); every other reason is identical.
        assert all(m.startswith("transfer of") for m, _ in reasons_differ), reasons_differ
        assert outcomes == {"allow", "deny", "escalate"}  # the inputs reach every kind of decision
        assert opa.inputs == INPUTS  # OPA got exactly the input document the embedded engine got
        assert opa.policies == {"tessera-demo": source}  # pushed once, before the first evaluation
    finally:
        await clients.aclose()


async def test_an_opa_tenant_decides_through_opa_in_the_pipeline(tmp_path, opa):
    engine = {"engine": "opa", "url": opa.url, "timeout_ms": 2000}
    # Through the operator's outbound rules, as the check service builds it: loopback only because the
    # allowlist names it (the stand-in listens on 127.0.0.1).
    clients = OpaClients(OutboundPolicy.build(["127.0.0.1"]))
    pipeline, store, directory = await opa_pipeline(tmp_path, TenantSettings(policy_engine=engine), clients)
    try:
        bearer = token()
        assert (await pipeline.check(call(bearer))).outcome is Outcome.ALLOW
        denied = await pipeline.check(call(bearer, tool="delete_invoice"))
        assert denied.check is Check.POLICY and "retained for audit" in denied.reason
        escalated = await pipeline.check(call(bearer, tool="transfer_funds", arguments={"amount": 20000}))
        assert escalated.outcome is Outcome.ESCALATE
        assert len(opa.inputs) == 3 and opa.inputs[0]["tool"] == "read_invoice"
        assert set(opa.inputs[0]) == set(INPUTS[0])
        # The admin lifecycle still applies: a promotion reaches OPA before the next decision.
        allow_all = 'package tessera\n\nimport rego.v1\n\ndecision := {"allow": true, "reason": "all"}\n'
        await store.promote_policy("demo", allow_all, policy_hash(allow_all), "test")
        await directory.refresh()
        after = await pipeline.check(call(bearer, tool="delete_invoice"))
        assert after.outcome is Outcome.ALLOW and after.policy_version == 2
        assert opa.policies["tessera-demo"] == allow_all
    finally:
        await clients.aclose()


async def test_an_opa_url_the_outbound_rules_refuse_denies_in_the_pipeline(tmp_path, opa):
    engine = {"engine": "opa", "url": opa.url, "timeout_ms": 2000}
    clients = OpaClients(OutboundPolicy())  # no allowlist: loopback is refused
    pipeline, _, _ = await opa_pipeline(tmp_path, TenantSettings(policy_engine=engine), clients)
    try:
        decision = await pipeline.check(call(token()))
    finally:
        await clients.aclose()
    assert decision.check is Check.POLICY and "refused" in decision.reason and "loopback" in decision.reason
    assert opa.requests == []  # nothing was sent


@pytest.mark.parametrize("fault", ["slow", "error", "down", "undefined", "bad_shape"])
async def test_any_opa_failure_denies(opa, fault):
    source = default_policy_source()
    engine = {"engine": "opa", "url": opa.url, "timeout_ms": 100}
    if fault == "slow":
        opa.delay_s = 0.5
    elif fault == "error":
        opa.fail_with = 500
    elif fault == "down":
        engine["url"] = "http://127.0.0.1:9"  # discard port: nothing listens
    elif fault == "undefined":
        engine["path"] = "tessera/nothing_here"
    else:
        source = 'package tessera\n\nimport rego.v1\n\ndecision := "allow"\n'
    clients = OpaClients()
    policy = clients.policy("demo", engine, version_of(source))
    try:
        result = await policy.evaluate(INPUTS[0])
    finally:
        await clients.aclose()
    assert result.outcome == "deny" and result.error, result


def test_opa_settings_are_validated():
    assert OpaSettings.parse({"engine": "opa", "url": "http://opa:8181/"}).url == "http://opa:8181"
    for bad in (
        {"engine": "opa"},
        {"engine": "opa", "url": "ftp://opa"},
        {"engine": "opa", "url": "http://opa:8181/v1/data"},
        {"engine": "opa", "url": "http://opa", "path": "../etc"},
        {"engine": "opa", "url": "http://opa", "timeout_ms": 0},
        {"engine": "opa", "url": "http://opa", "extra": 1},
        {"engine": "wasm", "url": "http://opa"},
    ):
        with pytest.raises(Exception, match="policy_engine"):
            OpaSettings.parse(bad)


def test_the_tenants_file_names_an_opa_engine(tmp_path):
    from authz.errors import ConfigError
    from authz.tenants import parse_tenants_file

    (tmp_path / "demo.rego").write_text(default_policy_source())
    (tmp_path / "tenants.yaml").write_text(
        "tenants:\n  demo:\n    policy: {engine: opa, url: 'http://opa:8181', source: demo.rego}\n"
    )
    settings, source = parse_tenants_file(tmp_path / "tenants.yaml")["demo"]
    assert source == default_policy_source()
    assert settings.policy_engine == {
        "engine": "opa",
        "url": "http://opa:8181",
        "path": "tessera/decision",
        "timeout_ms": 200,
        "push": True,
    }
    assert TenantSettings.from_json(settings.to_json()) == settings
    (tmp_path / "tenants.yaml").write_text(
        "tenants:\n  demo:\n    policy: {engine: opa, url: 'gopher://x'}\n"
    )
    with pytest.raises(ConfigError, match=r"policy_engine\.url"):
        parse_tenants_file(tmp_path / "tenants.yaml")

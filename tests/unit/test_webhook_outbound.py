"""The approval webhook under the outbound rules (issue 13 §1): a tenant-scoped admin cannot point
Tessera at loopback, private or metadata addresses or at its own ports; the refusal is in the API error
and in the tenant's audit chain. Real admin gRPC service, real SQLite store, real HTTP receiver."""

from __future__ import annotations

import grpc

from authz.admin.webhook import KEY_PURPOSE, ApprovalNotifier
from authz.api.admin.v1 import tenant_service_pb2 as tenants_pb
from authz.outbound import OutboundClient, OutboundPolicy
from authz.server.status import error_info
from authz.storage import TenantSettings
from tests.unit.test_admin_service import (  # noqa: F401  (admin is the fixture the tests take)
    ROOT,
    Receiver,
    admin,
    admin_events,
    an_approval,
    auth,
    failure,
)


def _set_webhook(tenant: str, url: str) -> tenants_pb.UpdateTenantSettingsRequest:
    request = tenants_pb.UpdateTenantSettingsRequest(
        tenant=tenant, settings=tenants_pb.TenantSettings(approval_webhook_url=url)
    )
    request.update_mask.paths.append("approval_webhook_url")
    return request


async def test_setting_a_refused_webhook_url_fails_with_the_reason_and_is_audited(admin) -> None:  # noqa: F811
    await admin.store.put_tenant("ssrf", TenantSettings())
    for url, why in (
        ("http://127.0.0.1:9901/logging", "127.0.0.1 is a loopback address"),
        ("http://169.254.169.254/latest/meta-data/", "cloud metadata address"),
        ("http://[::ffff:10.0.0.1]/hook", "10.0.0.1 is a private address"),
        ("http://localhost:9000/hook", "is a loopback address"),
    ):
        code, status = await failure(
            admin.tenants.UpdateTenantSettings(_set_webhook("ssrf", url), metadata=auth(ROOT))
        )
        assert code is grpc.StatusCode.INVALID_ARGUMENT and why in status.message, (url, status.message)
        assert error_info(status).reason == "OUTBOUND_REFUSED"
    assert (await admin.store.get_tenant("ssrf")).approval_webhook_url is None
    refused = [e for e in await admin_events(admin.store, "ssrf") if e["action"] == "tenant.settings.refused"]
    assert len(refused) == 4
    assert "cloud metadata address" in refused[1]["details"]["reason"]


async def test_the_allowlist_permits_loopback_but_never_the_gateways_own_ports(admin) -> None:  # noqa: F811
    saved = admin.runtime.outbound
    admin.runtime.outbound = OutboundClient(OutboundPolicy.build(["127.0.0.0/8"], refused_ports=[9901]))
    try:
        await admin.store.put_tenant("ssrf2", TenantSettings())
        ok = await admin.tenants.UpdateTenantSettings(
            _set_webhook("ssrf2", "http://127.0.0.1:8099/hook"), metadata=auth(ROOT)
        )
        assert ok.settings.approval_webhook_url == "http://127.0.0.1:8099/hook"
        code, status = await failure(
            admin.tenants.UpdateTenantSettings(
                _set_webhook("ssrf2", "http://127.0.0.1:9901/quitquitquit"), metadata=auth(ROOT)
            )
        )
        assert code is grpc.StatusCode.INVALID_ARGUMENT and "own ports" in status.message
    finally:
        admin.runtime.outbound = saved


async def test_the_notifier_refuses_a_stored_url_it_may_not_call_and_audits_why_once(admin) -> None:  # noqa: F811
    receiver = Receiver()
    try:
        # Written straight to the store, as a tenants file could: the notifier vets again at delivery.
        await admin.store.put_tenant("stored", TenantSettings(approval_webhook_url=receiver.url))
        await admin.store.create_approval(an_approval("stored-1", tenant="stored"))
        notifier = ApprovalNotifier(
            admin.store, lambda t: admin.keyring.derive_subkey(KEY_PURPOSE, t), retry_s=0
        )
        for _ in range(3):
            assert await notifier.poll_once() == 0
        assert receiver.received == [] and notifier.failed == 3
        refused = [
            e for e in await admin_events(admin.store, "stored") if e["action"] == "approval.webhook.refused"
        ]
        assert len(refused) == 1
        assert "127.0.0.1 is a loopback address" in refused[0]["details"]["reason"]
        assert refused[0]["details"]["error"] == "OUTBOUND_REFUSED"
    finally:
        receiver.close()

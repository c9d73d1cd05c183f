"""Admin REST edges (issue 13 §5) through the real Envoy transcoder and admin service."""

from __future__ import annotations

from typing import TYPE_CHECKING

import httpx

if TYPE_CHECKING:
    from tests.integration.admin_support import AdminGateway

pytest_plugins = ["tests.integration.admin_support"]


def test_a_path_tenant_that_differs_from_the_body_tenant_is_refused(admin_gateway: AdminGateway) -> None:
    gw = admin_gateway
    for name in ("edge-a", "edge-b"):
        assert gw.rest("TenantService/CreateTenant", {"tenant": name}).http == 200
    scoped = gw.new_key("admin", tenant="edge-b")
    for key in (gw.root, scoped):
        response = httpx.post(
            f"{gw.url}/v1/admin/tenants/edge-a/tokens:mint",
            json={"tenant": "edge-b", "agent": "x", "ttl_seconds": 60},
            headers={"authorization": f"Bearer {key}"},
            timeout=30,
        )
        assert response.status_code == 400, response.text
        status = response.json()
        assert "path names tenant 'edge-a' but the body names 'edge-b'" in status["message"]
        assert any(d.get("reason") == "TENANT_MISMATCH" for d in status.get("details", []))
    # The same tenant in both, or only in the path, is fine.
    for body in ({"tenant": "edge-b", "agent": "x", "ttl_seconds": 60}, {"agent": "x", "ttl_seconds": 60}):
        response = httpx.post(
            f"{gw.url}/v1/admin/tenants/edge-b/tokens:mint",
            json=body,
            headers={"authorization": f"Bearer {scoped}"},
            timeout=30,
        )
        assert response.status_code == 200, response.text


def test_a_webhook_on_envoys_admin_port_is_refused_even_with_loopback_allowed(
    admin_gateway: AdminGateway,
) -> None:
    """The reported SSRF: a tenant-scoped admin pointed its webhook at Envoy's admin port. The local stack
    allows loopback (TESSERA_OUTBOUND_ALLOW), yet Envoy's own ports stay refused."""
    gw = admin_gateway
    assert gw.rest("TenantService/CreateTenant", {"tenant": "edge-hook"}).http == 200
    scoped = gw.new_key("admin", tenant="edge-hook")
    for port in (gw.stack.ports.envoy_admin, gw.stack.ports.listen):
        update = {
            "tenant": "edge-hook",
            "settings": {"approval_webhook_url": f"http://127.0.0.1:{port}/quitquitquit"},
            "update_mask": "approvalWebhookUrl",
        }
        refused = gw.rest("TenantService/UpdateTenantSettings", update, scoped)
        assert refused.http == 400, refused.raw
        assert f"port {port} on 127.0.0.1 is one of Tessera's own ports" in refused.status.message
        assert refused.reason == "OUTBOUND_REFUSED"
    assert (
        gw.rest(
            "TenantService/GetTenant", {"tenant": "edge-hook"}
        ).message.tenant.settings.approval_webhook_url
        == ""
    )

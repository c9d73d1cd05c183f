"""The operator console over plain HTTP through real Envoy, a real OIDC provider process and the real
admin service: sign-in (code + PKCE), the role/tenant mapping, CSRF, the quorum, security headers.
The browser-driven flows are in tests/e2e/test_console_browser.py."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING
from urllib.parse import parse_qs, urlsplit

import httpx

if TYPE_CHECKING:
    from tests.integration.console_support import ConsoleStack

pytest_plugins = ["tests.integration.console_support"]


def test_pages_need_a_session(console_stack: ConsoleStack) -> None:
    for path in ("/console/approvals", "/console/audit", "/console/tenants", "/console/approvals/queue"):
        response = httpx.get(f"{console_stack.url}{path}", timeout=10)
        assert response.status_code == 303, path
        assert response.headers["location"].startswith("/console/login?next=")
    fragment = httpx.get(
        f"{console_stack.url}/console/approvals/queue", headers={"hx-request": "true"}, timeout=10
    )
    assert fragment.status_code == 401 and fragment.headers["hx-redirect"].startswith("/console/login")


def test_sign_in_sets_a_locked_down_session_cookie(console_stack: ConsoleStack) -> None:
    start = httpx.get(f"{console_stack.url}/console/login", timeout=10)
    (login_cookie,) = [
        c for c in start.headers.get_list("set-cookie") if c.startswith("tessera_console_login=")
    ]
    for attribute in ("HttpOnly", "Secure", "SameSite=lax", "Path=/console/auth"):
        assert attribute.lower() in login_cookie.lower(), login_cookie
    session = console_stack.sign_in("olivia")
    page = session.get("/console/approvals")
    assert page.status_code == 200
    assert "olivia@example.com · operator · all tenants" in page.text
    csp = page.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "'unsafe-inline'" not in csp and "frame-ancestors 'none'" in csp
    assert page.headers["x-frame-options"] == "DENY" and page.headers["cache-control"] == "no-store"


def test_a_replayed_or_foreign_callback_is_refused(console_stack: ConsoleStack) -> None:
    forged = httpx.get(f"{console_stack.url}/console/auth/callback?code=x&state=y", timeout=10)
    assert forged.status_code == 403 and "not started here" in forged.text
    assert "tessera_console=" not in forged.headers.get("set-cookie", "")


def test_a_person_without_a_mapped_role_gets_no_session(console_stack: ConsoleStack) -> None:
    try:
        console_stack.sign_in("nobody")
    except AssertionError as refused:
        assert "303" in str(refused) or "403" in str(refused)
    else:
        raise AssertionError("a person with no Tessera role signed in")


def test_forged_csrf_token_is_refused_before_the_admin_api(console_stack: ConsoleStack) -> None:
    approval_id, _, _ = console_stack.escalate(amount=21001)
    session = console_stack.sign_in("olivia")
    form = {"tenant": "demo", "approval_id": approval_id, "verdict": "approve", "note": "forged"}
    for bad in ({"csrf": "forged-token"}, {}):
        refused = session.post("/console/approvals/decide", form | bad)
        assert refused.status_code == 403 and "CSRF" in refused.text
    wrong_origin = session.post(
        "/console/approvals/decide",
        form | {"csrf": session.csrf()},
        headers={"origin": "http://evil.example"},
    )
    assert wrong_origin.status_code == 403
    still = console_stack.admin_rest(f"/v1/admin/tenants/demo/approvals/{approval_id}", method="GET").json()
    assert still["approval"]["status"] == "APPROVAL_STATUS_PENDING" and still["approval"]["decisions"] == []


def test_decisions_are_audited_as_the_signed_in_person_and_resume_succeeds(
    console_stack: ConsoleStack,
) -> None:
    approval_id, token, arguments = console_stack.escalate(amount=22002)
    session = console_stack.sign_in("oscar")
    form = {"tenant": "demo", "approval_id": approval_id, "verdict": "approve", "note": "known payee"}
    decided = session.post("/console/approvals/decide", form | {"csrf": session.csrf()})
    assert decided.status_code == 303 and "approved" in decided.headers["location"]
    got = console_stack.admin_rest(f"/v1/admin/tenants/demo/approvals/{approval_id}", method="GET").json()
    (decision,) = got["approval"]["decisions"]
    assert decision["principal"] == "oscar@example.com" and decision["note"] == "known payee"
    assert decision["operator"] == f"oscar@example.com (oidc {console_stack.issuer})"
    resumed = console_stack.gateway.call(
        "transfer_funds", arguments, token=token, headers={"X-Approval-Id": approval_id}
    ).json()
    assert "result" in resumed, resumed
    events = console_stack.admin_rest(
        "/v1/admin/tenants/demo/audit/events?decision=AUDIT_DECISION_ADMIN&page_size=50", method="GET"
    ).json()["events"]
    actors = [
        e["event"]["tessera"]["actor"] for e in events if e["event"]["tessera"]["action"] == "approval.decide"
    ]
    assert f"oscar@example.com (oidc {console_stack.issuer})" in actors


def test_quorum_counts_a_person_once_by_key_or_by_oidc(console_stack: ConsoleStack) -> None:
    """olivia holds an admin key too (principal olivia@example.com): deciding by key and then by OIDC
    is the same person deciding twice, refused."""
    created = console_stack.admin_rest(
        "/v1/admin/keys",
        {"name": "olivia-cli", "role": "ROLE_OPERATOR", "principal": "olivia@example.com"},
    )
    assert created.status_code == 200, created.text
    key = created.json()["secret"]
    approval_id, _, _ = console_stack.escalate(amount=150003)  # above 100000: two approvers
    by_key = httpx.post(
        f"{console_stack.url}/v1/admin/tenants/demo/approvals/{approval_id}:decide",
        json={"verdict": "VERDICT_APPROVE", "note": "by key"},
        headers={"authorization": f"Bearer {key}"},
        timeout=10,
    )
    assert by_key.status_code == 200, by_key.text
    session = console_stack.sign_in("olivia")
    again = session.post(
        "/console/approvals/decide",
        {"tenant": "demo", "approval_id": approval_id, "verdict": "approve", "csrf": session.csrf()},
    )
    assert again.status_code == 409, again.text
    assert console_stack.root_key not in again.text
    got = console_stack.admin_rest(f"/v1/admin/tenants/demo/approvals/{approval_id}", method="GET").json()
    assert got["approval"]["approvals"] == 1 and got["approval"]["status"] == "APPROVAL_STATUS_PENDING"
    other = console_stack.sign_in("oscar")
    second = other.post(
        "/console/approvals/decide",
        {"tenant": "demo", "approval_id": approval_id, "verdict": "approve", "csrf": other.csrf()},
    )
    assert second.status_code == 303 and "approved" in second.headers["location"]


def test_policy_and_token_pages_render_for_an_admin(console_stack: ConsoleStack) -> None:
    session = console_stack.sign_in("ada")
    for path in (
        "/console/policies?tenant=contoso",
        "/console/policies/draft?tenant=contoso",
        "/console/tokens?tenant=contoso",
        "/console/tenants",
        "/console/audit?tenant=contoso",
    ):
        page = session.get(path)
        assert page.status_code == 200, (path, page.text[-2000:])


def _id_token(cs: ConsoleStack, sub: str, client_id: str = "tessera-console") -> str:
    """An ID token straight from the provider (the code flow without the console), as a script might."""
    redirect = "http://127.0.0.1:1/cb"
    chosen = httpx.post(
        f"{cs.issuer}/oauth2/authorize",
        params={
            "response_type": "code",
            "client_id": client_id,
            "redirect_uri": redirect,
            "scope": "openid email",
            "state": "s",
            "nonce": "n",
        },
        data={"sub": sub},
        timeout=10,
    )
    code = parse_qs(urlsplit(chosen.headers["location"]).query)["code"][0]
    tokens = httpx.post(
        f"{cs.issuer}/oauth2/token",
        data={"grant_type": "authorization_code", "code": code, "redirect_uri": redirect},
        auth=(client_id, "secret"),
        timeout=10,
    )
    return tokens.json()["id_token"]


def test_the_admin_api_takes_an_id_token_as_a_principal_with_mapped_role_and_scope(
    console_stack: ConsoleStack,
) -> None:
    def get(path: str, token: str) -> httpx.Response:
        return httpx.get(
            f"{console_stack.url}{path}", headers={"authorization": f"Bearer {token}"}, timeout=10
        )

    olivia = _id_token(console_stack, "olivia")
    assert get("/v1/admin/approvals", olivia).status_code == 200
    tina = _id_token(console_stack, "tina")
    assert get("/v1/admin/tenants/northwind/approvals", tina).status_code == 200
    foreign = get("/v1/admin/tenants/demo/approvals", tina)
    assert foreign.status_code == 403 and "northwind" in foreign.json()["message"]
    nobody = get("/v1/admin/approvals", _id_token(console_stack, "nobody"))
    assert nobody.status_code == 403 and "no Tessera role" in nobody.json()["message"]
    other_client = get("/v1/admin/approvals", _id_token(console_stack, "olivia", client_id="another-app"))
    assert other_client.status_code == 401  # the audience is the console's client id, nothing else
    header, payload, signature = olivia.split(".")
    forged = f"{header}.{payload}.{signature[:-4]}AAAA"
    assert get("/v1/admin/approvals", forged).status_code == 401


def test_audit_export_and_checkpoints_through_the_console(console_stack: ConsoleStack) -> None:
    console_stack.gateway.call(
        "read_invoice", {"invoice_id": "INV-1001"}, token=console_stack.gateway.token()
    )
    session = console_stack.sign_in("olivia")
    export = session.get("/console/audit/export?tenant=demo&format=ndjson")
    assert export.status_code == 200 and export.headers["content-type"].startswith("application/x-ndjson")
    assert 'filename="tessera-audit-demo.ndjson"' in export.headers["content-disposition"]
    lines = [json.loads(line) for line in export.text.splitlines() if line.strip()]
    assert lines and {line["tenant"] for line in lines} == {"demo"}
    csv = session.get("/console/audit/export?tenant=demo&format=csv&decision=allow")
    assert csv.status_code == 200 and csv.text.splitlines()[0].startswith(("tenant", "seq"))
    signed = session.post("/console/audit/checkpoint", {"tenant": "demo", "csrf": session.csrf()})
    assert signed.status_code == 303
    verify = session.get("/console/audit/verify?tenant=demo")
    assert verify.status_code == 200 and 'id="verify-result">intact' in verify.text
    assert "No signed checkpoint yet" not in verify.text


def test_draft_validation_shows_line_numbered_errors_and_a_viewer_cannot_save(
    console_stack: ConsoleStack,
) -> None:
    ada = console_stack.sign_in("ada")
    bad = 'package tessera\n\nimport rego.v1\n\ndecision := {"allow": true if\n'
    saved = ada.post(
        "/console/policies/draft/save",
        {"tenant": "contoso", "name": "broken", "source": bad, "csrf": ada.csrf()},
    )
    assert saved.status_code == 303, saved.text
    checked = ada.post(
        "/console/policies/draft/check",
        {"tenant": "contoso", "name": "broken", "action": "validate", "csrf": ada.csrf()},
    )
    assert checked.status_code == 200 and "Validation: invalid" in checked.text
    assert "line " in checked.text
    victor = console_stack.sign_in("victor")
    refused = victor.post(
        "/console/policies/draft/save",
        {"tenant": "contoso", "name": "mine", "source": "package tessera\n", "csrf": victor.csrf()},
    )
    assert refused.status_code == 403 and "admin" in refused.text


def test_event_detail_finds_an_event_by_sequence(console_stack: ConsoleStack) -> None:
    token = console_stack.gateway.token()
    for n in range(3):
        console_stack.gateway.call("read_invoice", {"invoice_id": f"INV-100{n}"}, token=token)
    session = console_stack.sign_in("victor")
    for seq in (1, 2):
        page = session.get(f"/console/audit/event?tenant=demo&seq={seq}")
        assert page.status_code == 200 and f"Event {seq} of demo" in page.text
    assert session.get("/console/audit/event?tenant=demo&seq=999999").status_code == 404


def test_memory_writers_registered_rotated_and_disabled_through_the_console(
    console_stack: ConsoleStack,
) -> None:
    import base64
    import hashlib

    from authz.client import MemoryWriter

    first, second = (MemoryWriter(bytes([n]) * 32, "console-loader") for n in (7, 8))
    ada = console_stack.sign_in("ada")
    form = {"tenant": "contoso", "writer_id": "console-loader", "csrf": ada.csrf()}
    # A key that is not base64 is refused by the console with a clear message; nothing is registered.
    bad = ada.post(
        "/console/memory-writers/action", form | {"action": "register", "public_key": "not base64!"}
    )
    assert bad.status_code == 400 and "not base64" in bad.text
    listed = console_stack.admin_rest("/v1/admin/tenants/contoso/memory-writers", method="GET").json()
    assert "console-loader" not in [w["writer_id"] for w in listed.get("writers", [])]
    key = base64.b64encode(first.public_key).decode()
    registered = ada.post(
        "/console/memory-writers/action",
        form
        | {
            "action": "register",
            "public_key": key,
            "sources": "erp\ns3://invoices/*",
            "expires_at": "2030-01-01",
        },
    )
    assert registered.status_code == 303, registered.text[-1500:]
    page = ada.get("/console/memory-writers?tenant=contoso")
    assert page.status_code == 200 and 'id="writer-console-loader"' in page.text
    assert hashlib.sha256(first.public_key).hexdigest()[:16] in page.text  # the audit events' key_sha256
    assert "s3://invoices/*" in page.text and "2030-01-01" in page.text
    (writer,) = [
        w
        for w in console_stack.admin_rest("/v1/admin/tenants/contoso/memory-writers", method="GET").json()[
            "writers"
        ]
        if w["writer_id"] == "console-loader"
    ]
    assert writer["public_key"] == key and writer["sources"] == ["erp", "s3://invoices/*"]
    assert writer["created_by"].startswith("ada@example.com")
    # A viewer sees the writers but has no forms, and the admin API refuses a forged change.
    victor = console_stack.sign_in("victor")
    viewed = victor.get("/console/memory-writers?tenant=contoso")
    assert viewed.status_code == 200 and 'id="writer-console-loader"' in viewed.text
    assert 'value="disable"' not in viewed.text and 'value="register"' not in viewed.text
    forged = victor.post(
        "/console/memory-writers/action", form | {"action": "disable", "csrf": victor.csrf()}
    )
    assert forged.status_code == 403
    # Rotate with a grace period for the old key, then disable.
    rotated = ada.post(
        "/console/memory-writers/action",
        form
        | {
            "action": "rotate",
            "public_key": base64.urlsafe_b64encode(second.public_key).decode(),
            "previous_key_grace_s": "3600",
        },
    )
    assert rotated.status_code == 303, rotated.text[-1500:]
    page = ada.get("/console/memory-writers?tenant=contoso").text
    assert hashlib.sha256(second.public_key).hexdigest()[:16] in page and "previous" in page
    disabled = ada.post("/console/memory-writers/action", form | {"action": "disable"})
    assert disabled.status_code == 303
    page = ada.get("/console/memory-writers?tenant=contoso").text
    row = page[page.index('id="writer-console-loader"') :].split("</tr>")[0]
    assert "disabled" in row and "ada@example.com" in row and 'value="rotate"' not in row

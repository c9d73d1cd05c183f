"""The operator console in a real browser: headless Chromium from Debian's ``chromium`` package, driven by
Playwright for Python (no browser download), through real Envoy, against a real OpenID provider process
(``oidc-provider-mock``) and the real admin and check services.

Screenshots of each page land in ``test-artifacts/console/`` (git-ignored).
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from tests.sqlite_raw import raw_sqlite

if TYPE_CHECKING:
    from tests.integration.console_support import ConsoleStack

pytest_plugins = ["tests.integration.console_support"]

# The machine may be busy: a live refresh or a page may take longer than Playwright's 5 s default.
expect.set_options(timeout=15_000)
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "console"
CHROMIUM = os.environ.get("TESSERA_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"Debian's chromium is required at {CHROMIUM} (apt-get install chromium; .ci/run does)")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        # --no-sandbox: CI runs as root, where Chromium's sandbox refuses to start.
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            yield b
        finally:
            b.close()


@pytest.fixture
def new_page(browser: Browser) -> Iterator:
    contexts = []

    def make() -> Page:
        context = browser.new_context(viewport={"width": 1280, "height": 900})
        context.set_default_timeout(15_000)
        contexts.append(context)
        return context.new_page()

    yield make
    for context in contexts:
        context.close()


def sign_in(page: Page, cs: ConsoleStack, sub: str, path: str = "/console/approvals") -> None:
    """Open a console page, get sent to the provider, pick ``sub`` on its form, come back signed in."""
    page.goto(f"{cs.url}{path}")
    page.locator(f'button[name="sub"][value="{sub}"]').click()
    page.wait_for_url(f"{cs.url}{path}*")
    expect(page.locator("#who")).to_contain_text(f"{sub}@example.com")


def shot(page: Page, name: str) -> None:
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def test_operator_sees_an_escalated_call_appear_approves_it_and_the_resume_succeeds(
    console_stack: ConsoleStack, new_page
) -> None:
    page = new_page()
    sign_in(page, console_stack, "olivia")
    approval_id, token, arguments = console_stack.escalate(amount=31337)
    card = page.locator(f"#approval-{approval_id}")
    expect(card).to_be_visible()  # arrived by the live refresh, no reload
    expect(card).to_contain_text("transfer_funds")
    expect(card).to_contain_text("0 of 1")
    expect(card.locator("dd").filter(has_text="amount")).to_contain_text("iban")
    expect(card.locator("time[data-expires]")).to_contain_text("in ")  # the countdown runs
    shot(page, "approvals")
    card.get_by_label("Note").fill("payee verified by phone")
    page.wait_for_timeout(1500)  # several refresh periods: the focused form must survive them
    expect(card.get_by_label("Note")).to_have_value("payee verified by phone")
    card.get_by_role("button", name="Approve").click()
    expect(page.locator("#notice")).to_contain_text(f"Approval {approval_id} is now approved")
    expect(page.locator(f"#history tr[data-approval='{approval_id}']")).to_contain_text(
        "olivia@example.com (approve: payee verified by phone)"
    )
    shot(page, "approvals-decided")
    resumed = console_stack.gateway.call(
        "transfer_funds", arguments, token=token, headers={"X-Approval-Id": approval_id}
    ).json()
    assert "result" in resumed and not resumed["result"].get("isError"), resumed


def test_viewer_sees_the_queue_but_cannot_approve(console_stack: ConsoleStack, new_page) -> None:
    approval_id, _, _ = console_stack.escalate(amount=32001)
    page = new_page()
    sign_in(page, console_stack, "victor")
    card = page.locator(f"#approval-{approval_id}")
    expect(card).to_be_visible()
    expect(card.get_by_role("button", name="Approve")).to_have_count(0)
    expect(page.locator("#read-only")).to_contain_text("viewer")
    shot(page, "approvals-viewer")
    # Even a hand-made POST with the viewer's own valid CSRF token is refused, by the admin API itself.
    csrf = page.locator('form[action="/console/logout"] input[name="csrf"]').input_value()
    answer = page.request.post(
        f"{console_stack.url}/console/approvals/decide",
        form={"csrf": csrf, "tenant": "demo", "approval_id": approval_id, "verdict": "approve"},
        headers={"origin": console_stack.url},
    )
    assert answer.status == 403 and "viewer" in answer.text(), answer.text()
    got = console_stack.admin_rest(f"/v1/admin/tenants/demo/approvals/{approval_id}", method="GET").json()
    assert got["approval"]["status"] == "APPROVAL_STATUS_PENDING" and got["approval"]["decisions"] == []


def test_a_user_scoped_to_one_tenant_never_sees_another_tenants_approvals_or_events(
    console_stack: ConsoleStack, new_page
) -> None:
    demo_approval, _, _ = console_stack.escalate(amount=33001)
    page = new_page()
    sign_in(page, console_stack, "tina")
    expect(page.locator("#who")).to_contain_text("northwind")
    expect(page.locator("#pending-heading")).to_be_visible()
    page.wait_for_timeout(1500)  # a few live refreshes
    assert page.locator(f"#approval-{demo_approval}").count() == 0
    assert "demo" not in page.locator("#queue").inner_text()
    page.goto(f"{console_stack.url}/console/audit")
    options = page.locator("#f-tenant option").all_inner_texts()
    assert options == ["northwind"], options
    assert page.locator("#events tr[data-tenant='demo']").count() == 0
    shot(page, "audit-scoped")
    for path in (
        "/console/audit?tenant=demo",
        "/console/audit/event?tenant=demo&seq=1",
        "/console/audit/verify?tenant=demo",
    ):
        response = page.goto(f"{console_stack.url}{path}")
        assert response is not None and response.status == 403, path
        expect(page.locator("#error-message")).to_contain_text("northwind")
    export = page.request.get(f"{console_stack.url}/console/audit/export?tenant=demo")
    assert export.status == 403 or "demo" not in export.text()


def test_a_forged_csrf_token_is_refused(console_stack: ConsoleStack, new_page) -> None:
    approval_id, _, _ = console_stack.escalate(amount=34001)
    page = new_page()
    sign_in(page, console_stack, "olivia")
    card = page.locator(f"#approval-{approval_id}")
    expect(card).to_be_visible()
    # Focus in the queue holds its live refresh (console.js); let a refresh in flight land, then forge
    # the token the form carries.
    card.get_by_label("Note").focus()
    page.wait_for_timeout(1500)
    card.locator('input[name="csrf"]').evaluate("el => { el.value = 'forged-' + el.value.slice(7); }")
    card.get_by_role("button", name="Approve").click()
    expect(page.locator("h1")).to_have_text("Request refused")
    expect(page.locator("#error-message")).to_contain_text("CSRF")
    shot(page, "csrf-refused")
    got = console_stack.admin_rest(f"/v1/admin/tenants/demo/approvals/{approval_id}", method="GET").json()
    assert got["approval"]["status"] == "APPROVAL_STATUS_PENDING"


def test_a_tampered_audit_row_shows_up_as_a_failed_verification_naming_its_sequence(
    console_stack: ConsoleStack, new_page
) -> None:
    token = console_stack.gateway.token(tenant="northwind")
    for n in range(4):
        console_stack.gateway.call("read_invoice", {"invoice_id": f"INV-100{n}"}, token=token)
    page = new_page()
    sign_in(page, console_stack, "olivia", "/console/audit?tenant=northwind")
    expect(page.locator("#events tbody tr[data-seq]").first).to_be_visible()
    page.locator("#events tbody tr[data-seq] a").first.click()
    expect(page.locator("#event-json")).to_contain_text('"class_name": "API Activity"')
    shot(page, "audit-event")
    page.go_back()
    shot(page, "audit")
    page.locator("#verify-link").click()
    expect(page.locator("#verify-result")).to_have_text("intact")
    seqs = sorted(int(s) for s in _seqs(console_stack, "northwind"))
    victim = seqs[len(seqs) // 2]
    with raw_sqlite(console_stack.workdir / "tessera.db") as conn:
        (raw,) = conn.execute(
            "SELECT event FROM audit_events WHERE tenant = 'northwind' AND seq = ?", (victim,)
        ).fetchone()
        event = json.loads(raw)
        event["message"] = "nothing to see here"
        conn.execute(
            "UPDATE audit_events SET event = ? WHERE tenant = 'northwind' AND seq = ?",
            (json.dumps(event), victim),
        )
    page.reload()
    expect(page.locator("#verify-result")).to_have_text("FAILED")
    expect(page.locator("#first-bad-seq")).to_have_text(str(victim))
    shot(page, "audit-verify-failed")


def _seqs(cs: ConsoleStack, tenant: str) -> list[str]:
    deadline = time.monotonic() + 10
    while True:
        events = cs.admin_rest(f"/v1/admin/tenants/{tenant}/audit/events?page_size=100", method="GET").json()[
            "events"
        ]
        if len(events) >= 3 or time.monotonic() > deadline:
            return [e["seq"] for e in events]
        time.sleep(0.2)


def test_policy_lifecycle_draft_diff_dry_run_promote_rollback(console_stack: ConsoleStack, new_page) -> None:
    token = console_stack.gateway.token(tenant="contoso")
    for n in range(3):
        console_stack.gateway.call("read_invoice", {"invoice_id": f"INV-200{n}"}, token=token)
    page = new_page()
    sign_in(page, console_stack, "ada", "/console/policies?tenant=contoso")
    expect(page.locator("#active-version")).to_contain_text("Version 1")
    shot(page, "policies")
    page.locator("#new-draft").click()
    page.get_by_label("Name").fill("no-reads")
    source = page.get_by_label("Rego source")
    source.fill(
        source.input_value().replace(
            'read_only_tools := {"read_invoice", "list_invoices"}', 'read_only_tools := {"list_invoices"}'
        )
    )
    page.get_by_role("button", name="Save draft").click()
    expect(page.locator("h1")).to_contain_text("Draft no-reads")
    expect(page.locator("#diff .del")).to_contain_text('"read_invoice"')
    expect(page.locator("#diff .add")).to_contain_text('read_only_tools := {"list_invoices"}')
    page.get_by_role("button", name="Dry-run against recent traffic").click()
    expect(page.locator("#dry-run h2")).to_contain_text("would change")
    expect(page.locator("#dry-run-changes")).to_contain_text("read_invoice")
    shot(page, "policy-draft-dry-run")
    page.locator("#promote").click()
    expect(page.locator("#notice")).to_contain_text("contoso: promoted as version 2")
    denied = console_stack.gateway.call("read_invoice", {"invoice_id": "INV-2001"}, token=token).json()
    deadline = time.monotonic() + 10
    while "error" not in denied and time.monotonic() < deadline:  # replicas pick the promotion up
        time.sleep(0.2)
        denied = console_stack.gateway.call("read_invoice", {"invoice_id": "INV-2001"}, token=token).json()
    assert denied["error"]["code"] == -32012, denied
    page.get_by_role("button", name="Roll back to v1").click()
    expect(page.locator("#notice")).to_contain_text("contoso: rolled back to version")
    shot(page, "policies-rolled-back")


def test_tokens_mint_with_caveats_inspect_and_revoke(console_stack: ConsoleStack, new_page) -> None:
    page = new_page()
    sign_in(page, console_stack, "ada", "/console/tokens?tenant=contoso")
    page.get_by_label("Agent").fill("billing-bot")
    page.get_by_label("Tools (comma-separated)").fill("read_invoice")
    page.get_by_label("Max calls").fill("5")
    page.get_by_role("button", name="Mint token").click()
    minted = page.locator("#minted-token").input_value()
    expect(page.locator("#minted")).to_contain_text("max_calls = 5")
    assert (
        "result"
        in console_stack.gateway.call("read_invoice", {"invoice_id": "INV-1001"}, token=minted).json()
    )
    shot(page, "tokens-minted")
    page.locator("#i-token").fill(minted)
    page.get_by_role("button", name="Inspect").click()
    expect(page.locator("#inspected-signature")).to_have_text("valid")
    expect(page.locator("#inspected")).to_contain_text("agent = billing-bot")
    page.locator("#i-token").fill(minted)
    page.get_by_label("Reason").fill("rotated")
    page.get_by_role("button", name="Revoke").click()
    expect(page.locator("#revoked")).to_be_visible()
    expect(page.locator("#revocations")).to_contain_text("rotated")
    shot(page, "tokens-revoked")
    after = console_stack.gateway.call("read_invoice", {"invoice_id": "INV-1001"}, token=minted).json()
    assert after["error"]["code"] == -32010, after


def test_an_operator_cannot_promote_even_by_hand(console_stack: ConsoleStack, new_page) -> None:
    page = new_page()
    sign_in(page, console_stack, "olivia", "/console/policies?tenant=contoso")
    expect(page.locator("#new-draft")).to_have_count(0)
    expect(page.get_by_role("button", name="Roll back to v1")).to_have_count(0)
    csrf = page.locator('form[action="/console/logout"] input[name="csrf"]').input_value()
    answer = page.request.post(
        f"{console_stack.url}/console/policies/promote",
        form={"csrf": csrf, "tenant": "contoso", "version": "1"},
        headers={"origin": console_stack.url},
    )
    assert answer.status == 403 and "admin" in answer.text(), answer.text()


def test_every_page_is_reachable_by_keyboard_and_labelled(console_stack: ConsoleStack, new_page) -> None:
    page = new_page()
    sign_in(page, console_stack, "ada", "/console/tenants")
    shot(page, "tenants")
    page.keyboard.press("Tab")
    expect(page.locator(".skip")).to_be_focused()
    for path in (
        "/console/approvals",
        "/console/audit",
        "/console/policies",
        "/console/tokens",
        "/console/memory-writers",
        "/console/tenants",
    ):
        page.goto(f"{console_stack.url}{path}")
        unlabelled = page.evaluate(
            """() => [...document.querySelectorAll('input:not([type=hidden]), select, textarea')]
                .filter(el => !(el.labels && el.labels.length) && !el.getAttribute('aria-label'))
                .map(el => el.name || el.id)"""
        )
        assert unlabelled == [], (path, unlabelled)

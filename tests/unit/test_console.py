"""Console building blocks without a server: PKCE, sessions and sign-ins, the CSRF gate, the diff, the
security headers and how an admin API refusal becomes a page (authz.console)."""

from __future__ import annotations

import grpc
import pytest
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from authz.admin.keys import Principal
from authz.admin.oidc import OidcSettings
from authz.console import Console, ConsoleSettings
from authz.console._admin import AdminError
from authz.console._app import CSP, SecurityHeaders
from authz.console._lifecycle import diff_lines
from authz.console._sessions import SessionStore
from authz.console._signin import pkce_challenge
from authz.errors import ConfigError

PERSON = Principal("oidc", "ann@example.com", "operator", None, "ann@example.com", issuer="http://idp")


def test_pkce_s256_matches_rfc_7636_appendix_b():
    assert (
        pkce_challenge("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk")
        == "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
    )


def test_a_session_ends_with_its_id_token_or_its_ttl():
    now = [1000.0]
    store = SessionStore(ttl_s=3600, clock=lambda: now[0])
    sid, session = store.create("id-token", PERSON, token_expires_at=1600)
    assert session.expires_at == 1600 and store.get(sid) is session
    now[0] = 1600
    assert store.get(sid) is None
    sid, session = store.create("id-token", PERSON, token_expires_at=99_999)
    assert session.expires_at == 1600 + 3600
    store.drop(sid)
    assert store.get(sid) is None and store.get(None) is None and store.get("unknown") is None


def test_a_sign_in_is_finished_once_and_within_ten_minutes():
    now = [0.0]
    store = SessionStore(ttl_s=60, clock=lambda: now[0])
    key, login = store.begin_login("/console/audit")
    assert len({login.state, login.verifier, login.nonce}) == 3 and len(login.verifier) >= 43
    assert store.finish_login(key) == login
    assert store.finish_login(key) is None  # a replayed callback finds nothing
    key, _ = store.begin_login("/console/audit")
    now[0] = 601
    assert store.finish_login(key) is None


def test_sessions_are_bounded():
    store = SessionStore(ttl_s=60, max_sessions=3)
    sids = [store.create("t", PERSON, 10**12)[0] for _ in range(5)]
    assert [store.get(s) is not None for s in sids] == [False, False, True, True, True]


def test_csrf_token_comparison():
    store = SessionStore(ttl_s=60)
    _, session = store.create("t", PERSON, 10**12)
    assert session.csrf_ok(session.csrf)
    assert (
        not session.csrf_ok(session.csrf[:-1] + "x") and not session.csrf_ok("") and not session.csrf_ok(None)
    )


def _settings() -> ConsoleSettings:
    oidc = OidcSettings(issuer="http://127.0.0.1:1", client_id="console", role_map={"ops": "operator"})
    return ConsoleSettings(oidc=oidc, public_url="https://tessera.example.com")


def test_the_csrf_gate_on_console_posts():
    console = Console(_settings())
    _, session = console.sessions.create("t", PERSON, 10**12)

    async def endpoint(request):
        refused = console.csrf_refused(request, session, await request.form())
        return refused or PlainTextResponse("passed")

    client = TestClient(Starlette(routes=[Route("/p", endpoint, methods=["POST"])]))
    good = {"origin": "https://tessera.example.com", "sec-fetch-site": "same-origin"}
    assert client.post("/p", data={"csrf": session.csrf}, headers=good).text == "passed"
    assert client.post("/p", data={"csrf": session.csrf}).text == "passed"  # a client that sends neither
    assert client.post("/p", headers=good | {"x-csrf-token": session.csrf}).text == "passed"
    assert client.post("/p", data={"csrf": "forged"}, headers=good).status_code == 403
    assert client.post("/p", data={}, headers=good).status_code == 403
    cross_origin = good | {"origin": "https://evil.example"}
    assert client.post("/p", data={"csrf": session.csrf}, headers=cross_origin).status_code == 403
    cross_site = good | {"sec-fetch-site": "cross-site"}
    assert client.post("/p", data={"csrf": session.csrf}, headers=cross_site).status_code == 403


def test_security_headers_on_every_response():
    inner = Starlette(
        routes=[Route("/x", lambda r: PlainTextResponse("x", headers={"cache-control": "max-age=9"}))]
    )
    response = TestClient(SecurityHeaders(inner)).get("/x")
    assert response.headers["content-security-policy"] == CSP
    assert response.headers["cache-control"] == "no-store"  # the console's own wins
    missing = TestClient(SecurityHeaders(inner)).get("/nothing-here")
    assert missing.status_code == 404 and missing.headers["x-frame-options"] == "DENY"
    assert "'unsafe-inline'" not in CSP and "'unsafe-eval'" not in CSP


def test_diff_marks_added_and_removed_lines():
    kinds = diff_lines("a\nb\nc\n", "a\nB\nc\n")
    assert ("del", "-b") in kinds and ("add", "+B") in kinds and kinds[0][0] == "hunk"
    assert diff_lines("same", "same") == []


def test_admin_error_statuses():
    assert AdminError(grpc.StatusCode.PERMISSION_DENIED, "no").http_status == 403
    assert AdminError(grpc.StatusCode.UNAUTHENTICATED, "expired").http_status == 401
    assert AdminError(grpc.StatusCode.FAILED_PRECONDITION, "decided").http_status == 409
    assert AdminError(grpc.StatusCode.UNAVAILABLE, "down").http_status == 502


def test_settings_need_the_provider_and_a_public_url():
    base = {
        "TESSERA_OIDC_ISSUER": "http://127.0.0.1:1",
        "TESSERA_OIDC_CLIENT_ID": "c",
        "TESSERA_OIDC_ROLE_MAP": "a=admin",
    }
    with pytest.raises(ConfigError):
        ConsoleSettings.from_env({"TESSERA_CONSOLE_PUBLIC_URL": "https://x"})
    with pytest.raises(ConfigError):
        ConsoleSettings.from_env(base)
    s = ConsoleSettings.from_env(
        base | {"TESSERA_CONSOLE_PUBLIC_URL": "https://x/", "TESSERA_ADMIN_PORT": "7000"}
    )
    assert s.redirect_uri == "https://x/console/auth/callback" and s.admin_address == "127.0.0.1:7000"
    assert s.secure_cookies and s.client_secret is None


class _RefusingAdmin:
    """Stand-in for the admin service (no server here): it answers every call UNAUTHENTICATED, as the
    real one does once the session's ID token has expired."""

    async def call(self, *args, **kwargs):
        raise AdminError(grpc.StatusCode.UNAUTHENTICATED, "ID token rejected: Signature has expired")

    async def close(self) -> None:
        pass


def test_an_expired_id_token_ends_the_session_and_sends_the_person_to_sign_in():
    console = Console(_settings(), admin=_RefusingAdmin())
    sid, _ = console.sessions.create("t", PERSON, 10**12)
    client = TestClient(console.app(), follow_redirects=False)
    page = client.get("/console/approvals", headers={"cookie": f"tessera_console={sid}"})
    assert page.status_code == 303 and page.headers["location"] == "/console/login?next=/console/approvals"
    assert console.sessions.get(sid) is None
    fragment = client.get(
        "/console/approvals/queue", headers={"cookie": f"tessera_console={sid}", "hx-request": "1"}
    )
    assert fragment.status_code == 401 and fragment.headers["hx-redirect"].startswith("/console/login")


def test_budget_summary_names_the_most_used_counter():
    from authz.console._app import _budget_summary

    assert _budget_summary([]) == "no budget rules"
    rules = [
        {"usage": [{"agent": "", "kind": "calls", "used": 2, "limit": 100}]},
        {"usage": [{"agent": "bot", "kind": "cost", "used": 7, "limit": 10}]},
    ]
    assert _budget_summary(rules) == "7 of 10 cost (agent bot), 2 rules"
    assert _budget_summary([{"usage": []}]) == "1 rule, nothing used yet"


def test_sign_in_with_the_provider_unreachable_is_a_503_page_not_a_crash():
    console = Console(_settings())  # the provider at 127.0.0.1:1, refused by the outbound rules anyway
    client = TestClient(console.app(), follow_redirects=False)
    page = client.get("/console/login?next=/console/audit")
    assert page.status_code == 503 and "Sign-in unavailable" in page.text
    assert "tessera_console_login" not in page.headers.get("set-cookie", "")


def test_after_sign_in_only_console_paths():
    from authz.console._app import safe_next

    assert safe_next("/console/audit?tenant=demo") == "/console/audit?tenant=demo"
    for bad in (
        "//evil.example/x",
        "https://evil.example/",
        "/console//evil.example",
        "/console/\\evil",
        "/other",
        "",
    ):
        assert safe_next(bad) == "/console/approvals", bad

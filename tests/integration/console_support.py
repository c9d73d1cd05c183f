"""Shared by the console tests: a real OpenID provider process and the whole stack with the console.

``console_stack`` (session scope) runs ``oidc-provider-mock`` (PyPI) as its own process with predefined
people, and the local stack (Envoy, check service, admin service, demo MCP server) with the operator
console behind Envoy at ``/console``; the admin service trusts the provider's ID tokens. Load it with
``pytest_plugins = ["tests.integration.console_support"]``.

:func:`sign_in` walks the authorization code flow over plain HTTP (no browser) and returns the session
cookie; the browser tests (tests/e2e/test_console_browser.py) sign in through the provider's form.
"""

from __future__ import annotations

import json
import re
import secrets
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from html import unescape
from pathlib import Path
from urllib.parse import parse_qs, urljoin, urlsplit

import httpx
import pytest

from authz.local.stack import Stack, free_port, spawn, stop_process, wait_http
from authz.policy import default_policy_source
from tests.integration.conftest import Gateway, start_gateway

ROOT_KEY = f"tsk_{secrets.token_hex(6)}_{secrets.token_urlsafe(32)}"
CLIENT_ID = "tessera-console"
ROLE_MAP = "tessera-viewers=viewer,tessera-operators=operator,tessera-admins=admin"
#: The people the provider knows (sub → claims). Tenant "northwind" is the scoped operator's only tenant.
PEOPLE = {
    "olivia": {"email": "olivia@example.com", "groups": ["tessera-operators"], "tessera_tenant": "*"},
    "oscar": {"email": "oscar@example.com", "groups": ["tessera-operators"], "tessera_tenant": "*"},
    "ada": {
        "email": "ada@example.com",
        "groups": ["tessera-admins", "tessera-viewers"],
        "tessera_tenant": "*",
    },
    "victor": {"email": "victor@example.com", "groups": ["tessera-viewers"], "tessera_tenant": "*"},
    "tina": {"email": "tina@example.com", "groups": ["tessera-operators"], "tessera_tenant": "northwind"},
    "nobody": {"email": "nobody@example.com", "groups": ["marketing"], "tessera_tenant": "*"},
}
IBAN = "DE89370400440532013000"


@dataclass
class ConsoleStack:
    stack: Stack
    gateway: Gateway
    issuer: str
    workdir: Path

    root_key: str = ROOT_KEY

    @property
    def url(self) -> str:
        return self.stack.url

    def sign_in(self, sub: str) -> Browserless:
        return sign_in(self.url, sub)

    def admin_rest(self, path: str, body: dict | None = None, method: str = "POST") -> httpx.Response:
        return httpx.request(
            method,
            f"{self.url}{path}",
            json=body,
            headers={"authorization": f"Bearer {ROOT_KEY}"},
            timeout=10,
        )

    def escalate(self, amount: int = 25000, tenant: str = "demo") -> tuple[str, str, dict]:
        """An agent's call that escalates: (approval id, token, arguments)."""
        token = self.gateway.token(tenant=tenant)
        arguments = {"amount": amount, "iban": IBAN}
        error = self.gateway.call("transfer_funds", arguments, token=token).json()["error"]
        assert error["code"] == -32019, error
        return error["data"]["approval_id"], token, arguments


def start_provider(port: int, log: Path):
    args = [sys.executable, "-m", "oidc_provider_mock", "--host", "127.0.0.1", "--port", str(port)]
    for sub, claims in PEOPLE.items():
        args += ["--user-claims", json.dumps({"sub": sub, **claims})]
    proc = spawn(args, log=log)
    issuer = f"http://127.0.0.1:{port}"
    wait_http(f"{issuer}/.well-known/openid-configuration", 30, proc, "OIDC provider")
    return proc, issuer


@pytest.fixture(scope="session")
def console_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ConsoleStack]:
    workdir = tmp_path_factory.mktemp("console")
    provider, issuer = start_provider(free_port(), workdir / "oidc.log")
    try:
        stack, gw = start_gateway(
            workdir,
            env={"TESSERA_BOOTSTRAP_ADMIN_KEY": ROOT_KEY},
            console_env={
                "TESSERA_OIDC_ISSUER": issuer,
                "TESSERA_OIDC_CLIENT_ID": CLIENT_ID,
                "TESSERA_OIDC_ROLE_MAP": ROLE_MAP,
                "TESSERA_CONSOLE_POLL_S": "0.5",
                # The provider authenticates its clients (any secret will do for this one).
                "TESSERA_CONSOLE_CLIENT_SECRET": "console-test-secret",
            },
        )
        try:
            cs = ConsoleStack(stack, gw, issuer, workdir)
            created = cs.admin_rest("/v1/admin/tenants", {"tenant": "northwind"})
            assert created.status_code == 200, created.text
            promoted = cs.admin_rest(
                "/v1/admin/tenants/northwind/policy:promote",
                {"tenant": "northwind", "source": default_policy_source()},
            )
            assert promoted.status_code == 200, promoted.text
            created = cs.admin_rest("/v1/admin/tenants", {"tenant": "contoso"})
            assert created.status_code == 200, created.text
            promoted = cs.admin_rest(
                "/v1/admin/tenants/contoso/policy:promote",
                {"tenant": "contoso", "source": default_policy_source()},
            )
            assert promoted.status_code == 200, promoted.text
            yield cs
        finally:
            stack.stop()
    finally:
        stop_process(provider)


def _cookie(response: httpx.Response, name: str) -> str | None:
    for header in response.headers.get_list("set-cookie"):
        key, _, rest = header.partition("=")
        if key.strip() == name:
            return rest.split(";", 1)[0]
    return None


@dataclass
class Browserless:
    """A signed-in console session over plain HTTP: its cookie, sent by hand (the cookie is Secure, and
    httpx's jar keeps Secure cookies to https)."""

    base: str
    session: str

    def get(self, path: str, **kw) -> httpx.Response:
        return httpx.get(
            f"{self.base}{path}", headers={"cookie": f"tessera_console={self.session}"}, timeout=15, **kw
        )

    def post(self, path: str, data: dict, headers: dict | None = None) -> httpx.Response:
        h = {"cookie": f"tessera_console={self.session}"} | (headers or {})
        return httpx.post(f"{self.base}{path}", data=data, headers=h, timeout=15)

    def csrf(self) -> str:
        page = self.get("/console/approvals")
        match = re.search(r'name="csrf" value="([^"]+)"', page.text)
        assert match, page.text[:500]
        return unescape(match.group(1))


def sign_in(base: str, sub: str) -> Browserless:
    """The authorization code flow as a browser would walk it, choosing ``sub`` on the provider's form."""
    start = httpx.get(f"{base}/console/approvals", timeout=10)
    assert start.status_code == 303 and start.headers["location"].startswith("/console/login")
    login = httpx.get(urljoin(base, start.headers["location"]), timeout=10)
    assert login.status_code == 303, login.text
    login_cookie = _cookie(login, "tessera_console_login")
    authorize = login.headers["location"]
    query = parse_qs(urlsplit(authorize).query)
    assert query["code_challenge_method"] == ["S256"] and query["code_challenge"][0]
    chosen = httpx.post(authorize, data={"sub": sub}, timeout=10)
    assert chosen.status_code in (302, 303), chosen.text
    callback = chosen.headers["location"]
    assert callback.startswith(f"{base}/console/auth/callback?")
    done = httpx.get(callback, headers={"cookie": f"tessera_console_login={login_cookie}"}, timeout=10)
    assert done.status_code == 303, done.text
    session = _cookie(done, "tessera_console")
    assert session, done.headers
    return Browserless(base, session)

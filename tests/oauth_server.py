"""A real OAuth 2.0 / OpenID Connect authorization server for tests: ``oidc-provider-mock`` (authlib under
Flask) on 127.0.0.1, in a thread of the test process.

It serves what an MCP client's OAuth provider walks through: OpenID discovery metadata, dynamic client
registration (RFC 7591), the authorization endpoint (its login form is submitted by the test's redirect
handler, as a user's browser would), the token endpoint (authorization code) and the JWKS. Its access
tokens are configured the way an IdP fronting MCP servers issues them: RFC 9068 JWTs signed with the
server's own published key, ``aud`` = the ``resource`` the client asked for (RFC 8707), ``sub`` the user,
plus the user's claims (e.g. ``tools``), through authlib's ``OAUTH2_ACCESS_TOKEN_GENERATOR`` hook.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import flask
import httpx
import jwt
import oidc_provider_mock
import werkzeug.serving


def _jwt_access_token(client: Any, grant_type: str, user: Any, scope: str) -> str:
    request = flask.request
    key = flask.g.oidc_provider_mock_storage.jwk  # the key the server publishes at /jwks
    private = key.as_dict(is_private=True)
    now = int(time.time())
    claims: dict[str, Any] = {
        **user.claims,
        "iss": request.host_url.rstrip("/"),
        "sub": user.sub,
        "client_id": client.id,
        "scope": scope or "",
        "iat": now,
        "exp": now + int(request.form.get("tessera_test_lifetime_s", 3600)),
        "jti": uuid.uuid4().hex,
    }
    resource = request.form.get("resource")
    if resource:
        claims["aud"] = resource
    headers = {"typ": "at+jwt"}
    if private.get("kid"):
        headers["kid"] = private["kid"]
    return jwt.encode(claims, jwt.PyJWK.from_dict(private).key, algorithm="RS256", headers=headers)


class OAuthServer:
    """``oidc-provider-mock`` on a free port; ``users`` are (sub, claims) pairs it knows."""

    def __init__(self, users: Sequence[tuple[str, dict[str, Any]]] = ()) -> None:
        app = flask.Flask("tessera-test-authorization-server")
        app.config["OAUTH2_ACCESS_TOKEN_GENERATOR"] = _jwt_access_token
        oidc_provider_mock.init_app(
            app,
            require_client_registration=True,
            issue_refresh_token=False,
            user_claims=[oidc_provider_mock.User(sub=sub, claims=claims) for sub, claims in users],
        )
        app.secret_key = uuid.uuid4().bytes
        self._server = werkzeug.serving.make_server("127.0.0.1", 0, app, threaded=True)
        self.port = self._server.server_port
        self.issuer = f"http://127.0.0.1:{self.port}"
        self.jwks_uri = f"{self.issuer}/jwks"
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.1,), daemon=True)
        self._thread.start()

    def write_issuers(self, path: Path, *, listen_port: int, exchange: Sequence[str]) -> Path:
        """A ``TESSERA_OAUTH_ISSUERS_FILE`` trusting this server for tenant ``demo``: tokens for the
        gateway's ``/v1/mcp`` on ``listen_port``, tools from the user's ``tools`` claim (not the OIDC
        scopes), and ``exchange``: YAML lines of the tenant's allowance for exchanged tokens."""
        lines = [
            "issuers:",
            f"  - issuer: {self.issuer}",
            f"    jwks_uri: {self.jwks_uri}",
            f"    audience: http://127.0.0.1:{listen_port}/v1/mcp",
            "    tenant: demo",
            "    tools_claim: tools",
            "    exchange:",
            *(f"      {line}" for line in exchange),
        ]
        path.write_text("\n".join(lines) + "\n")
        return path

    async def log_in(self, authorization_url: str, sub: str) -> tuple[str, str | None]:
        """What the user's browser does at the authorization endpoint: submit the login form as ``sub``.
        Returns ``(code, state)`` from the redirect back to the client."""
        async with httpx.AsyncClient(timeout=10) as http:
            response = await http.post(authorization_url, data={"sub": sub})
        assert response.status_code == 302, (response.status_code, response.text[:500])
        query = parse_qs(urlsplit(response.headers["location"]).query)
        assert "code" in query, response.headers["location"]
        return query["code"][0], (query.get("state") or [None])[0]

    def issue(self, sub: str, *, resource: str, lifetime_s: int | None = None) -> str:
        """An access token from the server's own endpoints: register a client, log in as ``sub``,
        exchange the code. ``lifetime_s`` (a test-only form field the generator reads) backdates it."""
        redirect = "http://127.0.0.1:1/callback"
        with httpx.Client(base_url=self.issuer, timeout=10) as http:
            client = http.post(
                "/oauth2/clients",
                json={"redirect_uris": [redirect], "token_endpoint_auth_method": "client_secret_post"},
            ).json()
            login = http.post(
                "/oauth2/authorize",
                params={
                    "response_type": "code",
                    "client_id": client["client_id"],
                    "redirect_uri": redirect,
                    "scope": "openid",
                    "resource": resource,
                },
                data={"sub": sub},
            )
            assert login.status_code == 302, login.text[:500]
            code = parse_qs(urlsplit(login.headers["location"]).query)["code"][0]
            form = {
                "grant_type": "authorization_code",
                "code": code,
                "redirect_uri": redirect,
                "client_id": client["client_id"],
                "client_secret": client["client_secret"],
                "resource": resource,
            }
            if lifetime_s is not None:
                form["tessera_test_lifetime_s"] = str(lifetime_s)
            token = http.post("/oauth2/token", data=form)
            assert token.status_code == 200, token.text[:500]
            return token.json()["access_token"]

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)

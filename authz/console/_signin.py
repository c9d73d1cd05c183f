"""Sign-in with the organisation's OpenID provider: authorization code flow with PKCE (S256).

The console is the relying party: it sends the browser to the provider's authorization endpoint with a
fresh state, nonce and PKCE challenge, and on the callback trades the code (with the verifier) for an
ID token at the token endpoint, over a back channel. The ID token is verified exactly as the admin
service verifies it (:class:`authz.admin.oidc.OidcVerifier`) plus the nonce of this sign-in.
"""

from __future__ import annotations

import base64
import hashlib
from typing import Any
from urllib.parse import quote, urlencode

from authz.admin.oidc import OidcVerifier, discover
from authz.console._sessions import PendingLogin
from authz.console._settings import ConsoleSettings
from authz.errors import DependencyError, Unauthenticated


def pkce_challenge(verifier: str) -> str:
    """RFC 7636 S256: BASE64URL(SHA256(verifier)) without padding."""
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


class SignIn:
    def __init__(self, settings: ConsoleSettings, verifier: OidcVerifier):
        self._settings = settings
        self._verifier = verifier
        self._outbound = verifier.outbound
        self._endpoints: dict[str, Any] | None = None

    async def endpoints(self) -> dict[str, Any]:
        if self._endpoints is None:
            doc = await discover(self._settings.oidc.issuer, self._outbound)
            for name in ("authorization_endpoint", "token_endpoint"):
                if not isinstance(doc.get(name), str):
                    raise ValueError(f"the provider's discovery document has no {name}")
            self._endpoints = doc
        if not self._verifier.ready.is_set():
            await self._verifier.start()
        return self._endpoints

    async def authorization_url(self, login: PendingLogin) -> str:
        endpoints = await self.endpoints()
        query = {
            "response_type": "code",
            "client_id": self._settings.oidc.client_id,
            "redirect_uri": self._settings.redirect_uri,
            "scope": "openid email profile",
            "state": login.state,
            "nonce": login.nonce,
            "code_challenge": pkce_challenge(login.verifier),
            "code_challenge_method": "S256",
        }
        return f"{endpoints['authorization_endpoint']}?{urlencode(query)}"

    async def exchange(self, code: str, login: PendingLogin) -> tuple[str, dict[str, Any]]:
        """The verified ID token (and its claims) the code is worth; Unauthenticated otherwise."""
        endpoints = await self.endpoints()
        form = {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": self._settings.redirect_uri,
            "client_id": self._settings.oidc.client_id,
            "code_verifier": login.verifier,
        }
        headers = {"content-type": "application/x-www-form-urlencoded", "accept": "application/json"}
        if self._settings.client_secret is not None:  # client_secret_basic (RFC 6749 §2.3.1)
            secret = self._settings.client_secret.reveal().decode()
            pair = f"{quote(self._settings.oidc.client_id, safe='')}:{quote(secret, safe='')}"
            headers["authorization"] = "Basic " + base64.b64encode(pair.encode()).decode()
        try:
            response = await self._outbound.request(
                "POST", endpoints["token_endpoint"], content=urlencode(form).encode(), headers=headers
            )
        except DependencyError as exc:
            raise Unauthenticated(
                f"the provider's token endpoint failed: {exc}", reason="OIDC_EXCHANGE"
            ) from None
        if response.status_code != 200:
            raise Unauthenticated(
                f"the provider refused the code ({response.status_code})", reason="OIDC_EXCHANGE"
            )
        try:
            id_token = response.json()["id_token"]
        except (ValueError, KeyError, TypeError):
            raise Unauthenticated("the provider's answer has no ID token", reason="OIDC_EXCHANGE") from None
        if not isinstance(id_token, str):
            raise Unauthenticated("the provider's answer has no ID token", reason="OIDC_EXCHANGE")
        return id_token, self._verifier.claims(id_token, nonce=login.nonce)

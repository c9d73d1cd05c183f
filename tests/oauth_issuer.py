"""A stand-in OAuth authorization server for tests: it publishes a JWKS over real HTTP on 127.0.0.1 and
signs access tokens with its keys (what a real issuer's token endpoint would hand out). Named as a
stand-in: no OAuth server package runs here, and only the JWKS and the token format matter to Tessera."""

from __future__ import annotations

import json
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa


class StandInIssuer:
    def __init__(self) -> None:
        self.keys: dict[str, Any] = {}
        self.rotate()
        issuer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                body = json.dumps(issuer.jwks()).encode()
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self.issuer = f"{self.url}/issuer"
        self.jwks_uri = f"{self.url}/jwks"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def rotate(self) -> str:
        """A new signing key (published from now on); returns its key id."""
        kid = uuid.uuid4().hex[:8]
        self.keys[kid] = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.current = kid
        return kid

    def jwks(self) -> dict[str, Any]:
        keys = []
        for kid, key in self.keys.items():
            jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()))
            keys.append({**jwk, "kid": kid, "use": "sig", "alg": "RS256"})
        return {"keys": keys}

    def token(self, audience: str, *, kid: str | None = None, lifetime_s: int = 600, **claims: Any) -> str:
        now = int(time.time())
        payload = {"iss": self.issuer, "aud": audience, "iat": now, "exp": now + lifetime_s, "sub": "agent-7"}
        payload.update(claims)
        payload = {k: v for k, v in payload.items() if v is not None}
        kid = kid or self.current
        return jwt.encode(payload, self.keys[kid], algorithm="RS256", headers={"kid": kid})

    def issuers_yaml(self, audience: str, tenant: str = "demo") -> str:
        return (
            "issuers:\n"
            f"  - issuer: {self.issuer}\n"
            f"    jwks_uri: {self.jwks_uri}\n"
            f"    audience: {audience}\n"
            f"    tenant: {tenant}\n"
        )

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()

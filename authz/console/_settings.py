"""The console's settings: ``TESSERA_CONSOLE_*``, and the provider's from :mod:`authz.admin.oidc`."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from authz.admin.oidc import OidcSettings
from authz.errors import ConfigError
from authz.secrets import Secret


@dataclass(frozen=True, slots=True)
class ConsoleSettings:
    oidc: OidcSettings
    #: Where the browser reaches the console's gateway (Envoy), e.g. ``https://tessera.example.com``:
    #: the OIDC redirect URI is ``{public_url}/console/auth/callback``.
    public_url: str
    #: The admin service's gRPC address: the console calls the same API scripts call.
    admin_address: str = "127.0.0.1:9192"
    host: str = "127.0.0.1"
    port: int = 9470
    #: A confidential client's secret (sent at the token endpoint); None: a public client (PKCE only).
    client_secret: Secret | None = None
    #: Cookies with the Secure attribute (off only for plain-HTTP development on a non-local host).
    secure_cookies: bool = True
    #: A session ends after this long at most (sooner when the ID token expires).
    session_ttl_s: float = 8 * 3600.0
    #: How often the approvals queue refreshes itself.
    poll_s: float = 2.0

    @property
    def redirect_uri(self) -> str:
        return f"{self.public_url}/console/auth/callback"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> ConsoleSettings:
        env = os.environ if env is None else env
        oidc = OidcSettings.from_env(env)
        if oidc is None:
            raise ConfigError("the console signs people in with OIDC: set TESSERA_OIDC_ISSUER")
        public = env.get("TESSERA_CONSOLE_PUBLIC_URL", "").strip().rstrip("/")
        if not public.startswith(("http://", "https://")):
            raise ConfigError(f"TESSERA_CONSOLE_PUBLIC_URL must be an http(s) URL, got {public!r}")
        secret = env.get("TESSERA_CONSOLE_CLIENT_SECRET")

        def number(name: str, default: float) -> float:
            raw = env.get(name)
            try:
                value = float(raw) if raw else default
            except ValueError:
                raise ConfigError(f"{name} must be a number, got {raw!r}") from None
            if value <= 0:
                raise ConfigError(f"{name} must be positive")
            return value

        admin_port = env.get("TESSERA_ADMIN_PORT", "9192")
        return cls(
            oidc=oidc,
            public_url=public,
            admin_address=env.get("TESSERA_CONSOLE_ADMIN_ADDRESS", f"127.0.0.1:{admin_port}"),
            host=env.get("TESSERA_HOST", "127.0.0.1"),
            port=int(number("TESSERA_CONSOLE_PORT", 9470)),
            client_secret=Secret(secret) if secret else None,
            secure_cookies=env.get("TESSERA_CONSOLE_SECURE_COOKIES", "true").lower()
            not in ("0", "false", "no"),
            session_ttl_s=number("TESSERA_CONSOLE_SESSION_TTL_S", 8 * 3600.0),
            poll_s=number("TESSERA_CONSOLE_POLL_S", 2.0),
        )

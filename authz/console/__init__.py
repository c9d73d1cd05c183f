"""The operator console: HTML over the admin API, served under ``/console`` behind Envoy.

People sign in with the organisation's OpenID provider (authorization code + PKCE); the console then
calls the admin API (the gRPC services scripts use) with the person's ID token, which the admin service
verifies as a principal beside admin keys (:mod:`authz.admin.oidc`): role and tenant scope come from the
token's claims, every action is authorized and audited like any admin call, and there is no private
back door. Pages: approvals (live queue, decide with a note, history), audit (filters, event detail,
chain verification and checkpoints, export) and a tenants overview.

Run it with ``tessera serve-console`` (``TESSERA_CONSOLE_*`` and ``TESSERA_OIDC_*``, see
docs/configuration.md); Envoy routes ``/console`` to it (``render_envoy_config(console_endpoint=...)``).
"""

from authz.console._app import Console
from authz.console._serve import serve_console
from authz.console._settings import ConsoleSettings

__all__ = ["Console", "ConsoleSettings", "serve_console"]

"""``tessera serve-console``: the console's HTTP server (uvicorn) until SIGTERM/SIGINT."""

from __future__ import annotations

import asyncio
import logging

from authz.console._app import Console
from authz.console._settings import ConsoleSettings

log = logging.getLogger("tessera.console")


async def serve_console(settings: ConsoleSettings | None = None) -> None:
    import uvicorn

    settings = settings or ConsoleSettings.from_env()
    console = Console(settings)
    keys = asyncio.create_task(console.verifier.run(), name="oidc-keys")
    server = uvicorn.Server(
        uvicorn.Config(
            console.app(),
            host=settings.host,
            port=settings.port,
            log_level="warning",
            access_log=False,
            # Envoy's x-forwarded-for is read by the console itself (client_of), for the admin API only.
            proxy_headers=False,
            server_header=False,
        )
    )
    log.info("console listening on %s:%s (public URL %s)", settings.host, settings.port, settings.public_url)
    try:
        await server.serve()
    finally:
        keys.cancel()
        await console.close()

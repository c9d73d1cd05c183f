"""Change notification: every store write that replicas cache (policies, revocations, settings) bumps a
counter and NOTIFYs the channel replicas LISTEN on. A leaf module, so every store part can bump without
importing the store that composes them."""

from __future__ import annotations

import psycopg

CHANNEL = "tessera_changes"

_BUMP = {
    kind: f"UPDATE store_versions SET {kind} = {kind} + 1 WHERE id = 1; NOTIFY {CHANNEL}, '{kind}'"
    for kind in ("policies", "revocations", "settings")
}


async def bump(conn: psycopg.AsyncConnection, kind: str) -> None:
    """Count a change and tell every listening replica; both take effect when the transaction commits."""
    await conn.execute(_BUMP[kind])  # type: ignore[arg-type]  # no parameters: one round trip, two statements

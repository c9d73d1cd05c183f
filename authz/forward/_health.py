"""Forwarder health as data (for ``tessera forward status`` and the admin API's ``ForwarderHealth``)."""

from __future__ import annotations

import time
from dataclasses import dataclass

from authz.storage.models import ForwarderCursor
from authz.storage.protocols import Store


@dataclass(frozen=True, slots=True)
class SinkHealth:
    """One (sink, tenant) cursor against its chain head; ``lag_seconds`` is the age of the oldest
    undelivered event; ``lease`` is the sink's lease ``(holder, expires_at)`` as stored."""

    cursor: ForwarderCursor
    head_seq: int
    lag_events: int
    lag_seconds: float
    dead_letters: int
    lease: tuple[str, float] | None


async def forwarder_health(
    store: Store, *, tenant: str | None = None, sink: str | None = None, now: float | None = None
) -> list[SinkHealth]:
    now = time.time() if now is None else now
    dead = await store.list_dead_letters(tenant, sink)
    leases: dict[str, tuple[str, float] | None] = {}
    rows = []
    for cursor in await store.forwarder_cursors(sink):
        if tenant is not None and cursor.tenant != tenant:
            continue
        head = await store.audit_head(cursor.tenant)
        head_seq = head[0] if head else 0
        lag_seconds = 0.0
        if head_seq > cursor.seq:
            async for oldest in store.iter_events(cursor.tenant, after_seq=cursor.seq, batch=1):
                lag_seconds = max(0.0, now - oldest.time_ms / 1000)
                break
        if cursor.sink not in leases:
            leases[cursor.sink] = await store.forwarder_lease(cursor.sink)
        rows.append(
            SinkHealth(
                cursor=cursor,
                head_seq=head_seq,
                lag_events=max(0, head_seq - cursor.seq),
                lag_seconds=lag_seconds,
                dead_letters=sum(1 for d in dead if d.sink == cursor.sink and d.tenant == cursor.tenant),
                lease=leases[cursor.sink],
            )
        )
    return rows

"""The :class:`~authz.storage.protocols.AdminStore` half of the PostgreSQL store (in ``PostgresStore``).

Same semantics as :mod:`authz.storage.sqlite._admin`; what differs is how they hold with several
replicas: a compare-and-set (draft update, key revocation) reads its row ``FOR UPDATE``; the first-key
bootstrap and the "last all-tenants admin key" check take a transaction advisory lock, so concurrent
starts or revocations serialise; notification claims lock their rows ``FOR UPDATE SKIP LOCKED`` (two
replicas polling at once claim disjoint approvals).
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING, Any

import psycopg

from authz.errors import AlreadyExists, FailedPrecondition, NotFound
from authz.storage.models import AdminKey, Approval, PolicyDraft
from authz.storage.protocols import AuditRecord
from authz.storage.retry import retry_delay

_KEY_COLUMNS = (
    "key_id, name, role, tenant, secret_sha256, created_at, created_by, revoked_at, revoked_by, principal"
)
_INSERT_KEY = f"INSERT INTO admin_keys ({_KEY_COLUMNS}) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
_DRAFT_COLUMNS = "tenant, name, source, content_hash, created_at, updated_at, updated_by"
_AUDIT_COLUMNS = "tenant, seq, time_ms, decision, agent, event, prev_hash, hash"
# pg_advisory_xact_lock key serialising admin-key bootstrap and revocation ("tsadmkey").
_ADMIN_KEYS_LOCK = 0x747361646D6B6579


class PostgresAdminStore:
    """Admin state; needs the host's ``_connection()``, ``_fetch()`` and approval helpers."""

    if TYPE_CHECKING:
        _APPROVAL_COLUMNS: str

        def _connection(self) -> AbstractAsyncContextManager[psycopg.AsyncConnection]: ...

        async def _fetch(self, sql: str, params: Sequence[Any] = ()) -> list[tuple]: ...

        @staticmethod
        def _approval(row: tuple) -> Approval: ...

    # -- admin keys ------------------------------------------------------------------------------------
    async def create_admin_key(self, key: AdminKey) -> None:
        try:
            async with self._connection() as conn:
                await conn.execute(
                    _INSERT_KEY,
                    _key_row(key),
                )
        except AlreadyExists:
            raise AlreadyExists(f"admin key {key.key_id!r} exists already") from None

    async def bootstrap_admin_key(self, key: AdminKey) -> bool:
        async with self._connection() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock(%s)", (_ADMIN_KEYS_LOCK,))
            cur = await conn.execute("SELECT 1 FROM admin_keys LIMIT 1")
            if await cur.fetchone() is not None:
                return False
            await conn.execute(
                _INSERT_KEY,
                _key_row(key),
            )
            return True

    async def get_admin_key(self, key_id: str) -> AdminKey | None:
        rows = await self._fetch(f"SELECT {_KEY_COLUMNS} FROM admin_keys WHERE key_id = %s", (key_id,))
        return AdminKey(*rows[0]) if rows else None

    async def list_admin_keys(
        self, tenant: str | None = None, include_revoked: bool = False
    ) -> list[AdminKey]:
        where, params = [], []
        if tenant is not None:
            where.append("tenant = %s")
            params.append(tenant)
        if not include_revoked:
            where.append("revoked_at IS NULL")
        clause = (" WHERE " + " AND ".join(where)) if where else ""
        rows = await self._fetch(
            f"SELECT {_KEY_COLUMNS} FROM admin_keys{clause} ORDER BY created_at, key_id", params
        )
        return [AdminKey(*row) for row in rows]

    async def revoke_admin_key(self, key_id: str, revoked_by: str, now: float) -> AdminKey:
        async with self._connection() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock(%s)", (_ADMIN_KEYS_LOCK,))
            cur = await conn.execute(
                f"SELECT {_KEY_COLUMNS} FROM admin_keys WHERE key_id = %s FOR UPDATE", (key_id,)
            )
            row = await cur.fetchone()
            if row is None:
                raise NotFound(f"admin key {key_id!r} not found")
            key = AdminKey(*row)
            if not key.active:
                return key
            if key.role == "admin" and key.tenant is None:
                cur = await conn.execute(
                    "SELECT COUNT(*) FROM admin_keys WHERE role = 'admin' AND tenant IS NULL "
                    "AND revoked_at IS NULL AND key_id <> %s",
                    (key_id,),
                )
                (others,) = await cur.fetchone()  # type: ignore[misc]
                if others == 0:
                    raise FailedPrecondition(
                        f"admin key {key_id!r} is the last active admin key for all tenants; "
                        "create another one first"
                    )
            await conn.execute(
                "UPDATE admin_keys SET revoked_at = %s, revoked_by = %s WHERE key_id = %s",
                (now, revoked_by, key_id),
            )
        return AdminKey(*row[:7], revoked_at=now, revoked_by=revoked_by, principal=row[9])

    # -- policy drafts ---------------------------------------------------------------------------------
    async def create_draft(self, draft: PolicyDraft) -> None:
        d = draft
        try:
            async with self._connection() as conn:
                await conn.execute(
                    f"INSERT INTO policy_drafts ({_DRAFT_COLUMNS}) VALUES (%s, %s, %s, %s, %s, %s, %s)",
                    (d.tenant, d.name, d.source, d.content_hash, d.created_at, d.updated_at, d.updated_by),
                )
        except AlreadyExists:
            raise AlreadyExists(f"tenant {d.tenant!r} has a draft named {d.name!r} already") from None

    async def update_draft(
        self,
        tenant: str,
        name: str,
        source: str,
        content_hash: str,
        actor: str,
        now: float,
        expected_hash: str | None = None,
    ) -> PolicyDraft:
        async with self._connection() as conn, conn.transaction():
            cur = await conn.execute(
                f"SELECT {_DRAFT_COLUMNS} FROM policy_drafts WHERE tenant = %s AND name = %s FOR UPDATE",
                (tenant, name),
            )
            row = await cur.fetchone()
            if row is None:
                raise NotFound(f"tenant {tenant!r} has no draft named {name!r}")
            if expected_hash is not None and row[3] != expected_hash:
                raise FailedPrecondition(
                    f"draft {name!r} has content hash {row[3]}, not {expected_hash}: it was changed meanwhile"
                )
            await conn.execute(
                "UPDATE policy_drafts SET source = %s, content_hash = %s, updated_at = %s, updated_by = %s "
                "WHERE tenant = %s AND name = %s",
                (source, content_hash, now, actor, tenant, name),
            )
        return PolicyDraft(tenant, name, source, content_hash, row[4], now, actor)

    async def get_draft(self, tenant: str, name: str) -> PolicyDraft | None:
        rows = await self._fetch(
            f"SELECT {_DRAFT_COLUMNS} FROM policy_drafts WHERE tenant = %s AND name = %s", (tenant, name)
        )
        return PolicyDraft(*rows[0]) if rows else None

    async def list_drafts(self, tenant: str) -> list[PolicyDraft]:
        rows = await self._fetch(
            f"SELECT {_DRAFT_COLUMNS} FROM policy_drafts WHERE tenant = %s ORDER BY name", (tenant,)
        )
        return [PolicyDraft(*row) for row in rows]

    async def delete_draft(self, tenant: str, name: str) -> bool:
        async with self._connection() as conn:
            cur = await conn.execute(
                "DELETE FROM policy_drafts WHERE tenant = %s AND name = %s", (tenant, name)
            )
            return cur.rowcount == 1

    # -- approval webhook outbox -----------------------------------------------------------------------
    async def claim_approval_notifications(
        self, tenants: Sequence[str], now: float, retry_s: float, limit: int = 100
    ) -> list[Approval]:
        if not tenants:
            return []
        async with self._connection() as conn, conn.transaction():
            cur = await conn.execute(
                f"SELECT {self._APPROVAL_COLUMNS}, notify_attempts FROM approvals "
                "WHERE tenant = ANY(%s::text[]) AND status = 'pending' AND notified_at IS NULL "
                "AND expires_at > %s AND notify_next_at <= %s ORDER BY created_at LIMIT %s "
                "FOR UPDATE SKIP LOCKED",
                (list(tenants), now, now, limit),
            )
            rows = await cur.fetchall()
            for row in rows:
                await conn.execute(
                    "UPDATE approvals SET notify_next_at = %s, notify_attempts = notify_attempts + 1 "
                    "WHERE approval_id = %s",
                    (now + retry_delay(retry_s, row[-1]), row[0]),
                )
        return [self._approval(row[:-1]) for row in rows]

    async def mark_approval_notified(self, tenant: str, approval_id: str, now: float) -> None:
        async with self._connection() as conn:
            await conn.execute(
                "UPDATE approvals SET notified_at = %s WHERE tenant = %s AND approval_id = %s",
                (now, tenant, approval_id),
            )

    # -- read models -----------------------------------------------------------------------------------
    async def decision_counts(self, tenants: Sequence[str], since_ms: int) -> dict[str, dict[str, int]]:
        result: dict[str, dict[str, int]] = {tenant: {} for tenant in tenants}
        if not tenants:
            return result
        rows = await self._fetch(
            "SELECT tenant, decision, COUNT(*) FROM audit_events "
            "WHERE tenant = ANY(%s::text[]) AND time_ms >= %s GROUP BY tenant, decision",
            (list(tenants), since_ms),
        )
        for tenant, decision, count in rows:
            result[tenant][decision] = int(count)
        return result

    async def latest_events(
        self, tenant: str, limit: int, decisions: Sequence[str], before_seq: int | None = None
    ) -> list[AuditRecord]:
        if limit < 1 or not decisions:
            return []
        bound = before_seq if before_seq is not None else 2**62
        rows = await self._fetch(
            f"SELECT {_AUDIT_COLUMNS} FROM audit_events WHERE tenant = %s AND seq < %s "
            "AND decision = ANY(%s::text[]) ORDER BY seq DESC LIMIT %s",
            (tenant, bound, list(decisions), limit),
        )
        return [AuditRecord(*row) for row in rows]

    async def usage_counters(self, key_prefix: str, window_start: int) -> dict[str, float]:
        rows = await self._fetch(
            "SELECT counter_key, used FROM budget_counters WHERE window_start = %s "
            "AND left(counter_key, %s) = %s ORDER BY counter_key",
            (window_start, len(key_prefix), key_prefix),
        )
        return {key: float(used) for key, used in rows}


def _key_row(key: AdminKey) -> tuple:
    return (
        key.key_id,
        key.name,
        key.role,
        key.tenant,
        key.secret_sha256,
        key.created_at,
        key.created_by,
        key.revoked_at,
        key.revoked_by,
        key.principal,
    )

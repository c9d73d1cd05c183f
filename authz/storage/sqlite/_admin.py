"""The :class:`~authz.storage.protocols.AdminStore` half of the SQLite store (mixed into ``SQLiteStore``).

Admin keys, policy drafts, the approval-webhook outbox and the admin service's read models. Every
write is one ``BEGIN IMMEDIATE`` transaction, so the checks it makes (the last all-tenants admin key,
a draft's expected hash, a notification lease) hold across processes sharing the file.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from authz.errors import AlreadyExists, FailedPrecondition, NotFound
from authz.storage.models import AdminKey, Approval, PolicyDraft
from authz.storage.protocols import AuditRecord
from authz.storage.retry import retry_delay

if TYPE_CHECKING:
    from authz.storage.sqlite._db import SQLiteDatabase

_KEY_COLUMNS = (
    "key_id, name, role, tenant, secret_sha256, created_at, created_by, revoked_at, revoked_by, principal"
)
_INSERT_KEY = f"INSERT INTO admin_keys ({_KEY_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
_DRAFT_COLUMNS = "tenant, name, source, content_hash, created_at, updated_at, updated_by"
_AUDIT_COLUMNS = "tenant, seq, time_ms, decision, agent, event, prev_hash, hash"


class SQLiteAdminStore:
    """Admin state on ``self.db`` (a :class:`~authz.storage.sqlite._db.SQLiteDatabase`)."""

    db: SQLiteDatabase
    _APPROVAL_COLUMNS: str  # provided by SQLiteStore, as is _approval()

    if TYPE_CHECKING:

        @staticmethod
        def _approval(row: tuple) -> Approval: ...

    # -- admin keys ------------------------------------------------------------------------------------
    async def create_admin_key(self, key: AdminKey) -> None:
        with self.db.transaction() as conn:
            if conn.execute("SELECT 1 FROM admin_keys WHERE key_id = ?", (key.key_id,)).fetchone():
                raise AlreadyExists(f"admin key {key.key_id!r} exists already")
            conn.execute(
                _INSERT_KEY,
                _key_row(key),
            )

    async def bootstrap_admin_key(self, key: AdminKey) -> bool:
        with self.db.transaction() as conn:
            if conn.execute("SELECT 1 FROM admin_keys LIMIT 1").fetchone():
                return False
            conn.execute(
                _INSERT_KEY,
                _key_row(key),
            )
            return True

    async def get_admin_key(self, key_id: str) -> AdminKey | None:
        rows = self.db.query(f"SELECT {_KEY_COLUMNS} FROM admin_keys WHERE key_id = ?", (key_id,))
        return AdminKey(*rows[0]) if rows else None

    async def list_admin_keys(
        self, tenant: str | None = None, include_revoked: bool = False
    ) -> list[AdminKey]:
        where, params = [], []
        if tenant is not None:
            where.append("tenant = ?")
            params.append(tenant)
        if not include_revoked:
            where.append("revoked_at IS NULL")
        clause = (" WHERE " + " AND ".join(where)) if where else ""
        rows = self.db.query(
            f"SELECT {_KEY_COLUMNS} FROM admin_keys{clause} ORDER BY created_at, key_id", params
        )
        return [AdminKey(*row) for row in rows]

    async def revoke_admin_key(self, key_id: str, revoked_by: str, now: float) -> AdminKey:
        with self.db.transaction() as conn:
            row = conn.execute(
                f"SELECT {_KEY_COLUMNS} FROM admin_keys WHERE key_id = ?", (key_id,)
            ).fetchone()
            if row is None:
                raise NotFound(f"admin key {key_id!r} not found")
            key = AdminKey(*row)
            if not key.active:
                return key
            if key.role == "admin" and key.tenant is None:
                (others,) = conn.execute(
                    "SELECT COUNT(*) FROM admin_keys WHERE role = 'admin' AND tenant IS NULL "
                    "AND revoked_at IS NULL AND key_id != ?",
                    (key_id,),
                ).fetchone()
                if others == 0:
                    raise FailedPrecondition(
                        f"admin key {key_id!r} is the last active admin key for all tenants; "
                        "create another one first"
                    )
            conn.execute(
                "UPDATE admin_keys SET revoked_at = ?, revoked_by = ? WHERE key_id = ?",
                (now, revoked_by, key_id),
            )
        return AdminKey(*row[:7], revoked_at=now, revoked_by=revoked_by, principal=row[9])

    # -- policy drafts ---------------------------------------------------------------------------------
    async def create_draft(self, draft: PolicyDraft) -> None:
        d = draft
        with self.db.transaction() as conn:
            if conn.execute(
                "SELECT 1 FROM policy_drafts WHERE tenant = ? AND name = ?", (d.tenant, d.name)
            ).fetchone():
                raise AlreadyExists(f"tenant {d.tenant!r} has a draft named {d.name!r} already")
            conn.execute(
                f"INSERT INTO policy_drafts ({_DRAFT_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (d.tenant, d.name, d.source, d.content_hash, d.created_at, d.updated_at, d.updated_by),
            )

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
        with self.db.transaction() as conn:
            row = conn.execute(
                f"SELECT {_DRAFT_COLUMNS} FROM policy_drafts WHERE tenant = ? AND name = ?", (tenant, name)
            ).fetchone()
            if row is None:
                raise NotFound(f"tenant {tenant!r} has no draft named {name!r}")
            if expected_hash is not None and row[3] != expected_hash:
                raise FailedPrecondition(
                    f"draft {name!r} has content hash {row[3]}, not {expected_hash}: it was changed meanwhile"
                )
            conn.execute(
                "UPDATE policy_drafts SET source = ?, content_hash = ?, updated_at = ?, updated_by = ? "
                "WHERE tenant = ? AND name = ?",
                (source, content_hash, now, actor, tenant, name),
            )
        return PolicyDraft(tenant, name, source, content_hash, row[4], now, actor)

    async def get_draft(self, tenant: str, name: str) -> PolicyDraft | None:
        rows = self.db.query(
            f"SELECT {_DRAFT_COLUMNS} FROM policy_drafts WHERE tenant = ? AND name = ?", (tenant, name)
        )
        return PolicyDraft(*rows[0]) if rows else None

    async def list_drafts(self, tenant: str) -> list[PolicyDraft]:
        rows = self.db.query(
            f"SELECT {_DRAFT_COLUMNS} FROM policy_drafts WHERE tenant = ? ORDER BY name", (tenant,)
        )
        return [PolicyDraft(*row) for row in rows]

    async def delete_draft(self, tenant: str, name: str) -> bool:
        with self.db.transaction() as conn:
            conn.execute("DELETE FROM policy_drafts WHERE tenant = ? AND name = ?", (tenant, name))
            return conn.changes() == 1

    # -- approval webhook outbox -----------------------------------------------------------------------
    async def claim_approval_notifications(
        self, tenants: Sequence[str], now: float, retry_s: float, limit: int = 100
    ) -> list[Approval]:
        if not tenants:
            return []
        marks = ",".join("?" * len(tenants))
        with self.db.transaction() as conn:
            rows = conn.execute(
                f"SELECT {self._APPROVAL_COLUMNS}, notify_attempts FROM approvals "
                f"WHERE tenant IN ({marks}) AND status = 'pending' AND notified_at IS NULL "
                "AND expires_at > ? AND notify_next_at <= ? ORDER BY created_at LIMIT ?",
                (*tenants, now, now, limit),
            ).fetchall()
            for row in rows:
                conn.execute(
                    "UPDATE approvals SET notify_next_at = ?, notify_attempts = notify_attempts + 1 "
                    "WHERE approval_id = ?",
                    (now + retry_delay(retry_s, row[-1]), row[0]),
                )
        return [self._approval(row[:-1]) for row in rows]

    async def mark_approval_notified(self, tenant: str, approval_id: str, now: float) -> None:
        with self.db.transaction() as conn:
            conn.execute(
                "UPDATE approvals SET notified_at = ? WHERE tenant = ? AND approval_id = ?",
                (now, tenant, approval_id),
            )

    # -- read models -----------------------------------------------------------------------------------
    async def decision_counts(self, tenants: Sequence[str], since_ms: int) -> dict[str, dict[str, int]]:
        result: dict[str, dict[str, int]] = {}
        for tenant in tenants:  # one index range scan (tenant, time_ms) each
            rows = self.db.query(
                "SELECT decision, COUNT(*) FROM audit_events WHERE tenant = ? AND time_ms >= ? "
                "GROUP BY decision",
                (tenant, since_ms),
            )
            result[tenant] = {decision: count for decision, count in rows}
        return result

    async def latest_events(
        self, tenant: str, limit: int, decisions: Sequence[str], before_seq: int | None = None
    ) -> list[AuditRecord]:
        if limit < 1 or not decisions:
            return []
        marks = ",".join("?" * len(decisions))
        bound = before_seq if before_seq is not None else 2**62
        rows = self.db.query(
            f"SELECT {_AUDIT_COLUMNS} FROM audit_events WHERE tenant = ? AND seq < ? "
            f"AND decision IN ({marks}) ORDER BY seq DESC LIMIT ?",
            (tenant, bound, *decisions, limit),
        )
        return [AuditRecord(*row) for row in rows]

    async def usage_counters(self, key_prefix: str, window_start: int) -> dict[str, float]:
        rows = self.db.query(
            "SELECT counter_key, used FROM budget_counters WHERE window_start = ? "
            "AND substr(counter_key, 1, ?) = ? ORDER BY counter_key",
            (window_start, len(key_prefix), key_prefix),
        )
        return {key: used for key, used in rows}


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

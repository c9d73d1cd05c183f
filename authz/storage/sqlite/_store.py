"""SQLite store: the embedded default (one file in ``./var``, WAL, zero setup).

One connection per process, used from the event-loop thread: each statement is tens of microseconds,
cheaper than a hop to a worker thread. Several processes may share the file: every write runs in a
``BEGIN IMMEDIATE`` transaction, so budget reservations stay exact across processes too.

Durability: WAL with ``synchronous=NORMAL`` survives a process crash (kill -9) for every committed
transaction; ``TESSERA_SQLITE_SYNCHRONOUS=FULL`` also survives power loss at some throughput cost.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path

import apsw

from authz.errors import FailedPrecondition, NotFound
from authz.storage.approvals import add_decision
from authz.storage.models import (
    Approval,
    ApprovalClaim,
    PolicyVersion,
    PruneResult,
    Reservation,
    ReserveResult,
    Revocation,
    StoreVersions,
    TenantSettings,
    claims_of,
)
from authz.storage.sqlite._admin import SQLiteAdminStore
from authz.storage.sqlite._audit import SQLiteAuditStore
from authz.storage.sqlite._db import SQLiteDatabase
from authz.storage.sqlite._forward import SQLiteForwarderStore
from authz.storage.sqlite._writers import SQLiteMemoryWriterStore


def _consume(conn: apsw.Connection, claim: ApprovalClaim) -> bool:
    conn.execute(
        "UPDATE approvals SET status = 'consumed' "
        "WHERE tenant = ? AND approval_id = ? AND status = 'approved' AND expires_at > ?",
        (claim.tenant, claim.approval_id, claim.now),
    )
    return conn.changes() == 1


#: One more exchange of a subject token, unless its limit is reached (then no row comes back).
_COUNT_EXCHANGE = (
    "INSERT INTO oauth_exchanges (tenant, jti, uses, expires_at) VALUES (?, ?, 1, ?) "
    "ON CONFLICT (tenant, jti) DO UPDATE SET uses = oauth_exchanges.uses + 1, "
    "expires_at = MAX(oauth_exchanges.expires_at, excluded.expires_at) "
    "WHERE oauth_exchanges.uses < ? RETURNING uses"
)


class _Exhausted(Exception):
    """Unwinds a reservation transaction (rolling it back) when one counter would pass its limit."""

    def __init__(self, result: ReserveResult):
        self.result = result


def _bump(conn: apsw.Connection, column: str) -> None:
    conn.execute(f"UPDATE store_versions SET {column} = {column} + 1 WHERE id = 1")


class SQLiteStore(SQLiteAuditStore, SQLiteAdminStore, SQLiteForwarderStore, SQLiteMemoryWriterStore):
    """Every store Protocol of :mod:`authz.storage.protocols` on one SQLite database."""

    def __init__(self, path: str | Path, *, synchronous: str | None = None, checkpointer: bool = True):
        # checkpointer=False: SQLite's own automatic checkpoints (in the committing thread) instead.
        self.db = SQLiteDatabase(path, synchronous=synchronous, checkpointer=checkpointer)

    # -- tenants ---------------------------------------------------------------------------------------
    async def put_tenant(self, tenant: str, settings: TenantSettings) -> None:
        with self.db.transaction() as conn:
            conn.execute(
                "INSERT INTO tenants (tenant, settings, updated_at) VALUES (?, ?, ?) "
                "ON CONFLICT (tenant) DO UPDATE SET settings = excluded.settings, "
                "updated_at = excluded.updated_at",
                (tenant, json.dumps(settings.to_json(), sort_keys=True), time.time()),
            )
            _bump(conn, "settings")

    async def get_tenant(self, tenant: str) -> TenantSettings | None:
        rows = self.db.query("SELECT settings FROM tenants WHERE tenant = ?", (tenant,))
        return TenantSettings.from_json(json.loads(rows[0][0])) if rows else None

    async def list_tenants(self) -> dict[str, TenantSettings]:
        rows = self.db.query("SELECT tenant, settings FROM tenants ORDER BY tenant")
        return {tenant: TenantSettings.from_json(json.loads(raw)) for tenant, raw in rows}

    # -- policies --------------------------------------------------------------------------------------
    async def promote_policy(self, tenant: str, source: str, content_hash: str, actor: str) -> PolicyVersion:
        now = time.time()
        with self.db.transaction() as conn:
            (latest,) = conn.execute(
                "SELECT COALESCE(MAX(version), 0) FROM policies WHERE tenant = ?", (tenant,)
            ).fetchone()
            conn.execute("UPDATE policies SET active = 0 WHERE tenant = ? AND active = 1", (tenant,))
            conn.execute(
                "INSERT INTO policies "
                "(tenant, version, source, content_hash, created_at, created_by, active) "
                "VALUES (?, ?, ?, ?, ?, ?, 1)",
                (tenant, latest + 1, source, content_hash, now, actor),
            )
            _bump(conn, "policies")
        return PolicyVersion(tenant, latest + 1, source, content_hash, now, actor, True)

    async def activate_policy(self, tenant: str, version: int, actor: str) -> PolicyVersion:
        with self.db.transaction() as conn:
            row = conn.execute(
                "SELECT source, content_hash, created_at, created_by FROM policies "
                "WHERE tenant = ? AND version = ?",
                (tenant, version),
            ).fetchone()
            if row is None:
                raise NotFound(f"tenant {tenant!r} has no policy version {version}")
            conn.execute("UPDATE policies SET active = 0 WHERE tenant = ? AND active = 1", (tenant,))
            conn.execute("UPDATE policies SET active = 1 WHERE tenant = ? AND version = ?", (tenant, version))
            _bump(conn, "policies")
        return PolicyVersion(tenant, version, row[0], row[1], row[2], row[3], True)

    async def active_policies(self) -> dict[str, PolicyVersion]:
        rows = self.db.query(
            "SELECT tenant, version, source, content_hash, created_at, created_by "
            "FROM policies WHERE active = 1"
        )
        return {r[0]: PolicyVersion(*r, active=True) for r in rows}

    async def policy_history(self, tenant: str) -> list[PolicyVersion]:
        rows = self.db.query(
            "SELECT tenant, version, source, content_hash, created_at, created_by, active FROM policies "
            "WHERE tenant = ? ORDER BY version DESC",
            (tenant,),
        )
        return [PolicyVersion(*r[:6], active=bool(r[6])) for r in rows]

    # -- revocations -----------------------------------------------------------------------------------
    async def revoke(self, revocation: Revocation) -> None:
        if revocation.kind not in ("jti", "token_id"):
            raise FailedPrecondition(f"revocation kind must be 'jti' or 'token_id', not {revocation.kind!r}")
        r = revocation
        with self.db.transaction() as conn:
            conn.execute(
                "INSERT INTO revocations (tenant, kind, value, reason, revoked_at, revoked_by) "
                "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                (r.tenant, r.kind, r.value, r.reason, r.revoked_at, r.revoked_by),
            )
            if conn.changes():
                _bump(conn, "revocations")

    async def is_revoked(self, tenant: str, jti: str, token_ids: Sequence[str]) -> bool:
        # Two seeks on the (tenant, kind, value) key: written as one OR, SQLite scanned the tenant's
        # whole revocation list on every check.
        marks = ",".join("?" * len(token_ids)) or "NULL"
        rows = self.db.query(
            "SELECT 1 FROM revocations WHERE tenant = ?1 AND kind = 'jti' AND value = ?2 UNION ALL "
            "SELECT 1 FROM revocations WHERE tenant = ?1 AND kind = 'token_id' "
            f"AND value IN ({marks}) LIMIT 1",
            (tenant, jti, *token_ids),
        )
        return bool(rows)

    async def count_exchange(
        self, tenant: str, jti: str, *, limit: int, expires_at: float, now: float
    ) -> int | None:
        with self.db.transaction() as conn:
            conn.execute("DELETE FROM oauth_exchanges WHERE expires_at < ?", (now,))
            row = conn.execute(_COUNT_EXCHANGE, (tenant, jti, expires_at, limit)).fetchone()
        return row[0] if row else None

    async def list_revocations(self, tenant: str | None = None) -> list[Revocation]:
        sql = "SELECT tenant, kind, value, reason, revoked_at, revoked_by FROM revocations"
        rows = self.db.query(
            sql + (" WHERE tenant = ?" if tenant else "") + " ORDER BY revoked_at",
            (tenant,) if tenant else (),
        )
        return [Revocation(*r) for r in rows]

    # -- budgets ---------------------------------------------------------------------------------------
    async def reserve(
        self,
        reservations: Sequence[Reservation],
        *,
        consume: ApprovalClaim | Sequence[ApprovalClaim] | None = None,
    ) -> ReserveResult:
        claims = claims_of(consume)
        if not reservations and not claims:
            return ReserveResult(ok=True)
        try:
            with self.db.transaction() as conn:
                if not all(_consume(conn, claim) for claim in claims):
                    raise _Exhausted(ReserveResult(ok=False, approval_unavailable=True))
                for r in reservations:
                    conn.execute(
                        "INSERT INTO budget_counters (counter_key, window_start, used, expires_at) "
                        "VALUES (?, ?, 0, ?) ON CONFLICT DO NOTHING",
                        (r.key, r.window_start, r.expires_at),
                    )
                    conn.execute(
                        "UPDATE budget_counters SET used = used + ? "
                        "WHERE counter_key = ? AND window_start = ? AND used + ? <= ?",
                        (r.amount, r.key, r.window_start, r.amount, r.limit),
                    )
                    if conn.changes() == 0:
                        (used,) = conn.execute(
                            "SELECT used FROM budget_counters WHERE counter_key = ? AND window_start = ?",
                            (r.key, r.window_start),
                        ).fetchone()
                        raise _Exhausted(ReserveResult(ok=False, exhausted=r, used=used))
        except _Exhausted as exhausted:  # the transaction rolled back: nothing was charged
            return exhausted.result
        return ReserveResult(ok=True)

    async def prune_expired(
        self,
        now: float,
        *,
        grace_s: float = 300.0,
        approval_retention_s: float = 86400.0,
        batch: int = 10_000,
    ) -> PruneResult:
        counters = self._prune(
            "DELETE FROM budget_counters WHERE rowid IN "
            "(SELECT rowid FROM budget_counters WHERE expires_at < ? LIMIT ?)",
            now - grace_s,
            batch,
        )
        approvals = self._prune(
            "DELETE FROM approvals WHERE approval_id IN "
            "(SELECT approval_id FROM approvals WHERE expires_at < ? LIMIT ?)",
            now - approval_retention_s,
            batch,
        )
        return PruneResult(counters, approvals)

    def _prune(self, sql: str, before: float, batch: int) -> int:
        # Short transactions: the write lock is released between batches, so checks keep flowing.
        total = 0
        while True:
            with self.db.transaction() as conn:
                conn.execute(sql, (before, batch))
                deleted = conn.changes()
            total += deleted
            if deleted < batch:
                return total

    async def usage(self, key: str, window_start: int) -> float:
        rows = self.db.query(
            "SELECT used FROM budget_counters WHERE counter_key = ? AND window_start = ?", (key, window_start)
        )
        return rows[0][0] if rows else 0.0

    # -- approvals -------------------------------------------------------------------------------------
    _APPROVAL_COLUMNS = (
        "approval_id, tenant, agent, tool, arguments_sha256, reason, status, quorum, created_at, "
        "expires_at, decision_id, decisions"
    )

    @staticmethod
    def _approval(row: tuple) -> Approval:
        return Approval(*row[:11], decisions=tuple(json.loads(row[11])))

    async def create_approval(self, approval: Approval) -> None:
        a = approval
        with self.db.transaction() as conn:
            conn.execute(
                f"INSERT INTO approvals ({self._APPROVAL_COLUMNS}) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    a.approval_id,
                    a.tenant,
                    a.agent,
                    a.tool,
                    a.arguments_sha256,
                    a.reason,
                    a.status,
                    a.quorum,
                    a.created_at,
                    a.expires_at,
                    a.decision_id,
                    json.dumps(list(a.decisions)),
                ),
            )

    async def get_approval(self, tenant: str, approval_id: str) -> Approval | None:
        rows = self.db.query(
            f"SELECT {self._APPROVAL_COLUMNS} FROM approvals WHERE tenant = ? AND approval_id = ?",
            (tenant, approval_id),
        )
        return self._approval(rows[0]) if rows else None

    async def list_approvals(self, tenant: str | None = None, status: str | None = None) -> list[Approval]:
        where, params = [], []
        if tenant:
            where.append("tenant = ?")
            params.append(tenant)
        if status:
            where.append("status = ?")
            params.append(status)
        clause = (" WHERE " + " AND ".join(where)) if where else ""
        rows = self.db.query(
            f"SELECT {self._APPROVAL_COLUMNS} FROM approvals{clause} ORDER BY created_at DESC", params
        )
        return [self._approval(r) for r in rows]

    async def record_approval_decision(
        self,
        tenant: str,
        approval_id: str,
        operator: str,
        verdict: str,
        note: str,
        now: float,
        *,
        principal: str | None = None,
    ) -> Approval:
        with self.db.transaction() as conn:
            row = conn.execute(
                f"SELECT {self._APPROVAL_COLUMNS} FROM approvals WHERE tenant = ? AND approval_id = ?",
                (tenant, approval_id),
            ).fetchone()
            if row is None:
                raise NotFound(f"approval {approval_id!r} not found")
            approval = self._approval(row)
            status = approval.effective_status(now)
            if status != "pending":
                raise FailedPrecondition(f"approval {approval_id!r} is {status}, not pending")
            decisions, new_status = add_decision(approval, operator, principal, verdict, note, now)
            conn.execute(
                "UPDATE approvals SET status = ?, decisions = ? WHERE approval_id = ?",
                (new_status, json.dumps(decisions), approval_id),
            )
        return Approval(*row[:6], new_status, *row[7:11], decisions=tuple(decisions))

    async def consume_approval(self, tenant: str, approval_id: str, now: float) -> bool:
        with self.db.transaction() as conn:
            return _consume(conn, ApprovalClaim(tenant, approval_id, now))

    # -- change feed -----------------------------------------------------------------------------------
    async def versions(self) -> StoreVersions:
        (row,) = self.db.query("SELECT policies, revocations, settings FROM store_versions WHERE id = 1")
        return StoreVersions(*row)

    async def close(self) -> None:
        self.db.close()

"""PostgreSQL store: every Protocol of :mod:`authz.storage.protocols` for N replicas sharing one database.

The audit chains live in :mod:`._audit` (mixed in); this module holds everything else.

Semantics are those of :class:`authz.storage.sqlite.SQLiteStore` (one conformance suite runs both); what
differs is how they hold with several writers:

- Budgets: each counter is charged by one conditional upsert (``used + amount <= limit``), which takes
  the row lock and re-checks the latest committed value, so counters are exact across replicas.
  Counters are charged in key order (no deadlock between calls sharing counters); a call with several
  counters runs in one transaction that rolls back entirely when one is exhausted.
- Policies: promote/activate take a per-tenant transaction advisory lock, so concurrent promotes get
  distinct, consecutive versions and exactly one version stays active.
- Approvals: a decision reads the row ``FOR UPDATE``; consuming is one conditional ``UPDATE``.
- Change feed: every change to policies, revocations or settings bumps ``store_versions`` and sends
  ``NOTIFY tessera_changes`` in its transaction; :meth:`PostgresStore.wait_for_change` listens on a
  dedicated connection.

Connections: an ``AsyncConnectionPool`` (autocommit connections; explicit transactions where several
statements must commit together). Timeouts are short because the check path waits on them: getting a
connection (``timeout``), ``statement_timeout`` (which also bounds lock waits) and ``connect_timeout``.
When the database goes away calls fail fast with :class:`~authz.errors.StoreUnavailable`; when it returns
the pool reconnects by itself. Every driver exception is translated at this module's edge.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import select
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import aclosing, asynccontextmanager
from typing import Any

import psycopg
from psycopg import errors as pg_errors
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool, PoolClosed, PoolTimeout, TooManyRequests

from authz.errors import AlreadyExists, FailedPrecondition, NotFound, StorageError, StoreUnavailable
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
from authz.storage.postgres._admin import PostgresAdminStore
from authz.storage.postgres._audit import AUDITED_CONNECTION, PostgresAuditStore
from authz.storage.postgres._changes import CHANNEL
from authz.storage.postgres._changes import bump as _bump
from authz.storage.postgres._forward import PostgresForwarderStore
from authz.storage.postgres._migrate import migrate
from authz.storage.postgres._writers import PostgresMemoryWriterStore

log = logging.getLogger("tessera.storage.postgres")

"""The LISTEN/NOTIFY channel; the payload names what changed: ``policies``, ``revocations``, ``settings``."""

# How long a call waits for a pooled connection once the database looks down (see _getconn): long
# enough for the pool to replace a killed connection, short enough to fail fast during an outage.
_DOWN_TIMEOUT = 0.25

#: Revocation answers remembered during one listening window (all forgotten when it fills up).
REVOCATION_ANSWERS = 65_536

# First int4 of the two-key advisory lock space for per-tenant policy locks ("tsra").
_POLICY_LOCK_CLASS = 0x74737261

# The driver's errors that mean "the database cannot be reached or cannot serve right now": connection
# failures, server shutdown, statement/lock timeouts, deadlock or serialisation aborts (all
# OperationalError), the pool's timeouts, and writes landing on a standby during a failover.
#: One more exchange of a subject token, unless its limit is reached (then no row comes back).
_COUNT_EXCHANGE = (
    "INSERT INTO oauth_exchanges (tenant, jti, uses, expires_at) VALUES (%s, %s, 1, %s) "
    "ON CONFLICT (tenant, jti) DO UPDATE SET uses = oauth_exchanges.uses + 1, "
    "expires_at = GREATEST(oauth_exchanges.expires_at, excluded.expires_at) "
    "WHERE oauth_exchanges.uses < %s RETURNING uses"
)
_TRANSIENT = (psycopg.OperationalError, pg_errors.ReadOnlySqlTransaction, OSError, TimeoutError)


def _translate(exc: BaseException) -> StorageError:
    if isinstance(exc, pg_errors.UniqueViolation):
        return AlreadyExists(f"already exists: {exc.diag.message_primary or exc}")
    if isinstance(exc, PoolClosed):
        return StorageError("PostgreSQL store is closed")
    if isinstance(exc, PoolTimeout | TooManyRequests):
        return StoreUnavailable(f"PostgreSQL unavailable: no connection: {exc}")
    if isinstance(exc, _TRANSIENT):
        return StoreUnavailable(f"PostgreSQL unavailable: {exc}")
    return StorageError(f"PostgreSQL error: {exc}")


def _idle_connection_alive(conn: psycopg.AsyncConnection) -> bool:
    """Whether a connection just taken from the pool still looks usable, without a round trip.

    An idle connection has nothing to read (pool connections never LISTEN). When the server restarts or
    terminates the backend it sends a FATAL error and closes the socket, which makes it readable: such a
    connection is dropped here instead of failing the caller's first statement after an outage.
    """
    if conn.closed or conn.broken:
        return False
    try:
        # poll, not select: a busy server process may well have descriptors above select's 1024 limit.
        poller = select.poll()
        poller.register(conn.pgconn.socket, select.POLLIN | select.POLLPRI)
        return not poller.poll(0)  # any event (input, hang-up, error) means the connection is gone
    except (OSError, ValueError, psycopg.Error):
        return False


def _tenant_lock_key(tenant: str) -> int:
    return int.from_bytes(hashlib.blake2b(tenant.encode(), digest_size=4).digest(), "big", signed=True)


class _Rollback(Exception):
    """Unwinds a transaction (rolling it back) to return ``result`` instead of committing."""

    def __init__(self, result: Any):
        self.result = result


class PostgresStore(
    PostgresAuditStore, PostgresAdminStore, PostgresForwarderStore, PostgresMemoryWriterStore
):
    """Every store Protocol on PostgreSQL (psycopg 3 async, ``psycopg_pool``).

    Construction does no I/O (:func:`authz.storage.open_store` is synchronous): the store opens on first
    use — migrations (under an advisory lock, see :mod:`._migrate`), then the pool. ``await open()``
    does the same eagerly, e.g. to fail at startup rather than on the first request. A failed open is
    retried by the next call.

    ``timeout``: seconds to wait for a pooled connection; ``statement_timeout``: seconds any statement
    (lock waits included) may take; ``connect_timeout``: seconds to establish a connection. Settings in
    ``database_url`` (``options``, ``application_name``, keepalives...) win over the defaults here.
    """

    def __init__(
        self,
        database_url: str,
        *,
        min_size: int = 1,
        max_size: int = 10,
        timeout: float = 1.0,
        statement_timeout: float = 2.0,
        connect_timeout: int = 2,
        reconnect_timeout: float = 10.0,
    ):
        self._url = database_url
        self._min_size = min_size
        self._max_size = max_size
        self._timeout = timeout
        self._reconnect_timeout = reconnect_timeout
        self._conninfo = _conninfo(database_url, connect_timeout=connect_timeout)
        self._pool_conninfo = _conninfo(
            database_url,
            connect_timeout=connect_timeout,
            options=(
                f"-c statement_timeout={int(statement_timeout * 1000)} "
                "-c idle_in_transaction_session_timeout=30000"
            ),
        )
        self._pool: AsyncConnectionPool | None = None
        self._open_lock = asyncio.Lock()
        self._closed = False
        self._reachable = True  # False after a connection-level failure, until a call succeeds again
        self._listener: psycopg.AsyncConnection | None = None
        self._listen_lock = asyncio.Lock()
        # Revocation answers, kept only while a reader is parked on the change listener (a listening
        # window, see wait_for_change): a revocation committed by any replica NOTIFYs, which ends the
        # window here and with it everything remembered. The epoch moves at every window's start and end
        # so that an answer read from the database before a change is not remembered after it.
        self._listening = False
        self._revocations_epoch = 0
        self._revoked: dict[tuple[str, str, tuple[str, ...]], bool] = {}

    def __repr__(self) -> str:
        params = conninfo_to_dict(self._url)
        params.pop("password", None)
        return f"PostgresStore({make_conninfo(**params)!r})"

    # -- lifecycle -------------------------------------------------------------------------------------
    async def open(self) -> None:
        """Apply pending migrations and open the pool; a no-op once open. StoreUnavailable when down."""
        if self._pool is not None:
            return
        async with self._open_lock:
            if self._closed:
                raise StorageError("PostgreSQL store is closed")
            if self._pool is not None:
                return
            try:
                async with await psycopg.AsyncConnection.connect(self._conninfo, autocommit=True) as conn:
                    applied = await migrate(conn)
            except psycopg.Error as exc:
                raise _translate(exc) from exc
            if applied:
                log.info("applied PostgreSQL migrations: %s", ", ".join(applied))
            pool: AsyncConnectionPool = AsyncConnectionPool(
                self._pool_conninfo,
                kwargs={"autocommit": True},
                min_size=self._min_size,
                max_size=self._max_size,
                timeout=self._timeout,
                reconnect_timeout=self._reconnect_timeout,
                name="tessera",
                open=False,
            )
            await pool.open(wait=False)
            self._pool = pool

    async def close(self) -> None:
        """Close the listener and the pool. Idempotent; later calls raise StorageError."""
        self._closed = True
        self._forget_revocations()
        listener, self._listener = self._listener, None
        if listener is not None:
            await listener.close()
        async with self._open_lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close()

    async def __aenter__(self) -> PostgresStore:
        await self.open()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    @asynccontextmanager
    async def _connection(self) -> AsyncIterator[psycopg.AsyncConnection]:
        """A pooled connection; psycopg and pool errors raised in the block leave as Tessera errors.

        Inside :meth:`run_audited` it is the audited transaction's connection, so the mutation and its
        audit events commit together (its ``conn.transaction()`` blocks become savepoints).
        """
        audited = AUDITED_CONNECTION.get()
        if audited is not None and audited[0] is self:
            try:
                yield audited[1]
            except (psycopg.Error, OSError, TimeoutError) as exc:
                raise _translate(exc) from exc
            return
        if self._pool is None:
            await self.open()
        pool = self._pool
        if pool is None:  # closed concurrently
            raise StorageError("PostgreSQL store is closed")
        conn: psycopg.AsyncConnection | None = None
        try:
            conn = await self._getconn(pool)
            try:
                yield conn
            finally:
                await pool.putconn(conn)
        except (psycopg.Error, OSError, TimeoutError) as exc:
            if isinstance(exc, PoolTimeout) or (conn is not None and (conn.broken or conn.closed)):
                self._reachable = False
            raise _translate(exc) from exc
        self._reachable = True

    async def _getconn(self, pool: AsyncConnectionPool) -> psycopg.AsyncConnection:
        # Once the database looks down, wait only briefly for a connection: during an outage every call
        # fails fast instead of holding its caller for the full timeout. The pool keeps reconnecting in
        # the background; the first call that gets a connection again restores the full timeout.
        timeout = self._timeout if self._reachable else min(self._timeout, _DOWN_TIMEOUT)
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise PoolTimeout(f"no live connection within {timeout:.2f} s")
            conn = await pool.getconn(timeout=remaining)
            if _idle_connection_alive(conn):
                return conn
            # Dead (the server restarted, or an admin killed the backend): the pool discards it and
            # connects a replacement; the server may well be down, so stop waiting long for the next.
            self._reachable = False
            timeout = min(timeout, _DOWN_TIMEOUT)
            deadline = min(deadline, time.monotonic() + _DOWN_TIMEOUT)
            await conn.close()
            await pool.putconn(conn)

    async def _fetch(self, sql: str, params: Sequence[Any] = ()) -> list[tuple]:
        async with self._connection() as conn:
            cur = await conn.execute(sql, params)  # type: ignore[arg-type]
            return await cur.fetchall()

    # -- tenants ---------------------------------------------------------------------------------------
    async def put_tenant(self, tenant: str, settings: TenantSettings) -> None:
        async with self._connection() as conn, conn.transaction():
            await conn.execute(
                "INSERT INTO tenants (tenant, settings, updated_at) VALUES (%s, %s, %s) "
                "ON CONFLICT (tenant) DO UPDATE SET settings = excluded.settings, "
                "updated_at = excluded.updated_at",
                (tenant, Jsonb(settings.to_json()), time.time()),
            )
            await _bump(conn, "settings")

    async def get_tenant(self, tenant: str) -> TenantSettings | None:
        rows = await self._fetch("SELECT settings FROM tenants WHERE tenant = %s", (tenant,))
        return TenantSettings.from_json(rows[0][0]) if rows else None

    async def list_tenants(self) -> dict[str, TenantSettings]:
        rows = await self._fetch("SELECT tenant, settings FROM tenants ORDER BY tenant")
        return {tenant: TenantSettings.from_json(raw) for tenant, raw in rows}

    # -- policies --------------------------------------------------------------------------------------
    async def promote_policy(self, tenant: str, source: str, content_hash: str, actor: str) -> PolicyVersion:
        now = time.time()
        async with self._connection() as conn, conn.transaction():
            await _lock_tenant_policies(conn, tenant)
            cur = await conn.execute(
                "SELECT COALESCE(MAX(version), 0) FROM policies WHERE tenant = %s", (tenant,)
            )
            (latest,) = await cur.fetchone()  # type: ignore[misc]
            await conn.execute("UPDATE policies SET active = FALSE WHERE tenant = %s AND active", (tenant,))
            await conn.execute(
                "INSERT INTO policies (tenant, version, source, content_hash, created_at, created_by, "
                "active) VALUES (%s, %s, %s, %s, %s, %s, TRUE)",
                (tenant, latest + 1, source, content_hash, now, actor),
            )
            await _bump(conn, "policies")
        return PolicyVersion(tenant, latest + 1, source, content_hash, now, actor, True)

    async def activate_policy(self, tenant: str, version: int, actor: str) -> PolicyVersion:
        async with self._connection() as conn, conn.transaction():
            await _lock_tenant_policies(conn, tenant)
            cur = await conn.execute(
                "SELECT source, content_hash, created_at, created_by FROM policies "
                "WHERE tenant = %s AND version = %s",
                (tenant, version),
            )
            row = await cur.fetchone()
            if row is None:
                raise NotFound(f"tenant {tenant!r} has no policy version {version}")
            await conn.execute("UPDATE policies SET active = FALSE WHERE tenant = %s AND active", (tenant,))
            await conn.execute(
                "UPDATE policies SET active = TRUE WHERE tenant = %s AND version = %s", (tenant, version)
            )
            await _bump(conn, "policies")
        return PolicyVersion(tenant, version, row[0], row[1], row[2], row[3], True)

    async def active_policies(self) -> dict[str, PolicyVersion]:
        rows = await self._fetch(
            "SELECT tenant, version, source, content_hash, created_at, created_by FROM policies WHERE active"
        )
        return {r[0]: PolicyVersion(*r, active=True) for r in rows}

    async def policy_history(self, tenant: str) -> list[PolicyVersion]:
        rows = await self._fetch(
            "SELECT tenant, version, source, content_hash, created_at, created_by, active FROM policies "
            "WHERE tenant = %s ORDER BY version DESC",
            (tenant,),
        )
        return [PolicyVersion(*r[:6], active=bool(r[6])) for r in rows]

    # -- revocations -----------------------------------------------------------------------------------
    async def revoke(self, revocation: Revocation) -> None:
        if revocation.kind not in ("jti", "token_id"):
            raise FailedPrecondition(f"revocation kind must be 'jti' or 'token_id', not {revocation.kind!r}")
        r = revocation
        async with self._connection() as conn, conn.transaction():
            cur = await conn.execute(
                "INSERT INTO revocations (tenant, kind, value, reason, revoked_at, revoked_by) "
                "VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",
                (r.tenant, r.kind, r.value, r.reason, r.revoked_at, r.revoked_by),
            )
            if cur.rowcount:
                await _bump(conn, "revocations")
        # This replica's own answers go at once, not when its own NOTIFY comes back.
        self._forget_revocations()

    async def is_revoked(self, tenant: str, jti: str, token_ids: Sequence[str]) -> bool:
        """Asked on every check (a query costs ~300 µs of CPU here): answered from memory during a
        listening window, from the database otherwise (ARCHITECTURE §3: revocation state is cached
        only with push invalidation). A revocation on another replica is seen once its NOTIFY arrives."""
        key = (tenant, jti, tuple(token_ids))
        if self._listening:
            known = self._revoked.get(key)
            if known is not None:
                return known
        epoch = self._revocations_epoch
        revoked = await self._query_revoked(tenant, jti, token_ids)
        if self._listening and epoch == self._revocations_epoch:  # no change could have been missed
            if len(self._revoked) >= REVOCATION_ANSWERS:
                self._revoked.clear()
            self._revoked[key] = revoked
        return revoked

    def _forget_revocations(self) -> None:
        self._revocations_epoch += 1
        self._revoked.clear()

    async def _query_revoked(self, tenant: str, jti: str, token_ids: Sequence[str]) -> bool:
        # Two index seeks on the (tenant, kind, value) key, whatever plan the OR would have got.
        rows = await self._fetch(
            "SELECT 1 FROM revocations WHERE tenant = %s AND kind = 'jti' AND value = %s UNION ALL "
            "SELECT 1 FROM revocations WHERE tenant = %s AND kind = 'token_id' AND value = ANY(%s::text[]) "
            "LIMIT 1",
            (tenant, jti, tenant, list(token_ids)),
        )
        return bool(rows)

    async def count_exchange(
        self, tenant: str, jti: str, *, limit: int, expires_at: float, now: float
    ) -> int | None:
        async with self._connection() as conn, conn.transaction():
            await conn.execute("DELETE FROM oauth_exchanges WHERE expires_at < %s", (now,))
            cur = await conn.execute(_COUNT_EXCHANGE, (tenant, jti, expires_at, limit))
            row = await cur.fetchone()
        return row[0] if row else None

    async def list_revocations(self, tenant: str | None = None) -> list[Revocation]:
        sql = "SELECT tenant, kind, value, reason, revoked_at, revoked_by FROM revocations"
        if tenant:
            rows = await self._fetch(sql + " WHERE tenant = %s ORDER BY revoked_at", (tenant,))
        else:
            rows = await self._fetch(sql + " ORDER BY revoked_at")
        return [Revocation(*r) for r in rows]

    # -- budgets ---------------------------------------------------------------------------------------
    # One statement charges one counter: the INSERT arm creates it (when the amount fits at all), the
    # conflict arm locks the existing row and re-checks the limit against its latest committed value.
    _CHARGE = (
        "INSERT INTO budget_counters AS c (counter_key, window_start, used, expires_at) "
        "SELECT %(key)s, %(window)s, %(amount)s::float8, %(expires)s::float8 "
        "WHERE %(amount)s::float8 <= %(limit)s::float8 "
        "ON CONFLICT (counter_key, window_start) DO UPDATE SET used = c.used + excluded.used "
        "WHERE c.used + excluded.used <= %(limit)s::float8 "
        "RETURNING c.used"
    )
    _USED = "SELECT used FROM budget_counters WHERE counter_key = %s AND window_start = %s"

    async def reserve(
        self,
        reservations: Sequence[Reservation],
        *,
        consume: ApprovalClaim | Sequence[ApprovalClaim] | None = None,
    ) -> ReserveResult:
        claims = claims_of(consume)
        if not reservations and not claims:
            return ReserveResult(ok=True)
        async with self._connection() as conn:
            if len(reservations) == 1 and not claims:  # one statement, one round trip
                failed = await _charge(conn, reservations[0], self._CHARGE, self._USED)
                return failed or ReserveResult(ok=True)
            try:
                async with conn.transaction():
                    for claim in claims:
                        cur = await conn.execute(self._CONSUME, (claim.tenant, claim.approval_id, claim.now))
                        if cur.rowcount != 1:
                            raise _Rollback(ReserveResult(ok=False, approval_unavailable=True))
                    # Charge in key order so two calls sharing counters never wait on each other in a
                    # cycle; keep going after a failure to report the first one in the caller's order,
                    # as SQLite (which charges in the caller's order and stops there) does.
                    order = sorted(
                        range(len(reservations)),
                        key=lambda i: (reservations[i].key, reservations[i].window_start),
                    )
                    failures = []
                    for i in order:
                        failed = await _charge(conn, reservations[i], self._CHARGE, self._USED)
                        if failed is not None:
                            failures.append((i, failed))
                    if failures:
                        raise _Rollback(min(failures, key=lambda f: f[0])[1])
            except _Rollback as rollback:  # the transaction rolled back: nothing was charged
                return rollback.result
        return ReserveResult(ok=True)

    async def prune_expired(
        self,
        now: float,
        *,
        grace_s: float = 300.0,
        approval_retention_s: float = 86400.0,
        batch: int = 10_000,
    ) -> PruneResult:
        counters = await self._prune(
            "DELETE FROM budget_counters WHERE ctid = ANY(ARRAY("
            "SELECT ctid FROM budget_counters WHERE expires_at < %s LIMIT %s FOR UPDATE SKIP LOCKED))",
            now - grace_s,
            batch,
        )
        approvals = await self._prune(
            "DELETE FROM approvals WHERE approval_id = ANY(ARRAY("
            "SELECT approval_id FROM approvals WHERE expires_at < %s LIMIT %s FOR UPDATE SKIP LOCKED))",
            now - approval_retention_s,
            batch,
        )
        return PruneResult(counters, approvals)

    async def _prune(self, sql: str, before: float, batch: int) -> int:
        # Short transactions, and rows a reservation holds locked are skipped (they are taken next time):
        # pruning never makes a check wait.
        total = 0
        while True:
            async with self._connection() as conn:
                cur = await conn.execute(sql, (before, batch))  # type: ignore[arg-type]
                deleted = cur.rowcount
            total += deleted
            if deleted < batch:
                return total

    async def usage(self, key: str, window_start: int) -> float:
        rows = await self._fetch(self._USED, (key, window_start))
        return rows[0][0] if rows else 0.0

    # -- approvals -------------------------------------------------------------------------------------
    _APPROVAL_COLUMNS = (
        "approval_id, tenant, agent, tool, arguments_sha256, reason, status, quorum, created_at, "
        "expires_at, decision_id, decisions"
    )

    @staticmethod
    def _approval(row: tuple) -> Approval:
        return Approval(*row[:11], decisions=tuple(row[11]))

    async def create_approval(self, approval: Approval) -> None:
        a = approval
        async with self._connection() as conn:
            await conn.execute(
                f"INSERT INTO approvals ({self._APPROVAL_COLUMNS}) "
                "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
                (a.approval_id, a.tenant, a.agent, a.tool, a.arguments_sha256, a.reason, a.status, a.quorum,
                 a.created_at, a.expires_at, a.decision_id, Jsonb(list(a.decisions))),
            )  # fmt: skip

    async def get_approval(self, tenant: str, approval_id: str) -> Approval | None:
        rows = await self._fetch(
            f"SELECT {self._APPROVAL_COLUMNS} FROM approvals WHERE tenant = %s AND approval_id = %s",
            (tenant, approval_id),
        )
        return self._approval(rows[0]) if rows else None

    async def list_approvals(self, tenant: str | None = None, status: str | None = None) -> list[Approval]:
        where, params = [], []
        if tenant:
            where.append("tenant = %s")
            params.append(tenant)
        if status:
            where.append("status = %s")
            params.append(status)
        clause = (" WHERE " + " AND ".join(where)) if where else ""
        rows = await self._fetch(
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
        async with self._connection() as conn, conn.transaction():
            # The row lock serialises operators deciding at once: each sees the others' verdicts.
            cur = await conn.execute(
                f"SELECT {self._APPROVAL_COLUMNS} FROM approvals WHERE tenant = %s AND approval_id = %s "
                "FOR UPDATE",
                (tenant, approval_id),
            )
            row = await cur.fetchone()
            if row is None:
                raise NotFound(f"approval {approval_id!r} not found")
            approval = self._approval(row)
            status = approval.effective_status(now)
            if status != "pending":
                raise FailedPrecondition(f"approval {approval_id!r} is {status}, not pending")
            decisions, new_status = add_decision(approval, operator, principal, verdict, note, now)
            await conn.execute(
                "UPDATE approvals SET status = %s, decisions = %s WHERE approval_id = %s",
                (new_status, Jsonb(decisions), approval_id),
            )
        return Approval(*row[:6], new_status, *row[7:11], decisions=tuple(decisions))

    _CONSUME = (
        "UPDATE approvals SET status = 'consumed' "
        "WHERE tenant = %s AND approval_id = %s AND status = 'approved' AND expires_at > %s"
    )

    async def consume_approval(self, tenant: str, approval_id: str, now: float) -> bool:
        async with self._connection() as conn:
            cur = await conn.execute(self._CONSUME, (tenant, approval_id, now))
            return cur.rowcount == 1

    # -- change feed -----------------------------------------------------------------------------------
    async def versions(self) -> StoreVersions:
        rows = await self._fetch("SELECT policies, revocations, settings FROM store_versions WHERE id = 1")
        return StoreVersions(*rows[0])

    async def wait_for_change(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for a change notification; True when the caller should reload.

        True soon after another replica (or this one) commits a change to policies, revocations or
        settings, and also whenever the listening connection was (re)established — changes made while
        nobody listened would otherwise be missed — so the first call returns True at once. False when
        the timeout passed quietly. Never raises (except on cancellation): when the database is down it
        waits out the timeout and returns True, so a caller looping on it cannot spin.
        """
        deadline = time.monotonic() + timeout
        async with self._listen_lock:
            if self._closed:
                await asyncio.sleep(max(0.0, deadline - time.monotonic()))
                return False
            listener = self._listener
            if listener is None:
                try:
                    self._listener = await self._listen()
                except (psycopg.Error, OSError) as exc:
                    log.debug("cannot listen for changes: %s", exc)
                    await asyncio.sleep(max(0.0, deadline - time.monotonic()))
                return True
            try:
                notifies = listener.notifies(timeout=max(0.0, deadline - time.monotonic()), stop_after=1)
                # A listening window: from here until a notification, the timeout or an error, every
                # change committed anywhere ends it (nothing is remembered across windows).
                self._forget_revocations()
                self._listening = True
                try:
                    async with aclosing(notifies) as received:
                        async for _ in received:
                            return True
                    return False
                finally:
                    self._listening = False
                    self._forget_revocations()
            except (psycopg.Error, OSError) as exc:
                log.info("lost the change listener (%s); reconnecting", exc)
                if self._listener is listener:
                    self._listener = None
                await listener.close()
                return True

    async def _listen(self) -> psycopg.AsyncConnection:
        conn = await psycopg.AsyncConnection.connect(self._conninfo, autocommit=True)
        try:
            await conn.execute(f"LISTEN {CHANNEL}")
        except BaseException:
            await conn.close()
            raise
        return conn


def _conninfo(url: str, *, connect_timeout: int, options: str = "") -> str:
    """``url`` plus Tessera's defaults for what it leaves unset; extra server ``options`` are appended."""
    params: dict[str, Any] = {
        "application_name": "tessera",
        "connect_timeout": connect_timeout,
        # Notice a peer that vanished without closing (network partition) within ~20 s, not hours.
        "keepalives": 1,
        "keepalives_idle": 5,
        "keepalives_interval": 5,
        "keepalives_count": 3,
    }
    params.update(conninfo_to_dict(url))
    if options:
        params["options"] = f"{options} {params['options']}" if params.get("options") else options
    return make_conninfo(**params)


async def _lock_tenant_policies(conn: psycopg.AsyncConnection, tenant: str) -> None:
    """Serialise policy changes of one tenant until the transaction ends (also covers its first promote,
    when there is no row to lock yet). Hash collisions between tenants only serialise them too."""
    await conn.execute("SELECT pg_advisory_xact_lock(%s, %s)", (_POLICY_LOCK_CLASS, _tenant_lock_key(tenant)))


async def _charge(
    conn: psycopg.AsyncConnection, r: Reservation, charge_sql: str, used_sql: str
) -> ReserveResult | None:
    """Charge one counter; None when charged, else the exhausted result (with what the counter used)."""
    cur = await conn.execute(
        charge_sql,  # type: ignore[arg-type]
        {
            "key": r.key,
            "window": r.window_start,
            "amount": r.amount,
            "limit": r.limit,
            "expires": r.expires_at,
        },
    )
    if await cur.fetchone() is not None:
        return None
    cur = await conn.execute(used_sql, (r.key, r.window_start))  # type: ignore[arg-type]
    row = await cur.fetchone()
    return ReserveResult(ok=False, exhausted=r, used=row[0] if row else 0.0)

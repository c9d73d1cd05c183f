"""PostgreSQL-only behaviour: migrations under concurrency, LISTEN/NOTIFY, timeouts, outages and recovery.

The shared semantics are in ``test_storage_conformance.py``; these tests use the same session cluster
(``pg_url``: a fresh database per test) except the outage test, which stops its own cluster.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import psycopg
import pytest
from psycopg import errors as pg_errors
from psycopg_pool import PoolClosed, PoolTimeout

from authz.check.directory import TenantDirectory
from authz.errors import AlreadyExists, StorageError, StoreUnavailable
from authz.storage import Approval, Reservation, Revocation, TenantSettings, open_store
from authz.storage.postgres import PostgresStore, migrate, migrations
from authz.storage.postgres._migrate import MIGRATION_LOCK_KEY
from authz.storage.postgres._store import _translate
from tests.pg import PostgresCluster, PostgresNotInstalled, free_port

NAMES = [name for name, _ in migrations()]


@pytest.fixture
async def stores(pg_url: str):
    """Open PostgresStores on the test database (replicas); all closed after the test."""
    opened: list[PostgresStore] = []

    async def open_one(**kwargs) -> PostgresStore:
        store = PostgresStore(pg_url, **kwargs)
        opened.append(store)
        await store.open()
        return store

    yield open_one
    for store in opened:
        await store.close()


async def elapsed(call: Awaitable) -> tuple[object, float]:
    start = time.monotonic()
    try:
        result: object = await call
    except Exception as exc:
        result = exc
    return result, time.monotonic() - start


def approval(approval_id: str = "ap-1") -> Approval:
    now = time.time()
    return Approval(approval_id, "acme", "a1", "tool", "00" * 32, "why", "pending", 1, now, now + 600, "d1")


# -- migrations ----------------------------------------------------------------------------------------
async def test_open_store_returns_a_lazily_opened_postgres_store(pg_url: str):
    store = open_store(pg_url)
    try:
        assert isinstance(store, PostgresStore)
        assert "password" not in repr(store)
        await store.put_tenant("acme", TenantSettings())  # the first call opens it (migrations, pool)
        assert list(await store.list_tenants()) == ["acme"]
    finally:
        await store.close()


async def test_migrations_are_idempotent(pg_url: str, stores):
    assert NAMES[0] == "0001_core.sql" and sorted(NAMES) == NAMES
    async with await psycopg.AsyncConnection.connect(pg_url, autocommit=True) as conn:
        assert await migrate(conn) == NAMES
        assert await migrate(conn) == []
        cur = await conn.execute("SELECT name FROM schema_migrations ORDER BY name")
        assert [name for (name,) in await cur.fetchall()] == NAMES
    first = await stores()
    second = await stores()  # a second replica opening against a migrated database
    await first.put_tenant("acme", TenantSettings())
    assert list(await second.list_tenants()) == ["acme"]


async def test_concurrent_migrators_apply_each_file_once(pg_url: str, stores):
    conns = [await psycopg.AsyncConnection.connect(pg_url, autocommit=True) for _ in range(4)]
    try:
        results = await asyncio.gather(*(migrate(c) for c in conns))
    finally:
        for c in conns:
            await c.close()
    assert sorted(results, key=len) == [[], [], [], NAMES]
    replica = await stores()
    assert (await replica.versions()).policies == 0


async def test_replicas_starting_together_on_an_empty_database(pg_cluster: PostgresCluster):
    url = pg_cluster.create_database()
    replicas = [PostgresStore(url) for _ in range(4)]
    try:
        await asyncio.gather(*(r.open() for r in replicas))
        await asyncio.gather(*(r.put_tenant(f"t{i}", TenantSettings()) for i, r in enumerate(replicas)))
        assert len(await replicas[0].list_tenants()) == 4
    finally:
        for r in replicas:
            await r.close()
        pg_cluster.drop_database(url)


async def test_migrator_waits_for_the_advisory_lock(pg_url: str):
    async with (
        await psycopg.AsyncConnection.connect(pg_url, autocommit=True) as holder,
        await psycopg.AsyncConnection.connect(pg_url, autocommit=True) as conn,
    ):
        await holder.execute("SELECT pg_advisory_lock(%s)", (MIGRATION_LOCK_KEY,))
        task = asyncio.create_task(migrate(conn))
        await asyncio.sleep(0.3)
        assert not task.done()  # another replica is migrating: wait
        await holder.execute("SELECT pg_advisory_unlock(%s)", (MIGRATION_LOCK_KEY,))
        assert await asyncio.wait_for(task, 5) == NAMES


# -- LISTEN/NOTIFY -------------------------------------------------------------------------------------
async def test_notify_wakes_wait_for_change(stores):
    listener, writer = await stores(), await stores()
    result, took = await elapsed(listener.wait_for_change(5))
    assert result is True and took < 1  # (re)connecting the listener asks for a reload at once

    async def woken_by(change: Callable[[], Awaitable]) -> bool:
        waiting = asyncio.create_task(listener.wait_for_change(5))
        await asyncio.sleep(0.05)
        start = time.monotonic()
        await change()
        result = await asyncio.wait_for(waiting, 1.0)
        assert time.monotonic() - start < 1.0
        return result

    assert await woken_by(lambda: writer.put_tenant("acme", TenantSettings()))
    assert await woken_by(lambda: writer.promote_policy("acme", "src", "h1", "alice"))
    assert await woken_by(lambda: writer.activate_policy("acme", 1, "alice"))
    assert await woken_by(lambda: writer.revoke(Revocation("acme", "jti", "j1", "r", 1.0, "alice")))

    # Nothing a replica caches changed: the wait times out quietly.
    await writer.revoke(Revocation("acme", "jti", "j1", "again", 2.0, "alice"))  # idempotent: no change
    await writer.reserve([Reservation("k", 0, 1, 10, "s")])
    await writer.create_approval(approval())
    result, took = await elapsed(listener.wait_for_change(0.3))
    assert result is False and 0.25 < took < 1


async def test_wait_for_change_survives_a_killed_listener(stores, pg_cluster: PostgresCluster):
    listener, writer = await stores(), await stores()
    assert await listener.wait_for_change(1)
    pid = listener._listener.info.backend_pid  # type: ignore[union-attr]
    pg_cluster.execute(f"SELECT pg_terminate_backend({pid})")
    result, took = await elapsed(listener.wait_for_change(5))
    assert result is True and took < 1  # the listener died: reload, changes may have been missed
    result, took = await elapsed(listener.wait_for_change(5))
    assert result is True and took < 1  # listening again
    waiting = asyncio.create_task(listener.wait_for_change(5))
    await asyncio.sleep(0.05)
    await writer.put_tenant("acme", TenantSettings())
    assert await asyncio.wait_for(waiting, 1.0) is True


async def test_directory_reloads_on_notify_not_on_poll(stores):
    replica, admin = await stores(), await stores()
    directory = TenantDirectory(
        replica,
        compile_policy=lambda source, version: f"compiled {source}",
        build_extractor=lambda name, settings: None,
        poll_interval_s=30,  # far longer than the test: only a notification can explain a reload
    )
    await directory.refresh(force=True)
    assert directory.get("acme") is None
    runner = asyncio.create_task(directory.run())
    try:
        await asyncio.sleep(0.2)  # the listener connects (and asks for one reload)
        start = time.monotonic()
        await admin.put_tenant("acme", TenantSettings(intent_mode="enforce"))
        await admin.promote_policy("acme", "package tessera", "h1", "alice")
        while time.monotonic() - start < 2:
            view = directory.get("acme")
            if view is not None and view.policy_version is not None:
                break
            await asyncio.sleep(0.01)
        view = directory.get("acme")
        assert view is not None and view.policy == "compiled package tessera", directory.last_error
        assert view.settings.intent_mode == "enforce"
        assert time.monotonic() - start < 1.0
    finally:
        runner.cancel()
        with pytest.raises(asyncio.CancelledError):
            await runner


# -- the revocation answers a replica remembers ----------------------------------------------------------
def count_queries(store: PostgresStore) -> list[int]:
    """How many revocation lookups reached the database (a spy around the real query)."""
    calls = [0]
    query = store._query_revoked

    async def counted(*args):
        calls[0] += 1
        return await query(*args)

    store._query_revoked = counted  # type: ignore[method-assign]
    return calls


async def listening(store: PostgresStore) -> asyncio.Task:
    """What a check replica's tenant directory runs: wait_for_change in a loop (the first call only
    connects the listener); returns once the store is inside a listening window."""

    async def loop() -> None:
        while True:
            await store.wait_for_change(30)

    task = asyncio.create_task(loop())
    deadline = time.monotonic() + 5
    while not store._listening:
        assert time.monotonic() < deadline, "the listener never started listening"
        await asyncio.sleep(0.01)
    return task


async def stop(task: asyncio.Task) -> None:
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def revoked_within(store: PostgresStore, seconds: float, *args) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if await store.is_revoked(*args):
            return True
        await asyncio.sleep(0.01)
    return False


async def test_a_listening_replica_answers_revocation_lookups_from_memory_until_any_replica_revokes(stores):
    replica, admin = await stores(), await stores()
    queries = count_queries(replica)
    task = await listening(replica)
    try:
        for _ in range(5):
            assert not await replica.is_revoked("acme", "j1", ["t1", "t2"])
        assert queries[0] == 1  # remembered after the first lookup
        await admin.revoke(Revocation("acme", "token_id", "t2", "leaked", 1.0, "alice"))
        start = time.monotonic()
        assert await revoked_within(replica, 2.0, "acme", "j1", ["t1", "t2"])  # the NOTIFY ended it
        assert time.monotonic() - start < 1.0
        assert queries[0] >= 2
    finally:
        await stop(task)


async def test_a_replica_that_revokes_forgets_its_answers_before_its_own_notification(stores):
    replica = await stores()
    # A listening window whose reader has not yet been handed the revocation's NOTIFY (it arrives a few
    # milliseconds after the commit): held open by hand, so nothing but revoke() itself can end it.
    replica._listening = True
    try:
        assert not await replica.is_revoked("acme", "j1", [])
        assert replica._revoked  # remembered
        await replica.revoke(Revocation("acme", "jti", "j1", "leaked", 1.0, "alice"))
        assert await replica.is_revoked("acme", "j1", [])
    finally:
        replica._listening = False


async def test_a_replica_not_listening_asks_the_database_every_time(stores):
    replica, admin = await stores(), await stores()
    queries = count_queries(replica)
    task = await listening(replica)
    assert not await replica.is_revoked("acme", "j1", [])
    await stop(task)  # the directory stopped (or is reloading): nothing is pushed to this replica now
    assert not replica._listening
    await admin.revoke(Revocation("acme", "jti", "j1", "leaked", 1.0, "alice"))
    assert await replica.is_revoked("acme", "j1", [])  # seen at once, without any notification
    assert not await replica.is_revoked("acme", "j2", [])
    assert not await replica.is_revoked("acme", "j2", [])
    assert queries[0] == 4


async def test_a_killed_listener_forgets_and_a_revocation_made_meanwhile_is_seen(
    stores, pg_cluster: PostgresCluster
):
    replica, admin = await stores(), await stores()
    task = await listening(replica)
    try:
        assert not await replica.is_revoked("acme", "j1", [])
        pid = replica._listener.info.backend_pid  # type: ignore[union-attr]
        pg_cluster.execute(f"SELECT pg_terminate_backend({pid})")
        # Revoked while this replica's listener is down: no notification will ever reach it.
        await admin.revoke(Revocation("acme", "jti", "j1", "leaked", 1.0, "alice"))
        assert await revoked_within(replica, 3.0, "acme", "j1", [])
    finally:
        await stop(task)


async def test_an_answer_read_before_a_change_is_not_remembered_after_it(stores):
    replica, admin = await stores(), await stores()
    task = await listening(replica)
    try:
        gate = asyncio.Event()
        query = replica._query_revoked

        async def slow(*args):  # the lookup's answer was read; the reply is slow to arrive
            answer = await query(*args)
            await gate.wait()
            return answer

        replica._query_revoked = slow  # type: ignore[method-assign]
        lookup = asyncio.create_task(replica.is_revoked("acme", "j1", []))
        await asyncio.sleep(0.05)
        await admin.revoke(Revocation("acme", "jti", "j1", "leaked", 1.0, "alice"))
        deadline = time.monotonic() + 2
        while not replica._listening or replica._revocations_epoch < 3:  # the window ended and reopened
            assert time.monotonic() < deadline
            await asyncio.sleep(0.01)
        gate.set()
        assert await lookup is False  # read before the revocation committed
        replica._query_revoked = query  # type: ignore[method-assign]
        assert await replica.is_revoked("acme", "j1", [])  # not the stale answer
    finally:
        await stop(task)


# -- errors, timeouts, outages -------------------------------------------------------------------------
def test_driver_errors_are_translated():
    assert isinstance(_translate(pg_errors.UniqueViolation("dup")), AlreadyExists)
    for transient in (
        psycopg.OperationalError("connection refused"),
        pg_errors.AdminShutdown("terminating connection"),
        pg_errors.QueryCanceled("statement timeout"),
        pg_errors.LockNotAvailable("lock timeout"),
        pg_errors.DeadlockDetected("deadlock"),
        pg_errors.SerializationFailure("serialization"),
        pg_errors.ReadOnlySqlTransaction("read-only: failover"),
        PoolTimeout("no connection"),
        ConnectionResetError("reset"),
    ):
        assert isinstance(_translate(transient), StoreUnavailable), transient
    for other in (pg_errors.UndefinedTable("no table"), psycopg.DataError("bad"), PoolClosed("closed")):
        translated = _translate(other)
        assert isinstance(translated, StorageError) and not isinstance(translated, StoreUnavailable), other


async def test_duplicate_approval_is_already_exists_not_a_driver_error(stores):
    store = await stores()
    await store.create_approval(approval())
    with pytest.raises(AlreadyExists) as info:
        await store.create_approval(approval())
    assert isinstance(info.value.__cause__, pg_errors.UniqueViolation)


async def test_statement_timeout_bounds_a_blocked_call(stores, pg_url: str):
    store = await stores(statement_timeout=0.3)
    r = Reservation("k", 0, 1, 10, "s")
    assert (await store.reserve([r])).ok
    async with await psycopg.AsyncConnection.connect(pg_url) as locker:  # not autocommit: holds the lock
        await locker.execute("SELECT * FROM budget_counters FOR UPDATE")
        result, took = await elapsed(store.reserve([r]))
        assert isinstance(result, StoreUnavailable) and took < 1.5, (result, took)
        await locker.rollback()
    assert (await store.reserve([r])).ok
    assert await store.usage("k", 0) == 2  # the timed-out call charged nothing


async def test_exhausted_pool_is_store_unavailable(stores, pg_url: str):
    store = await stores(max_size=1, min_size=1, timeout=0.2, statement_timeout=5)
    r = Reservation("k", 0, 1, 10, "s")
    assert (await store.reserve([r])).ok
    async with await psycopg.AsyncConnection.connect(pg_url) as locker:
        await locker.execute("SELECT * FROM budget_counters FOR UPDATE")
        blocked = asyncio.create_task(store.reserve([r]))  # holds the only connection, waiting on the lock
        await asyncio.sleep(0.1)
        result, took = await elapsed(store.versions())
        assert isinstance(result, StoreUnavailable) and took < 1, (result, took)
        await locker.rollback()
    assert (await blocked).ok


async def test_unreachable_database_is_store_unavailable():
    store = PostgresStore(f"postgresql://postgres@127.0.0.1:{free_port()}/tessera", connect_timeout=1)
    try:
        for call in (
            store.versions(),
            store.reserve([Reservation("k", 0, 1, 10, "s")]),
            store.is_revoked("acme", "j", []),
            store.open(),
        ):
            result, took = await elapsed(call)
            assert isinstance(result, StoreUnavailable) and took < 2, (result, took)
        result, took = await elapsed(store.wait_for_change(0.3))
        assert result is True and 0.25 < took < 2  # waits out its timeout, never raises
    finally:
        await store.close()
    with pytest.raises(StorageError):
        await store.versions()


async def test_killed_idle_connections_do_not_fail_the_next_call(stores, pg_cluster: PostgresCluster):
    store = await stores(min_size=2)
    await asyncio.gather(*(store.versions() for _ in range(4)))  # several connections in the pool
    database = store._conninfo.split("dbname=")[1].split()[0]
    pg_cluster.execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
        f"WHERE datname = '{database}' AND pid <> pg_backend_pid()"
    )
    await asyncio.sleep(0.2)  # the backends exit, their sockets turn readable (FATAL, then EOF)
    for _ in range(4):
        await store.versions()  # dead connections are dropped at checkout, never handed out


@pytest.fixture(scope="module")
def outage_cluster():
    """A cluster of its own: the outage test stops it, which must not disturb the shared one."""
    try:
        cluster = PostgresCluster()
    except PostgresNotInstalled as exc:
        pytest.skip(str(exc))
    with cluster:
        yield cluster


async def test_outage_then_recovery_without_a_new_store(outage_cluster: PostgresCluster):
    url = outage_cluster.create_database()
    store, writer = PostgresStore(url, timeout=1.0), PostgresStore(url)
    r = Reservation("k", 0, 1, 100, "s")
    try:
        await store.put_tenant("acme", TenantSettings())
        assert (await store.reserve([r])).ok
        assert await store.wait_for_change(1)

        await asyncio.to_thread(outage_cluster.stop)
        calls: list[Callable[[], Awaitable]] = [
            store.versions,
            lambda: store.reserve([r]),
            lambda: store.is_revoked("acme", "j", ["t"]),
            lambda: store.put_tenant("acme", TenantSettings()),
            lambda: store.consume_approval("acme", "ap", time.time()),
        ]
        took = []
        for call in calls:
            result, seconds = await elapsed(call())
            assert isinstance(result, StoreUnavailable), result
            took.append(seconds)
        # Fail fast: the first call finds the pool's connections dead, then no call waits out the full
        # pool timeout while the database is known to be down.
        assert max(took) < 0.6, took
        result, took = await elapsed(store.wait_for_change(0.2))
        assert result is True and took < 1  # the listener is gone: never raises

        await asyncio.to_thread(outage_cluster.start)
        down_since = time.monotonic()
        while True:
            try:
                await store.versions()
                break
            except StoreUnavailable:
                assert time.monotonic() - down_since < 10, "the store did not recover"
                await asyncio.sleep(0.05)
        recovered_in = time.monotonic() - down_since
        assert recovered_in < 5, recovered_in
        for call in calls[1:]:
            await call()
        assert await store.usage("k", 0) == 2  # what was committed before the outage survived

        # The change feed works again too.
        while not await store.wait_for_change(0.5):
            pass
        waiting = asyncio.create_task(store.wait_for_change(5))
        await asyncio.sleep(0.05)
        await writer.promote_policy("acme", "src", "h1", "alice")
        assert await asyncio.wait_for(waiting, 1.0) is True
    finally:
        await store.close()
        await writer.close()

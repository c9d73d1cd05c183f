"""Fixtures of the storage conformance suite: every backend behind one ``backend`` fixture.

``backend.open()`` returns a new store on the same database each time: two calls model two replicas
(two PostgresStore pools, or two SQLiteStore connections on one file).
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from authz.storage import Store
from tests.pg import pg_fixtures

pg_cluster, pg_url = pg_fixtures()


class Backend:
    def __init__(self, name: str, factory: Callable[[], Store | Awaitable[Store]]):
        self.name = name
        self._factory = factory
        self._stores: list[Store] = []

    async def open(self) -> Store:
        store = self._factory()
        if inspect.isawaitable(store):
            store = await store
        self._stores.append(store)
        return store

    async def close(self) -> None:
        for store in reversed(self._stores):
            await store.close()


def _sqlite(path: Path) -> Callable[[], Store]:
    from authz.storage.sqlite import SQLiteStore

    return lambda: SQLiteStore(path)


def _postgres(url: str) -> Callable[[], Awaitable[Store]]:
    from authz.storage.postgres import PostgresStore

    async def factory() -> Store:
        store = PostgresStore(url)
        await store.open()
        return store

    return factory


@pytest.fixture(params=["sqlite", "postgres"])
async def backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Backend]:
    if request.param == "sqlite":
        b = Backend("sqlite", _sqlite(tmp_path / "tessera.db"))
    else:
        b = Backend("postgres", _postgres(request.getfixturevalue("pg_url")))
    try:
        yield b
    finally:
        await b.close()


@pytest.fixture
async def store(backend: Backend) -> Store:
    return await backend.open()

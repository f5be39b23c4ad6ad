"""Databases for the web integration tests: SQLite files and PostgreSQL, sync and async drivers.

The fixtures build the tables with a sync engine of their own and hand the app a fresh
`uow.Database` with an empty pool, so the framework's test client (which runs the app on
an event loop of its own) makes every connection it uses. Afterwards each fixture checks
that no connection is still checked out and no server session sits idle in a transaction.
Async PostgreSQL uses NullPool: asyncpg connections cannot move between event loops.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from sqlalchemy import create_engine
from sqlalchemy.engine import URL
from sqlalchemy.pool import NullPool

import uow
from tests import servers
from tests.conftest import Backend
from tests.integrations.web import Web, WebBase, enable_sqlite_foreign_keys
from tests.models import Base


def _web(backend: Backend, *, is_async: bool) -> Iterator[Web]:
    check = create_engine(backend.sync_url)
    enable_sqlite_foreign_keys(check)
    for metadata in (WebBase.metadata, Base.metadata):
        metadata.drop_all(check)
    Base.metadata.create_all(check)
    WebBase.metadata.create_all(check)
    url: URL = backend.url(is_async=is_async)
    options = {"poolclass": NullPool} if is_async and backend.server is not None else {}
    web = Web(uow.Database(url, engine_options=options), check)
    try:
        yield web
        assert web.checked_out == 0, f"{web.checked_out} connection(s) still checked out"
        if backend.server is not None:
            leaked = servers.open_transactions(backend.server)
            assert not leaked, f"server sessions left idle in a transaction: {leaked}"
    finally:
        asyncio.run(web.db.dispose_async())
        WebBase.metadata.drop_all(check)
        Base.metadata.drop_all(check)
        check.dispose()


@pytest.fixture
def web_sqlite(sqlite_backend: Backend) -> Iterator[Web]:
    """A sync Database on an SQLite file."""
    yield from _web(sqlite_backend, is_async=False)


@pytest.fixture
def web_async_sqlite(sqlite_backend: Backend) -> Iterator[Web]:
    """An async (aiosqlite) Database on an SQLite file."""
    yield from _web(sqlite_backend, is_async=True)


def _postgres(request: pytest.FixtureRequest) -> Backend:
    server: servers.Server = request.getfixturevalue("postgres_server")
    return Backend("postgresql", server.sync_url, server.async_url, server)


@pytest.fixture
def web_postgres(request: pytest.FixtureRequest) -> Iterator[Web]:
    """A sync (psycopg) Database on PostgreSQL."""
    yield from _web(_postgres(request), is_async=False)


@pytest.fixture
def web_async_postgres(request: pytest.FixtureRequest) -> Iterator[Web]:
    """An async (asyncpg, NullPool) Database on PostgreSQL."""
    yield from _web(_postgres(request), is_async=True)

"""Fixtures: a `Database` per test on SQLite, PostgreSQL and MariaDB, checked for leaks afterwards.

``sync_db`` / ``async_db`` are parametrised over the backends through ``backend``;
tests that only need SQLite use ``sqlite_db`` / ``async_sqlite_db``. Every fixture
creates the tables, drops them afterwards, and fails the test if a connection is
still checked out or a server session sits idle in a transaction.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import Connection, Engine
from sqlalchemy.engine import URL, make_url
from sqlalchemy.ext.asyncio import AsyncEngine

import uow
from tests import servers
from tests.models import Base
from uow._database import _default


@dataclass(frozen=True)
class Backend:
    """One database to run a test against: its name and URLs for the sync and async drivers."""

    name: str
    sync_url: URL
    async_url: URL
    server: servers.Server | None = None

    def url(self, *, is_async: bool) -> URL:
        return self.async_url if is_async else self.sync_url


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[servers.Server]:
    try:
        server = servers.create_postgres_database()
    except Exception as error:
        servers.unavailable("PostgreSQL", error)
    yield server
    servers.drop_postgres_database(server.database)


@pytest.fixture(scope="session")
def mariadb_server() -> Iterator[servers.Server]:
    try:
        server = servers.create_mysql_database()
    except Exception as error:
        servers.unavailable("MariaDB", error)
    yield server
    servers.drop_mysql_database(server.database)


def _sqlite_backend(tmp_path: Path) -> Backend:
    path = tmp_path / "uow.sqlite3"
    return Backend("sqlite", make_url(f"sqlite:///{path}"), make_url(f"sqlite+aiosqlite:///{path}"))


@pytest.fixture(params=["sqlite", "postgresql", "mariadb"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    """Each test using it runs once per database: SQLite file, PostgreSQL, MariaDB."""
    name = request.param
    if name == "sqlite":
        return _sqlite_backend(tmp_path)
    server: servers.Server = request.getfixturevalue("postgres_server" if name == "postgresql" else "mariadb_server")
    request.applymarker(pytest.mark.postgres if name == "postgresql" else pytest.mark.mariadb)
    return Backend(name, server.sync_url, server.async_url, server)


@pytest.fixture
def sqlite_backend(tmp_path: Path) -> Backend:
    return _sqlite_backend(tmp_path)


@pytest.fixture(autouse=True)
def _no_default_database() -> Iterator[None]:
    """Each test starts without a configured default, and leaves none behind."""
    previous = uow.get_default_database()
    _default.database = None  # configure() accepts only a Database: clearing it is the fixture's private business
    yield
    if previous is None:
        _default.database = None
    else:
        uow.configure(previous)


def _assert_clean(database: uow.Database, backend: Backend) -> None:
    engine = database.engine
    assert isinstance(engine, (Engine, AsyncEngine))
    pool = engine.pool
    assert pool.checkedout() == 0, f"{pool.checkedout()} connection(s) still checked out of {database!r}"  # type: ignore[attr-defined]
    if backend.server is not None:
        leaked = servers.open_transactions(backend.server)
        assert not leaked, f"server sessions left idle in a transaction: {leaked}"


# DDL is slow on MariaDB, so tables on a server are created when missing (other suites' fixtures
# may drop them) and a test's teardown only empties them. SQLite files are new for every test.
def _empty_tables(connection: Connection) -> None:
    for table in reversed(Base.metadata.sorted_tables):
        connection.execute(table.delete())


def make_sync_db(backend: Backend, **options: object) -> uow.Database:
    database = uow.Database(backend.sync_url, **options)  # type: ignore[arg-type]
    assert isinstance(database.engine, Engine)
    Base.metadata.create_all(database.engine, checkfirst=True)
    return database


def finish_sync_db(database: uow.Database, backend: Backend) -> None:
    try:
        _assert_clean(database, backend)
    finally:
        assert isinstance(database.engine, Engine)
        with database.engine.begin() as connection:
            _empty_tables(connection)
        database.dispose()


async def make_async_db(backend: Backend, **options: object) -> uow.Database:
    database = uow.Database(backend.async_url, **options)  # type: ignore[arg-type]
    assert isinstance(database.engine, AsyncEngine)
    async with database.engine.begin() as connection:
        await connection.run_sync(Base.metadata.create_all)
    return database


async def finish_async_db(database: uow.Database, backend: Backend) -> None:
    try:
        _assert_clean(database, backend)
    finally:
        assert isinstance(database.engine, AsyncEngine)
        async with database.engine.begin() as connection:
            await connection.run_sync(_empty_tables)
        await database.dispose_async()


@pytest.fixture
def sync_db(backend: Backend) -> Iterator[uow.Database]:
    """A sync Database on each backend, with the test tables; leak-checked afterwards."""
    database = make_sync_db(backend)
    yield database
    finish_sync_db(database, backend)


@pytest.fixture
async def async_db(backend: Backend) -> AsyncIterator[uow.Database]:
    """An async Database on each backend, with the test tables; leak-checked afterwards."""
    database = await make_async_db(backend)
    yield database
    await finish_async_db(database, backend)


@pytest.fixture
def sqlite_db(sqlite_backend: Backend) -> Iterator[uow.Database]:
    database = make_sync_db(sqlite_backend)
    yield database
    finish_sync_db(database, sqlite_backend)


@pytest.fixture
async def async_sqlite_db(sqlite_backend: Backend) -> AsyncIterator[uow.Database]:
    database = await make_async_db(sqlite_backend)
    yield database
    await finish_async_db(database, sqlite_backend)

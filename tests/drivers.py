"""One database per driver for the transaction-option tests: SQLite, PostgreSQL and MariaDB, sync and async.

`target(request, driver, tmp_path)` resolves a driver name to a URL on this run's database
(through the session fixtures ``postgres_server`` / ``mariadb_server`` of conftest, which
skip, or fail under UOW_REQUIRE_SERVERS=1, when the server is down). `open_database` /
`close_database` create and drop the test tables and check for leaks like conftest does.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession
from sqlalchemy.orm import Session

import uow
from tests import servers
from tests.models import Base

SYNC_DRIVERS = ["sqlite", "postgresql+psycopg", "postgresql+psycopg2", "mysql+pymysql"]
ASYNC_DRIVERS = [
    "sqlite+aiosqlite",
    "postgresql+asyncpg",
    "postgresql+psycopg_async",
    "mysql+aiomysql",
    "mysql+asyncmy",
]

# A pool of exactly one connection: the next unit provably reuses the connection the previous one returned.
ONE_CONNECTION = {"pool_size": 1, "max_overflow": 0}


@dataclass(frozen=True)
class Target:
    """A driver on a database of this run: its URL and, for PostgreSQL/MariaDB, the server database."""

    driver: str
    url: URL
    server: servers.Server | None

    @property
    def dialect(self) -> str:
        """``sqlite``, ``postgresql`` or ``mariadb``."""
        return self.server.name if self.server is not None else "sqlite"

    @property
    def is_async(self) -> bool:
        return self.driver in ASYNC_DRIVERS


def target(request: pytest.FixtureRequest, driver: str, tmp_path: Path) -> Target:
    """`driver` pointed at this run's database (a fresh SQLite file, or the per-run server database)."""
    if driver.startswith("sqlite"):
        return Target(driver, make_url(f"{driver}:///{tmp_path / 'uow.sqlite3'}"), None)
    if driver.startswith("postgresql"):
        server: servers.Server = request.getfixturevalue("postgres_server")
        request.applymarker(pytest.mark.postgres)
    else:
        server = request.getfixturevalue("mariadb_server")
        request.applymarker(pytest.mark.mariadb)
    return Target(driver, server.sync_url.set(drivername=driver), server)


def url_for(target: Target, database: str) -> URL:
    """The same driver on another database of the same server (or another SQLite file)."""
    if target.server is None:
        return target.url.set(database=str(Path(target.url.database or "").with_name(f"{database}.sqlite3")))
    return target.url.set(database=database)


def open_sync(target: Target, **options: Any) -> uow.Database:
    database = uow.Database(target.url, **options)
    assert isinstance(database.engine, Engine)
    Base.metadata.drop_all(database.engine)
    Base.metadata.create_all(database.engine)
    return database


def close_sync(database: uow.Database, target: Target) -> None:
    try:
        assert_clean(database, target.server)
    finally:
        assert isinstance(database.engine, Engine)
        Base.metadata.drop_all(database.engine)
        database.dispose()


async def open_async(target: Target, **options: Any) -> uow.Database:
    database = uow.Database(target.url, **options)
    assert isinstance(database.engine, AsyncEngine)
    async with database.engine.begin() as connection:
        await connection.run_sync(Base.metadata.drop_all)
        await connection.run_sync(Base.metadata.create_all)
    return database


async def close_async(database: uow.Database, target: Target) -> None:
    try:
        assert_clean(database, target.server)
    finally:
        assert isinstance(database.engine, AsyncEngine)
        async with database.engine.begin() as connection:
            await connection.run_sync(Base.metadata.drop_all)
        await database.dispose_async()


def assert_clean(database: uow.Database, server: servers.Server | None) -> None:
    """No connection checked out of any engine of `database`, no server session idle in a transaction."""
    for factory in [database.session_factory, *database.replica_factories]:
        engine = factory.kw["bind"]
        pool = engine.pool
        assert pool.checkedout() == 0, f"{pool.checkedout()} connection(s) still checked out of {engine.url}"
    if server is not None:
        leaked = servers.open_transactions(server)
        assert not leaked, f"server sessions left idle in a transaction: {leaked}"


def connection_id(session: Session) -> int:
    """Identity of the driver connection under `session` (to prove a pooled connection was reused)."""
    return id(session.connection().connection.driver_connection)


async def connection_id_async(session: AsyncSession) -> int:
    raw = await (await session.connection()).get_raw_connection()
    return id(raw.driver_connection)


def isolation_query(dialect: str) -> str:
    """The statement that reports the isolation level the current transaction runs at."""
    if dialect == "postgresql":
        return "SHOW transaction_isolation"
    if dialect == "mariadb":
        # MariaDB 10.11 has no @@transaction_isolation (MySQL 8 dropped @@tx_isolation instead).
        return "SELECT @@tx_isolation"
    return "PRAGMA read_uncommitted"


def normalise_level(value: object) -> str:
    """'read committed' / 'READ-COMMITTED' -> 'READ COMMITTED'; SQLite's read_uncommitted flag -> its level."""
    if isinstance(value, int):
        return "READ UNCOMMITTED" if value else "SERIALIZABLE"
    return str(value).upper().replace("-", " ")


def default_level(dialect: str) -> str:
    return {"postgresql": "READ COMMITTED", "mariadb": "REPEATABLE READ"}.get(dialect, "SERIALIZABLE")


def backend_id_query(dialect: str) -> str:
    """The statement that returns the server's id for the current connection (what an admin kills)."""
    return "SELECT pg_backend_pid()" if dialect == "postgresql" else "SELECT CONNECTION_ID()"


def kill(server: servers.Server, backend_id: int) -> None:
    """End one server session from an admin connection, the way an operator or a failover would."""
    if server.name == "postgresql":
        admin = create_engine(servers.POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
        # The timeout makes pg_terminate_backend wait until the backend is gone.
        statement = text("SELECT pg_terminate_backend(:id, 5000)").bindparams(id=backend_id)
    else:
        admin = create_engine(servers.MYSQL_ADMIN_URL, isolation_level="AUTOCOMMIT")
        statement = text(f"KILL {int(backend_id)}")
    try:
        with admin.connect() as connection:
            connection.execute(statement)
    finally:
        admin.dispose()

"""`Database(..., replicas=[...])`: read-only units read from a replica, round-robin; everything else, the primary.

The primary and each replica are separate databases on the same server (separate files
for SQLite), each holding one row that names it, so every unit shows where it ran.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import Engine, create_engine, delete, insert, select
from sqlalchemy.engine import URL
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

import uow
from tests import drivers, servers
from tests.drivers import Target
from tests.models import Base, Item, ItemService

SYNC_TWIN = {
    "sqlite+aiosqlite": "sqlite",
    "postgresql+asyncpg": "postgresql+psycopg",
    "mysql+aiomysql": "mysql+pymysql",
}
ROLES = ["primary", "replica 1", "replica 2"]


@dataclass
class Cluster:
    """A primary and two replicas: their URLs for the driver under test, in ROLES order."""

    target: Target
    urls: list[URL]
    replica_servers: list[servers.Server]

    def database(self) -> uow.Database:
        return uow.Database(self.urls[0], replicas=self.urls[1:])

    def contents(self) -> dict[str, list[str]]:
        """What each database holds, read with a sync engine of its own."""
        found: dict[str, list[str]] = {}
        for role, url in zip(ROLES, self.urls, strict=True):
            engine = sync_engine(url)
            try:
                with engine.connect() as connection:
                    found[role] = list(connection.scalars(select(Item.name).order_by(Item.name)))
            finally:
                engine.dispose()
        return found

    def assert_clean(self, database: uow.Database) -> None:
        drivers.assert_clean(database, self.target.server)
        for server in self.replica_servers:
            leaked = servers.open_transactions(server)
            assert not leaked, f"replica sessions left idle in a transaction: {leaked}"


def sync_engine(url: URL) -> Engine:
    return create_engine(url.set(drivername=SYNC_TWIN.get(url.drivername, url.drivername)))


def seed(url: URL, role: str) -> None:
    """The test tables in `url`'s database, holding one row: `role`."""
    engine = sync_engine(url)
    try:
        Base.metadata.create_all(engine)
        with engine.begin() as connection:
            connection.execute(delete(Item))
            connection.execute(insert(Item).values(name=role))
    finally:
        engine.dispose()


def empty(url: URL) -> None:
    engine = sync_engine(url)
    try:
        with engine.begin() as connection:
            connection.execute(delete(Item))
    finally:
        engine.dispose()


@pytest.fixture(scope="module")
def postgres_replicas(postgres_server: servers.Server) -> Iterator[list[servers.Server]]:
    """Two more databases on the PostgreSQL server, for this module (CREATE DATABASE is slow)."""
    created = [servers.create_postgres_database() for _ in range(2)]
    yield created
    for server in created:
        servers.drop_postgres_database(server.database)


@pytest.fixture(scope="module")
def mariadb_replicas(mariadb_server: servers.Server) -> Iterator[list[servers.Server]]:
    created = [servers.create_mysql_database() for _ in range(2)]
    yield created
    for server in created:
        servers.drop_mysql_database(server.database)


def build_cluster(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Cluster]:
    target = drivers.target(request, request.param, tmp_path)
    replica_servers: list[servers.Server] = []
    if target.server is None:
        replica_urls = [drivers.url_for(target, f"replica{n}") for n in (1, 2)]
    else:
        fixture = "postgres_replicas" if target.dialect == "postgresql" else "mariadb_replicas"
        replica_servers = request.getfixturevalue(fixture)
        replica_urls = [target.url.set(database=server.database) for server in replica_servers]
    cluster = Cluster(target, [target.url, *replica_urls], replica_servers)
    try:
        for role, url in zip(ROLES, cluster.urls, strict=True):
            seed(url, role)
        yield cluster
    finally:
        for url in cluster.urls:
            empty(url)


@pytest.fixture(params=["sqlite", "postgresql+psycopg", "mysql+pymysql"])
def cluster(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Cluster]:
    yield from build_cluster(request, tmp_path)


@pytest.fixture(params=["sqlite+aiosqlite", "postgresql+asyncpg", "mysql+aiomysql"])
def async_cluster(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Cluster]:
    yield from build_cluster(request, tmp_path)


@pytest.fixture
def db(cluster: Cluster) -> Iterator[uow.Database]:
    database = cluster.database()
    yield database
    try:
        cluster.assert_clean(database)
    finally:
        database.dispose()


@pytest.fixture
async def adb(async_cluster: Cluster) -> AsyncIterator[uow.Database]:
    database = async_cluster.database()
    yield database
    try:
        async_cluster.assert_clean(database)
    finally:
        await database.dispose_async()


# -- sync ---------------------------------------------------------------------------------------


def test_read_only_units_read_from_the_replicas_in_turn(db: uow.Database) -> None:
    @uow.unit_of_work(database=db, read_only=True)
    def read(session: Session) -> list[str]:
        return list(session.scalars(select(Item.name)))

    @uow.unit_of_work(database=db)
    def read_for_writing(session: Session) -> list[str]:
        return list(session.scalars(select(Item.name)))

    seen = [read(), read(), read_for_writing(), read(), read()]
    assert seen == [["replica 1"], ["replica 2"], ["primary"], ["replica 1"], ["replica 2"]]


def test_writes_go_to_the_primary_only(db: uow.Database, cluster: Cluster) -> None:
    @uow.unit_of_work(database=db)
    def write(session: Session) -> None:
        session.add(Item(name="written"))

    @uow.with_services(ItemService, database=db)
    def write_with_a_service(items: ItemService) -> None:
        items.add("by a service")

    write()
    write_with_a_service()
    assert cluster.contents() == {
        "primary": ["by a service", "primary", "written"],
        "replica 1": ["replica 1"],
        "replica 2": ["replica 2"],
    }


def test_a_read_only_unit_cannot_write_to_a_replica(db: uow.Database, cluster: Cluster) -> None:
    @uow.unit_of_work(database=db, read_only=True)
    def write(session: Session) -> None:
        session.execute(insert(Item).values(name="refused"))

    for _ in ROLES[1:]:
        with pytest.raises(DBAPIError):
            write()
    assert cluster.contents() == {"primary": ["primary"], "replica 1": ["replica 1"], "replica 2": ["replica 2"]}


def test_a_read_only_unit_joined_into_a_read_write_one_stays_on_the_primary(db: uow.Database) -> None:
    @uow.unit_of_work(database=db, read_only=True)
    def read(session: Session) -> tuple[Session, list[str]]:
        return session, list(session.scalars(select(Item.name).order_by(Item.name)))

    with uow.unit_of_work(database=db) as outer:
        outer.add(Item(name="not committed yet"))
        outer.flush()
        inner, seen = read()
    assert inner is outer
    assert seen == ["not committed yet", "primary"]


def test_read_only_units_joined_together_share_one_replica(db: uow.Database) -> None:
    @uow.unit_of_work(database=db, read_only=True)
    def read(session: Session) -> tuple[Session, list[str]]:
        return session, list(session.scalars(select(Item.name)))

    with uow.unit_of_work(database=db, read_only=True) as outer:
        first = read()
        second = read()
    assert first == second == (outer, ["replica 1"])
    assert read()[1] == ["replica 2"]


def test_a_read_only_unit_of_its_own_inside_a_read_write_one_goes_to_a_replica(db: uow.Database) -> None:
    @uow.unit_of_work(database=db, read_only=True, propagation="requires_new")
    def read(session: Session) -> list[str]:
        return list(session.scalars(select(Item.name)))

    with uow.unit_of_work(database=db) as outer:
        outer.add(Item(name="written"))
        assert read() == ["replica 1"]


# -- async --------------------------------------------------------------------------------------


async def test_async_read_only_units_read_from_the_replicas_in_turn(adb: uow.Database) -> None:
    @uow.unit_of_work(database=adb, read_only=True)
    async def read(session: AsyncSession) -> list[str]:
        return list((await session.scalars(select(Item.name))).all())

    @uow.unit_of_work(database=adb)
    async def read_for_writing(session: AsyncSession) -> list[str]:
        return list((await session.scalars(select(Item.name))).all())

    seen = [await read(), await read(), await read_for_writing(), await read(), await read()]
    assert seen == [["replica 1"], ["replica 2"], ["primary"], ["replica 1"], ["replica 2"]]


async def test_async_writes_go_to_the_primary_only(adb: uow.Database, async_cluster: Cluster) -> None:
    @uow.unit_of_work(database=adb)
    async def write(session: AsyncSession) -> None:
        session.add(Item(name="written"))

    @uow.unit_of_work(database=adb, read_only=True)
    async def refused(session: AsyncSession) -> None:
        await session.execute(insert(Item).values(name="refused"))

    await write()
    for _ in ROLES[1:]:
        with pytest.raises(DBAPIError):
            await refused()
    assert async_cluster.contents() == {
        "primary": ["primary", "written"],
        "replica 1": ["replica 1"],
        "replica 2": ["replica 2"],
    }


async def test_async_a_read_only_unit_joined_into_a_read_write_one_stays_on_the_primary(adb: uow.Database) -> None:
    @uow.unit_of_work(database=adb, read_only=True)
    async def read(session: AsyncSession) -> tuple[AsyncSession, list[str]]:
        return session, list((await session.scalars(select(Item.name).order_by(Item.name))).all())

    async with uow.unit_of_work(database=adb) as outer:
        outer.add(Item(name="not committed yet"))
        await outer.flush()
        inner, seen = await read()
    assert inner is outer
    assert seen == ["not committed yet", "primary"]

"""`read_only=` and `isolation_level=` on the real databases, through every driver uow supports.

Each Database here has a pool of one connection, so "the next unit" provably runs on the
connection the previous unit handed back: what a unit set must not outlive it.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, event, insert, select, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from sqlalchemy.orm import Session, sessionmaker

import uow
from tests import drivers
from tests.drivers import ASYNC_DRIVERS, ONE_CONNECTION, SYNC_DRIVERS, Target
from tests.models import Item

# PostgreSQL: "read-only transaction"; MariaDB: "READ ONLY transaction"; SQLite: "readonly database".
READ_ONLY_REFUSAL = re.compile(r"read.?only", re.IGNORECASE)

LEVELS = {
    "postgresql": ["SERIALIZABLE", "REPEATABLE READ", "READ COMMITTED"],
    "mariadb": ["SERIALIZABLE", "READ COMMITTED", "READ UNCOMMITTED"],
    "sqlite": ["READ UNCOMMITTED"],
}
# A level other than the default, for each database: what an outer unit runs at in the join tests.
OTHER_LEVEL = {"postgresql": "SERIALIZABLE", "mariadb": "SERIALIZABLE", "sqlite": "READ UNCOMMITTED"}


@pytest.fixture(params=SYNC_DRIVERS)
def sync_target(request: pytest.FixtureRequest, tmp_path: Path) -> Target:
    return drivers.target(request, request.param, tmp_path)


@pytest.fixture(params=ASYNC_DRIVERS)
def async_target(request: pytest.FixtureRequest, tmp_path: Path) -> Target:
    return drivers.target(request, request.param, tmp_path)


@pytest.fixture
def db(sync_target: Target) -> Iterator[uow.Database]:
    database = drivers.open_sync(sync_target, engine_options=ONE_CONNECTION)
    yield database
    drivers.close_sync(database, sync_target)


@pytest.fixture
async def adb(async_target: Target) -> AsyncIterator[uow.Database]:
    database = await drivers.open_async(async_target, engine_options=ONE_CONNECTION)
    yield database
    await drivers.close_async(database, async_target)


def count_transactions(database: uow.Database) -> dict[str, int]:
    """Live counts of COMMIT and ROLLBACK issued through `database`'s engine."""
    engine = database.engine
    sync_engine = engine.sync_engine if isinstance(engine, AsyncEngine) else engine
    assert isinstance(sync_engine, Engine)
    counts = {"commit": 0, "rollback": 0}

    def on_commit(_connection: object) -> None:
        counts["commit"] += 1

    def on_rollback(_connection: object) -> None:
        counts["rollback"] += 1

    event.listen(sync_engine, "commit", on_commit)
    event.listen(sync_engine, "rollback", on_rollback)
    return counts


def names_sync(database: uow.Database) -> list[str]:
    with uow.unit_of_work(database=database) as session:
        return list(session.scalars(select(Item.name).order_by(Item.name)))


async def names_async(database: uow.Database) -> list[str]:
    async with uow.unit_of_work(database=database) as session:
        return list((await session.scalars(select(Item.name).order_by(Item.name))).all())


# -- read_only, sync ---------------------------------------------------------------------------


def test_read_only_unit_refuses_writes_and_never_commits(db: uow.Database) -> None:
    counts = count_transactions(db)
    used: list[int] = []

    @uow.unit_of_work(database=db, read_only=True)
    def write(session: Session) -> None:
        used.append(drivers.connection_id(session))
        session.execute(insert(Item).values(name="refused"))

    with pytest.raises(DBAPIError, match=READ_ONLY_REFUSAL):
        write()
    assert counts == {"commit": 0, "rollback": 1}

    @uow.unit_of_work(database=db)
    def write_for_real(session: Session) -> int:
        session.execute(insert(Item).values(name="accepted"))
        return drivers.connection_id(session)

    assert write_for_real() == used[0], "the pool of one should hand the same connection back"
    assert counts["commit"] == 1
    assert names_sync(db) == ["accepted"]


def test_read_only_unit_that_succeeds_rolls_back_and_leaves_the_connection_writable(db: uow.Database) -> None:
    with uow.unit_of_work(database=db) as session:
        session.add(Item(name="existing"))
    counts = count_transactions(db)

    @uow.unit_of_work(database=db, read_only=True)
    def read(session: Session) -> list[str]:
        return list(session.scalars(select(Item.name)))

    @uow.unit_of_work(database=db, read_only=True)
    def nothing() -> None:
        """Only the read-only setup runs: its effect must still end with the unit."""

    assert read() == ["existing"]
    nothing()
    assert counts["commit"] == 0
    with uow.unit_of_work(database=db) as session:
        session.add(Item(name="written after"))
    assert counts["commit"] == 1
    assert names_sync(db) == ["existing", "written after"]


def test_read_only_unit_that_raises_leaves_the_connection_writable(db: uow.Database) -> None:
    @uow.unit_of_work(database=db, read_only=True)
    def fail(session: Session) -> None:
        session.execute(select(Item.id))
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        fail()
    with uow.unit_of_work(database=db) as session:
        session.add(Item(name="written"))
    assert names_sync(db) == ["written"]


def test_read_only_unit_refuses_writes_again_after_rolling_back_inside(db: uow.Database) -> None:
    # A rollback inside the unit is reported (OwnershipError); code that catches it and writes on
    # gets a new transaction, and that one must refuse writes too.
    @uow.unit_of_work(database=db, read_only=True)
    def write_after_rollback(session: Session) -> None:
        session.execute(select(Item.id))
        with pytest.raises(uow.OwnershipError):
            session.rollback()
        session.execute(insert(Item).values(name="refused"))

    @uow.unit_of_work(database=db, read_only=True)
    def end_with_rollback(session: Session) -> None:
        session.execute(select(Item.id))
        with pytest.raises(uow.OwnershipError):
            session.rollback()

    with pytest.raises(DBAPIError, match=READ_ONLY_REFUSAL):
        write_after_rollback()
    with pytest.raises(uow.RollbackOnlyError, match="rolled back or closed"):
        end_with_rollback()
    with uow.unit_of_work(database=db) as session:
        session.add(Item(name="written"))
    assert names_sync(db) == ["written"]


def test_sqlite_query_only_is_switched_off_when_the_unit_ends(request: pytest.FixtureRequest, tmp_path: Path) -> None:
    target = drivers.target(request, "sqlite", tmp_path)
    db = drivers.open_sync(target, engine_options=ONE_CONNECTION)
    with uow.unit_of_work(database=db, read_only=True) as session:
        inside = session.execute(text("PRAGMA query_only")).scalar()
    with uow.unit_of_work(database=db) as session:
        after = session.execute(text("PRAGMA query_only")).scalar()
    drivers.close_sync(db, target)
    assert (inside, after) == (1, 0)


def test_read_write_unit_cannot_join_a_read_only_one(db: uow.Database) -> None:
    @uow.unit_of_work(database=db)
    def write(session: Session) -> None:
        session.add(Item(name="never"))

    with pytest.raises(uow.PropagationError, match="read_only=True"), uow.unit_of_work(database=db, read_only=True):
        write()
    assert names_sync(db) == []


def test_read_only_unit_joins_a_read_write_one_and_shares_its_session(db: uow.Database) -> None:
    @uow.unit_of_work(database=db, read_only=True)
    def read(session: Session) -> tuple[Session, list[str]]:
        return session, list(session.scalars(select(Item.name)))

    with uow.unit_of_work(database=db) as outer:
        outer.add(Item(name="outer"))
        outer.flush()
        inner, seen = read()
        outer.add(Item(name="after the read"))
    assert inner is outer
    assert seen == ["outer"]
    assert names_sync(db) == ["after the read", "outer"]


# -- read_only, async --------------------------------------------------------------------------


async def test_async_read_only_unit_refuses_writes_and_never_commits(adb: uow.Database) -> None:
    counts = count_transactions(adb)
    used: list[int] = []

    @uow.unit_of_work(database=adb, read_only=True)
    async def write(session: AsyncSession) -> None:
        used.append(await drivers.connection_id_async(session))
        await session.execute(insert(Item).values(name="refused"))

    with pytest.raises(DBAPIError, match=READ_ONLY_REFUSAL):
        await write()
    assert counts == {"commit": 0, "rollback": 1}

    @uow.unit_of_work(database=adb)
    async def write_for_real(session: AsyncSession) -> int:
        await session.execute(insert(Item).values(name="accepted"))
        return await drivers.connection_id_async(session)

    assert await write_for_real() == used[0], "the pool of one should hand the same connection back"
    assert counts["commit"] == 1
    assert await names_async(adb) == ["accepted"]


async def test_async_read_only_unit_that_succeeds_rolls_back_and_leaves_the_connection_writable(
    adb: uow.Database,
) -> None:
    async with uow.unit_of_work(database=adb) as session:
        session.add(Item(name="existing"))
    counts = count_transactions(adb)

    @uow.unit_of_work(database=adb, read_only=True)
    async def read(session: AsyncSession) -> list[str]:
        return list((await session.scalars(select(Item.name))).all())

    @uow.unit_of_work(database=adb, read_only=True)
    async def nothing() -> None:
        """Only the read-only setup runs: its effect must still end with the unit."""

    assert await read() == ["existing"]
    await nothing()
    assert counts["commit"] == 0
    async with uow.unit_of_work(database=adb) as session:
        session.add(Item(name="written after"))
    assert counts["commit"] == 1
    assert await names_async(adb) == ["existing", "written after"]


async def test_async_read_only_unit_that_raises_leaves_the_connection_writable(adb: uow.Database) -> None:
    @uow.unit_of_work(database=adb, read_only=True)
    async def fail(session: AsyncSession) -> None:
        await session.execute(select(Item.id))
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        await fail()
    async with uow.unit_of_work(database=adb) as session:
        session.add(Item(name="written"))
    assert await names_async(adb) == ["written"]


async def test_async_read_only_unit_refuses_writes_again_after_rolling_back_inside(adb: uow.Database) -> None:
    @uow.unit_of_work(database=adb, read_only=True)
    async def write_after_rollback(session: AsyncSession) -> None:
        await session.execute(select(Item.id))
        with pytest.raises(uow.OwnershipError):
            await session.rollback()
        await session.execute(insert(Item).values(name="refused"))

    @uow.unit_of_work(database=adb, read_only=True)
    async def end_with_rollback(session: AsyncSession) -> None:
        await session.execute(select(Item.id))
        with pytest.raises(uow.OwnershipError):
            await session.rollback()

    with pytest.raises(DBAPIError, match=READ_ONLY_REFUSAL):
        await write_after_rollback()
    with pytest.raises(uow.RollbackOnlyError, match="rolled back or closed"):
        await end_with_rollback()
    async with uow.unit_of_work(database=adb) as session:
        session.add(Item(name="written"))
    assert await names_async(adb) == ["written"]


async def test_async_sqlite_query_only_is_switched_off_when_the_unit_ends(
    request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    target = drivers.target(request, "sqlite+aiosqlite", tmp_path)
    adb = await drivers.open_async(target, engine_options=ONE_CONNECTION)
    async with uow.unit_of_work(database=adb, read_only=True) as session:
        inside = (await session.execute(text("PRAGMA query_only"))).scalar()
    async with uow.unit_of_work(database=adb) as session:
        after = (await session.execute(text("PRAGMA query_only"))).scalar()
    await drivers.close_async(adb, target)
    assert (inside, after) == (1, 0)


async def test_async_read_write_unit_cannot_join_a_read_only_one(adb: uow.Database) -> None:
    @uow.unit_of_work(database=adb)
    async def write(session: AsyncSession) -> None:
        session.add(Item(name="never"))

    with pytest.raises(uow.PropagationError, match="read_only=True"):
        async with uow.unit_of_work(database=adb, read_only=True):
            await write()
    assert await names_async(adb) == []


async def test_async_read_only_unit_joins_a_read_write_one_and_shares_its_session(adb: uow.Database) -> None:
    @uow.unit_of_work(database=adb, read_only=True)
    async def read(session: AsyncSession) -> tuple[AsyncSession, list[str]]:
        return session, list((await session.scalars(select(Item.name))).all())

    async with uow.unit_of_work(database=adb) as outer:
        outer.add(Item(name="outer"))
        await outer.flush()
        inner, seen = await read()
        outer.add(Item(name="after the read"))
    assert inner is outer
    assert seen == ["outer"]
    assert await names_async(adb) == ["after the read", "outer"]


# -- isolation_level, sync -----------------------------------------------------------------------


def test_isolation_level_holds_inside_the_unit_and_is_gone_after_it(db: uow.Database, sync_target: Target) -> None:
    query = text(drivers.isolation_query(sync_target.dialect))
    for level in LEVELS[sync_target.dialect]:

        @uow.unit_of_work(database=db, isolation_level=level)
        def inside(session: Session) -> tuple[str, int]:
            return drivers.normalise_level(session.execute(query).scalar()), drivers.connection_id(session)

        @uow.unit_of_work(database=db)
        def after(session: Session) -> tuple[str, int]:
            return drivers.normalise_level(session.execute(query).scalar()), drivers.connection_id(session)

        seen, connection = inside()
        assert seen == level
        assert after() == (drivers.default_level(sync_target.dialect), connection)


def test_isolation_level_holds_for_every_transaction_of_the_unit(db: uow.Database, sync_target: Target) -> None:
    level = OTHER_LEVEL[sync_target.dialect]
    query = text(drivers.isolation_query(sync_target.dialect))

    seen: list[str] = []

    # A rollback inside the unit is reported (OwnershipError) and dooms the unit; code that catches
    # it and carries on runs in a new transaction, at the unit's level too.
    @uow.unit_of_work(database=db, isolation_level=level)
    def roll_back_halfway(session: Session) -> None:
        seen.append(drivers.normalise_level(session.execute(query).scalar()))
        session.add(Item(name="first half"))
        with pytest.raises(uow.OwnershipError):
            session.rollback()
        seen.append(drivers.normalise_level(session.execute(query).scalar()))

    with pytest.raises(uow.RollbackOnlyError):
        roll_back_halfway()
    assert seen == [level, level]
    with uow.unit_of_work(database=db) as session:
        assert drivers.normalise_level(session.execute(query).scalar()) == drivers.default_level(sync_target.dialect)


def test_isolation_level_with_read_only(db: uow.Database, sync_target: Target) -> None:
    level = OTHER_LEVEL[sync_target.dialect]
    query = text(drivers.isolation_query(sync_target.dialect))

    @uow.unit_of_work(database=db, read_only=True, isolation_level=level)
    def read_then_write(session: Session) -> str:
        seen = drivers.normalise_level(session.execute(query).scalar())
        session.execute(insert(Item).values(name="refused"))
        return seen

    with pytest.raises(DBAPIError, match=READ_ONLY_REFUSAL):
        read_then_write()
    with uow.unit_of_work(database=db, read_only=True, isolation_level=level) as session:
        assert drivers.normalise_level(session.execute(query).scalar()) == level
    with uow.unit_of_work(database=db) as session:
        session.add(Item(name="written"))
        assert drivers.normalise_level(session.execute(query).scalar()) == drivers.default_level(sync_target.dialect)
    assert names_sync(db) == ["written"]


def test_joining_with_another_isolation_level_is_refused(db: uow.Database, sync_target: Target) -> None:
    level = OTHER_LEVEL[sync_target.dialect]
    other = drivers.default_level(sync_target.dialect)
    query = text(drivers.isolation_query(sync_target.dialect))

    @uow.unit_of_work(database=db, isolation_level=other)
    def at_other_level(session: Session) -> None:
        session.add(Item(name="never"))

    @uow.unit_of_work(database=db, isolation_level=level)
    def at_same_level(session: Session) -> str:
        return drivers.normalise_level(session.execute(query).scalar())

    @uow.unit_of_work(database=db)
    def at_any_level(session: Session) -> str:
        return drivers.normalise_level(session.execute(query).scalar())

    with (
        pytest.raises(uow.PropagationError, match="isolation_level"),
        uow.unit_of_work(database=db, isolation_level=level),
    ):
        at_other_level()
    with uow.unit_of_work(database=db, isolation_level=level):
        assert at_same_level() == level
        assert at_any_level() == level
    assert names_sync(db) == []


def test_savepoints_still_work_after_an_isolation_level_unit(db: uow.Database, sync_target: Target) -> None:
    with uow.unit_of_work(database=db, isolation_level=OTHER_LEVEL[sync_target.dialect]) as session:
        session.execute(select(Item.id))
    with uow.unit_of_work(database=db) as session:
        session.add(Item(name="kept"))
        session.flush()
        with pytest.raises(RuntimeError), uow.unit_of_work(database=db, propagation="nested") as inner:
            inner.add(Item(name="dropped"))
            inner.flush()
            raise RuntimeError("roll back to the savepoint")
    assert names_sync(db) == ["kept"]


# -- isolation_level, async ----------------------------------------------------------------------


async def test_async_isolation_level_holds_inside_the_unit_and_is_gone_after_it(
    adb: uow.Database, async_target: Target
) -> None:
    query = text(drivers.isolation_query(async_target.dialect))
    for level in LEVELS[async_target.dialect]:

        @uow.unit_of_work(database=adb, isolation_level=level)
        async def inside(session: AsyncSession) -> tuple[str, int]:
            seen = (await session.execute(query)).scalar()
            return drivers.normalise_level(seen), await drivers.connection_id_async(session)

        @uow.unit_of_work(database=adb)
        async def after(session: AsyncSession) -> tuple[str, int]:
            seen = (await session.execute(query)).scalar()
            return drivers.normalise_level(seen), await drivers.connection_id_async(session)

        seen, connection = await inside()
        assert seen == level
        assert await after() == (drivers.default_level(async_target.dialect), connection)


async def test_async_isolation_level_holds_for_every_transaction_of_the_unit(
    adb: uow.Database, async_target: Target
) -> None:
    level = OTHER_LEVEL[async_target.dialect]
    query = text(drivers.isolation_query(async_target.dialect))

    seen: list[str] = []

    @uow.unit_of_work(database=adb, isolation_level=level)
    async def roll_back_halfway(session: AsyncSession) -> None:
        seen.append(drivers.normalise_level((await session.execute(query)).scalar()))
        session.add(Item(name="first half"))
        with pytest.raises(uow.OwnershipError):
            await session.rollback()
        seen.append(drivers.normalise_level((await session.execute(query)).scalar()))

    with pytest.raises(uow.RollbackOnlyError):
        await roll_back_halfway()
    assert seen == [level, level]
    async with uow.unit_of_work(database=adb) as session:
        seen = drivers.normalise_level((await session.execute(query)).scalar())
        assert seen == drivers.default_level(async_target.dialect)


async def test_async_isolation_level_with_read_only(adb: uow.Database, async_target: Target) -> None:
    level = OTHER_LEVEL[async_target.dialect]
    query = text(drivers.isolation_query(async_target.dialect))

    @uow.unit_of_work(database=adb, read_only=True, isolation_level=level)
    async def read_then_write(session: AsyncSession) -> str:
        seen = drivers.normalise_level((await session.execute(query)).scalar())
        await session.execute(insert(Item).values(name="refused"))
        return seen

    with pytest.raises(DBAPIError, match=READ_ONLY_REFUSAL):
        await read_then_write()
    async with uow.unit_of_work(database=adb, read_only=True, isolation_level=level) as session:
        assert drivers.normalise_level((await session.execute(query)).scalar()) == level
    async with uow.unit_of_work(database=adb) as session:
        session.add(Item(name="written"))
        seen = drivers.normalise_level((await session.execute(query)).scalar())
        assert seen == drivers.default_level(async_target.dialect)
    assert await names_async(adb) == ["written"]


async def test_async_joining_with_another_isolation_level_is_refused(adb: uow.Database, async_target: Target) -> None:
    level = OTHER_LEVEL[async_target.dialect]
    other = drivers.default_level(async_target.dialect)
    query = text(drivers.isolation_query(async_target.dialect))

    @uow.unit_of_work(database=adb, isolation_level=other)
    async def at_other_level(session: AsyncSession) -> None:
        session.add(Item(name="never"))

    @uow.unit_of_work(database=adb)
    async def at_any_level(session: AsyncSession) -> str:
        return drivers.normalise_level((await session.execute(query)).scalar())

    with pytest.raises(uow.PropagationError, match="isolation_level"):
        async with uow.unit_of_work(database=adb, isolation_level=level):
            await at_other_level()
    async with uow.unit_of_work(database=adb, isolation_level=level):
        assert await at_any_level() == level
    assert await names_async(adb) == []


async def test_async_savepoints_still_work_after_an_isolation_level_unit(
    adb: uow.Database, async_target: Target
) -> None:
    async with uow.unit_of_work(database=adb, isolation_level=OTHER_LEVEL[async_target.dialect]) as session:
        await session.execute(select(Item.id))
    async with uow.unit_of_work(database=adb) as session:
        session.add(Item(name="kept"))
        await session.flush()
        with pytest.raises(RuntimeError):
            async with uow.unit_of_work(database=adb, propagation="nested") as inner:
                inner.add(Item(name="dropped"))
                await inner.flush()
                raise RuntimeError("roll back to the savepoint")
    assert await names_async(adb) == ["kept"]


# -- a caller's connection (what uow.testing binds units to) -------------------------------------


def test_read_only_unit_on_a_callers_connection_leaves_its_transaction_writable(
    db: uow.Database, sync_target: Target
) -> None:
    assert isinstance(db.engine, Engine)
    with db.engine.connect() as connection:
        connection.begin()
        factory = sessionmaker(bind=connection, join_transaction_mode="create_savepoint", expire_on_commit=False)
        bound = uow.Database(session_factory=factory)

        @uow.unit_of_work(database=bound, read_only=True)
        def write(session: Session) -> None:
            session.execute(insert(Item).values(name="in a read-only unit"))

        if sync_target.dialect == "mariadb":
            write()  # MySQL cannot make the caller's running transaction read-only; the unit still rolls back
        else:
            with pytest.raises(DBAPIError, match=READ_ONLY_REFUSAL):
                write()
        with uow.unit_of_work(database=bound) as session:
            session.add(Item(name="written"))
        with uow.unit_of_work(database=bound, read_only=True) as session:
            assert list(session.scalars(select(Item.name))) == ["written"]
        connection.rollback()
    assert names_sync(db) == []


async def test_async_read_only_unit_on_a_callers_connection_leaves_its_transaction_writable(
    adb: uow.Database, async_target: Target
) -> None:
    assert isinstance(adb.engine, AsyncEngine)
    async with adb.engine.connect() as connection:
        await connection.begin()
        factory = async_sessionmaker(bind=connection, join_transaction_mode="create_savepoint", expire_on_commit=False)
        bound = uow.Database(session_factory=factory)

        @uow.unit_of_work(database=bound, read_only=True)
        async def write(session: AsyncSession) -> None:
            await session.execute(insert(Item).values(name="in a read-only unit"))

        if async_target.dialect == "mariadb":
            await write()  # MySQL cannot make the caller's running transaction read-only; the unit still rolls back
        else:
            with pytest.raises(DBAPIError, match=READ_ONLY_REFUSAL):
                await write()
        async with uow.unit_of_work(database=bound) as session:
            session.add(Item(name="written"))
        async with uow.unit_of_work(database=bound, read_only=True) as session:
            assert list((await session.scalars(select(Item.name))).all()) == ["written"]
        await connection.rollback()
    assert await names_async(adb) == []

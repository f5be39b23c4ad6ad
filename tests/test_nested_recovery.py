"""`nested` recovers from the errors people recover from (issue 10, section 2).

A constraint violation inside a nested unit, whether its flush fails in the body or when the
savepoint is released, rolls the savepoint back and leaves the enclosing unit usable; a
savepoint whose RELEASE is refused is rolled back too; a rolled-back savepoint is released
(Django ticket #23074), so a long unit does not pile savepoints up on the server.
Sync on SQLite, PostgreSQL (psycopg) and MariaDB (pymysql); async on aiosqlite, asyncpg, aiomysql.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import Engine, event, insert, text
from sqlalchemy.exc import DBAPIError, IntegrityError

import uow
from tests.conftest import Backend, finish_async_db, finish_sync_db, make_async_db, make_sync_db
from tests.drivers import kill
from tests.helpers import committed, committed_async, sync_engine
from tests.models import AsyncItemService, Item, ItemService
from uow.testing import bound_to_transaction

# -- a constraint violation in the body of a nested unit -------------------------------------------


def test_a_failed_flush_in_a_nested_unit_leaves_the_enclosing_unit_usable(sync_db: uow.Database) -> None:
    @uow.with_services(ItemService, database=sync_db, propagation="nested")
    def add_again(items: ItemService) -> None:
        items.add("kept")  # unique name: the flush fails

    @uow.with_services(ItemService, database=sync_db)
    def outer(items: ItemService) -> list[str]:
        items.add("kept")
        with pytest.raises(IntegrityError):
            add_again()
        items.add("after")
        return items.names()

    assert outer() == ["after", "kept"]
    assert committed(sync_db) == ["after", "kept"]


async def test_a_failed_flush_in_a_nested_unit_leaves_the_enclosing_unit_usable_async(
    async_db: uow.Database,
) -> None:
    @uow.with_services(AsyncItemService, database=async_db, propagation="nested")
    async def add_again(items: AsyncItemService) -> None:
        await items.add("kept")

    @uow.with_services(AsyncItemService, database=async_db)
    async def outer(items: AsyncItemService) -> list[str]:
        await items.add("kept")
        with pytest.raises(IntegrityError):
            await add_again()
        await items.add("after")
        return await items.names()

    assert await outer() == ["after", "kept"]
    assert await committed_async(async_db) == ["after", "kept"]


def test_a_failed_flush_in_a_unit_joined_inside_a_nested_one_is_recovered_outside_it(
    sync_db: uow.Database,
) -> None:
    # Django's "IntegrityError inside a savepoint, caught outside the inner atomic block".
    @uow.with_services(ItemService, database=sync_db)
    def add(items: ItemService, name: str) -> None:
        items.add(name)

    @uow.unit_of_work(database=sync_db, propagation="nested")
    def savepoint() -> None:
        add(name="in savepoint")
        add(name="kept")

    @uow.with_services(ItemService, database=sync_db)
    def outer(items: ItemService) -> None:
        items.add("kept")
        with pytest.raises(IntegrityError):
            savepoint()
        items.add("after")

    outer()
    assert committed(sync_db) == ["after", "kept"]


async def test_a_failed_flush_in_a_unit_joined_inside_a_nested_one_is_recovered_outside_it_async(
    async_db: uow.Database,
) -> None:
    @uow.with_services(AsyncItemService, database=async_db)
    async def add(items: AsyncItemService, name: str) -> None:
        await items.add(name)

    @uow.unit_of_work(database=async_db, propagation="nested")
    async def savepoint() -> None:
        await add(name="in savepoint")
        await add(name="kept")

    @uow.with_services(AsyncItemService, database=async_db)
    async def outer(items: AsyncItemService) -> None:
        await items.add("kept")
        with pytest.raises(IntegrityError):
            await savepoint()
        await items.add("after")

    await outer()
    assert await committed_async(async_db) == ["after", "kept"]


def test_a_nested_unit_that_swallows_a_failed_flush_raises_rollback_only_and_the_enclosing_unit_goes_on(
    sync_db: uow.Database,
) -> None:
    @uow.with_services(ItemService, database=sync_db)
    def add(items: ItemService, name: str) -> None:
        items.add(name)

    @uow.unit_of_work(database=sync_db, propagation="nested")
    def savepoint() -> None:
        add(name="in savepoint")
        try:
            add(name="kept")
        except IntegrityError:
            pass  # swallowed: the savepoint is doomed, not the enclosing unit

    @uow.with_services(ItemService, database=sync_db)
    def outer(items: ItemService) -> None:
        items.add("kept")
        with pytest.raises(uow.RollbackOnlyError, match="savepoint"):
            savepoint()
        items.add("after")

    outer()
    assert committed(sync_db) == ["after", "kept"]


async def test_a_nested_unit_that_swallows_a_failed_flush_raises_rollback_only_and_the_enclosing_unit_goes_on_async(
    async_db: uow.Database,
) -> None:
    @uow.with_services(AsyncItemService, database=async_db)
    async def add(items: AsyncItemService, name: str) -> None:
        await items.add(name)

    @uow.unit_of_work(database=async_db, propagation="nested")
    async def savepoint() -> None:
        await add(name="in savepoint")
        try:
            await add(name="kept")
        except IntegrityError:
            pass

    @uow.with_services(AsyncItemService, database=async_db)
    async def outer(items: AsyncItemService) -> None:
        await items.add("kept")
        with pytest.raises(uow.RollbackOnlyError, match="savepoint"):
            await savepoint()
        await items.add("after")

    await outer()
    assert await committed_async(async_db) == ["after", "kept"]


# -- a constraint violation that surfaces when the savepoint is released ---------------------------


def test_a_violation_found_when_releasing_rolls_the_savepoint_back(sync_db: uow.Database) -> None:
    ran: list[str] = []

    @uow.unit_of_work(database=sync_db, propagation="nested")
    def add_unflushed() -> None:
        session = uow.current_session(sync_db)
        session.add(Item(name="in savepoint"))
        session.add(Item(name="kept"))  # not flushed: RELEASE flushes it, and the flush fails
        uow.on_commit(lambda: ran.append("savepoint hook"), database=sync_db)

    @uow.with_services(ItemService, database=sync_db)
    def outer(items: ItemService) -> None:
        items.add("kept")
        with pytest.raises(IntegrityError):
            add_unflushed()
        items.add("after")
        uow.on_commit(lambda: ran.append("outer hook"), database=sync_db)

    outer()
    assert committed(sync_db) == ["after", "kept"]
    assert ran == ["outer hook"], "the hook of the savepoint that failed to release was dropped"


async def test_a_violation_found_when_releasing_rolls_the_savepoint_back_async(async_db: uow.Database) -> None:
    ran: list[str] = []

    @uow.unit_of_work(database=async_db, propagation="nested")
    async def add_unflushed() -> None:
        session = uow.current_session(async_db)
        session.add(Item(name="in savepoint"))
        session.add(Item(name="kept"))
        uow.on_commit(lambda: ran.append("savepoint hook"), database=async_db)

    @uow.with_services(AsyncItemService, database=async_db)
    async def outer(items: AsyncItemService) -> None:
        await items.add("kept")
        with pytest.raises(IntegrityError):
            await add_unflushed()
        await items.add("after")
        uow.on_commit(lambda: ran.append("outer hook"), database=async_db)

    await outer()
    assert await committed_async(async_db) == ["after", "kept"]
    assert ran == ["outer hook"]


def test_an_enclosing_unit_that_swallows_the_release_failure_still_commits_its_own_work(
    sync_db: uow.Database,
) -> None:
    # The savepoint was rolled back, so nothing of it can reach the commit: no RollbackOnlyError.
    @uow.unit_of_work(database=sync_db, propagation="nested")
    def add_unflushed() -> None:
        uow.current_session(sync_db).add(Item(name="kept"))

    @uow.with_services(ItemService, database=sync_db)
    def outer(items: ItemService) -> None:
        items.add("kept")
        try:
            add_unflushed()
        except IntegrityError:
            pass

    outer()
    assert committed(sync_db) == ["kept"]


# -- RELEASE refused by the database (PostgreSQL: a statement failed and its error was swallowed) ---


@pytest.fixture
def pg_sync_db(postgres_server: Any) -> Iterator[uow.Database]:
    backend = Backend("postgresql", postgres_server.sync_url, postgres_server.async_url, postgres_server)
    database = make_sync_db(backend)
    yield database
    finish_sync_db(database, backend)


@pytest.mark.postgres
def test_a_refused_release_rolls_the_savepoint_back_and_raises_rollback_only(pg_sync_db: uow.Database) -> None:
    @uow.with_services(ItemService, database=pg_sync_db, propagation="nested")
    def swallow_a_statement_error(items: ItemService) -> None:
        items.add("in savepoint")
        try:
            items.session.execute(insert(Item).values(name="kept"))
        except IntegrityError:
            pass  # PostgreSQL now refuses everything in this transaction but ROLLBACK (TO SAVEPOINT)

    @uow.with_services(ItemService, database=pg_sync_db)
    def outer(items: ItemService) -> list[str]:
        items.add("kept")
        with pytest.raises(uow.RollbackOnlyError, match="refused RELEASE") as info:
            swallow_a_statement_error()
        assert isinstance(info.value.__cause__, DBAPIError)
        items.add("after")
        return items.names()

    assert outer() == ["after", "kept"]
    assert committed(pg_sync_db) == ["after", "kept"]


@pytest.mark.postgres
@pytest.mark.parametrize("driver", ["postgresql+asyncpg", "postgresql+psycopg_async"])
async def test_a_refused_release_rolls_the_savepoint_back_and_raises_rollback_only_async(
    postgres_server: Any, driver: str
) -> None:
    backend = Backend(
        "postgresql", postgres_server.sync_url, postgres_server.async_url.set(drivername=driver), postgres_server
    )
    database = await make_async_db(backend)
    try:

        @uow.with_services(AsyncItemService, database=database, propagation="nested")
        async def swallow_a_statement_error(items: AsyncItemService) -> None:
            await items.add("in savepoint")
            try:
                await items.session.execute(insert(Item).values(name="kept"))
            except IntegrityError:
                pass

        @uow.with_services(AsyncItemService, database=database)
        async def outer(items: AsyncItemService) -> list[str]:
            await items.add("kept")
            with pytest.raises(uow.RollbackOnlyError, match="refused RELEASE"):
                await swallow_a_statement_error()
            await items.add("after")
            return await items.names()

        assert await outer() == ["after", "kept"]
        assert await committed_async(database) == ["after", "kept"]
    finally:
        await finish_async_db(database, backend)


# -- a rolled-back savepoint is released (Django #23074) ----------------------------------------------


class Statements:
    """The savepoint statements an engine sends, in order (a real listener on the real engine)."""

    def __init__(self, engine: Engine) -> None:
        self.seen: list[str] = []
        self._engine = engine
        event.listen(engine, "before_cursor_execute", self._record)

    def _record(self, _conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if "SAVEPOINT" in statement.upper():
            self.seen.append(" ".join(statement.split()).upper())

    def close(self) -> None:
        event.remove(self._engine, "before_cursor_execute", self._record)

    def still_open(self) -> list[str]:
        """Savepoints created and neither released nor implied released by an enclosing RELEASE."""
        stack: list[str] = []
        for statement in self.seen:
            name = statement.split()[-1].strip('"`')
            if statement.startswith("SAVEPOINT"):
                stack.append(name)
            elif statement.startswith("RELEASE"):
                assert name in stack, f"RELEASE of a savepoint not open: {statement}"
                del stack[stack.index(name) :]
        return stack


FAILED_UNITS = 1000  # on PostgreSQL, where held savepoints would pile up; 100 elsewhere keeps MariaDB's load down


@pytest.mark.parametrize("where", ["body", "release", "raise"])
def test_every_rolled_back_savepoint_is_released(sync_db: uow.Database, backend: Backend, where: str) -> None:
    statements = Statements(sync_engine(sync_db))
    units = FAILED_UNITS if backend.name == "postgresql" else 100

    @uow.unit_of_work(database=sync_db, propagation="nested")
    def fail() -> None:
        session = uow.current_session(sync_db)
        session.add(Item(name="kept"))
        if where == "body":
            session.flush()
        elif where == "raise":
            session.flush()  # succeeds: here the enclosing unit holds no "kept"
            raise RuntimeError("inner failure")

    @uow.with_services(ItemService, database=sync_db)
    def long_unit(items: ItemService) -> int:
        if where != "raise":
            items.add("kept")
        failures = 0
        for _ in range(units):
            try:
                fail()
            except (IntegrityError, RuntimeError):
                failures += 1
        open_savepoints = statements.still_open()
        assert not open_savepoints, f"{len(open_savepoints)} savepoints left open, e.g. {open_savepoints[:3]}"
        items.add("after")
        return failures

    try:
        assert long_unit() == units
    finally:
        statements.close()
    expected = ["after"] if where == "raise" else ["after", "kept"]
    assert committed(sync_db) == expected
    rollbacks = [s for s in statements.seen if s.startswith("ROLLBACK TO")]
    assert len(rollbacks) == units


async def test_every_rolled_back_savepoint_is_released_async(async_db: uow.Database) -> None:
    engine = async_db.engine
    assert engine is not None
    statements = Statements(engine.sync_engine)  # type: ignore[union-attr]

    @uow.with_services(AsyncItemService, database=async_db, propagation="nested")
    async def fail(items: AsyncItemService) -> None:
        await items.add("kept")

    @uow.with_services(AsyncItemService, database=async_db)
    async def long_unit(items: AsyncItemService) -> None:
        await items.add("kept")
        for _ in range(100):
            with pytest.raises(IntegrityError):
                await fail()
        assert not statements.still_open()
        await items.add("after")

    try:
        await long_unit()
    finally:
        statements.close()
    assert await committed_async(async_db) == ["after", "kept"]


@pytest.mark.postgres
def test_postgresql_holds_no_savepoint_after_a_thousand_failed_nested_units(pg_sync_db: uow.Database) -> None:
    # Asked of the server itself: a savepoint still held can be rolled back to; a released one cannot.
    names: list[str] = []

    @event.listens_for(sync_engine(pg_sync_db), "rollback_savepoint")
    def remember(_conn: Any, name: str, _context: Any) -> None:
        names.append(name)

    @uow.with_services(ItemService, database=pg_sync_db, propagation="nested")
    def fail(items: ItemService) -> None:
        items.add("kept")

    @uow.with_services(ItemService, database=pg_sync_db)
    def long_unit(items: ItemService) -> list[str]:
        items.add("kept")
        for _ in range(FAILED_UNITS):
            with pytest.raises(IntegrityError):
                fail()
        assert len(names) == FAILED_UNITS
        still_held = []
        connection = items.session.connection()
        for name in {names[0], names[len(names) // 2], names[-1]}:
            probe = connection.begin_nested()  # so a refused ROLLBACK TO below does not abort the unit
            try:
                connection.exec_driver_sql(f"ROLLBACK TO SAVEPOINT {name}")
                still_held.append(name)
            except DBAPIError as error:
                assert re.search("does not exist", str(error.orig))
            probe.rollback()
        items.add("after")
        return still_held

    try:
        assert long_unit() == []
    finally:
        event.remove(sync_engine(pg_sync_db), "rollback_savepoint", remember)
    assert committed(pg_sync_db) == ["after", "kept"]


# -- the same under uow.testing's rollback-per-test binding ---------------------------------------------


def test_a_failed_flush_in_a_nested_unit_is_recovered_from_under_the_test_binding(sync_db: uow.Database) -> None:
    @uow.with_services(ItemService, database=sync_db, propagation="nested")
    def add_again(items: ItemService) -> None:
        items.add("kept")

    @uow.with_services(ItemService, database=sync_db)
    def outer(items: ItemService) -> list[str]:
        items.add("kept")
        with pytest.raises(IntegrityError):
            add_again()
        items.add("after")
        return items.names()

    with bound_to_transaction(sync_db):
        assert outer() == ["after", "kept"]
    assert committed(sync_db) == []


async def test_a_failed_flush_in_a_nested_unit_is_recovered_from_under_the_test_binding_async(
    async_db: uow.Database,
) -> None:
    @uow.with_services(AsyncItemService, database=async_db, propagation="nested")
    async def add_again(items: AsyncItemService) -> None:
        await items.add("kept")

    @uow.with_services(AsyncItemService, database=async_db)
    async def outer(items: AsyncItemService) -> list[str]:
        await items.add("kept")
        with pytest.raises(IntegrityError):
            await add_again()
        await items.add("after")
        return await items.names()

    async with bound_to_transaction(async_db):
        assert await outer() == ["after", "kept"]
    assert await committed_async(async_db) == []


# -- a connection lost inside a nested unit: the enclosing unit cannot commit either -------------------


@pytest.mark.postgres
@pytest.mark.parametrize("when", ["body", "release"])
def test_a_connection_killed_inside_a_nested_unit_dooms_the_enclosing_unit(
    pg_sync_db: uow.Database, postgres_server: Any, when: str
) -> None:
    @uow.with_services(ItemService, database=pg_sync_db, propagation="nested")
    def killed(items: ItemService) -> None:
        items.add("in savepoint")
        kill(postgres_server, items.session.execute(text("SELECT pg_backend_pid()")).scalar_one())
        if when == "body":
            items.add("after the kill")  # fails: the connection is gone

    @uow.with_services(ItemService, database=pg_sync_db)
    def outer(items: ItemService) -> None:
        items.add("outer")
        with pytest.raises(DBAPIError) as info:
            killed()
        assert info.value.connection_invalidated

    with pytest.raises(uow.RollbackOnlyError):  # not PendingRollbackError from a commit on a dead connection
        outer()
    assert committed(pg_sync_db) == []


@pytest.mark.postgres
async def test_a_connection_killed_inside_a_nested_unit_dooms_the_enclosing_unit_async(postgres_server: Any) -> None:
    backend = Backend("postgresql", postgres_server.sync_url, postgres_server.async_url, postgres_server)
    database = await make_async_db(backend)
    try:

        @uow.with_services(AsyncItemService, database=database, propagation="nested")
        async def killed(items: AsyncItemService) -> None:
            await items.add("in savepoint")
            kill(postgres_server, (await items.session.execute(text("SELECT pg_backend_pid()"))).scalar_one())

        @uow.with_services(AsyncItemService, database=database)
        async def outer(items: AsyncItemService) -> None:
            await items.add("outer")
            with pytest.raises(DBAPIError):
                await killed()

        with pytest.raises(uow.RollbackOnlyError):
            await outer()
        assert await committed_async(database) == []
    finally:
        await finish_async_db(database, backend)

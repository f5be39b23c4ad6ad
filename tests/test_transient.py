"""`is_transient` on errors the real databases raise, through every driver, and on what is not transient.

Each test provokes the failure on the server (two connections fighting over rows, a
session killed by an admin, a file locked by another writer), so the classification is
checked against what the drivers really raise, wrapped the way SQLAlchemy wraps it.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Connection, Engine, insert, select, text, update
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

import uow
from tests import drivers
from tests.drivers import Target
from tests.models import Counter, Item
from uow import is_transient

PG_SYNC = ["postgresql+psycopg", "postgresql+psycopg2"]
PG_ASYNC = ["postgresql+asyncpg", "postgresql+psycopg_async"]
MY_SYNC = ["mysql+pymysql"]
MY_ASYNC = ["mysql+aiomysql", "mysql+asyncmy"]
SERVER_SYNC = PG_SYNC + MY_SYNC
SERVER_ASYNC = PG_ASYNC + MY_ASYNC

# PostgreSQL's deadlock detector waits deadlock_timeout (1s by default) before it looks.
PG_QUICK_DEADLOCK = "SET deadlock_timeout = '50ms'"


@pytest.fixture
def sync_engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Target, Engine]]:
    target = drivers.target(request, request.param, tmp_path)
    options: dict[str, Any] = {"connect_args": {"timeout": 0}} if target.dialect == "sqlite" else {}
    database = drivers.open_sync(target, engine_options=options)
    assert isinstance(database.engine, Engine)
    with database.engine.begin() as connection:
        connection.execute(insert(Counter), [{"id": 1, "value": 0}, {"id": 2, "value": 0}])
    yield target, database.engine
    drivers.close_sync(database, target)


@pytest.fixture
async def async_engine(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[tuple[Target, AsyncEngine]]:
    target = drivers.target(request, request.param, tmp_path)
    options: dict[str, Any] = {"connect_args": {"timeout": 0}} if target.dialect == "sqlite" else {}
    database = await drivers.open_async(target, engine_options=options)
    assert isinstance(database.engine, AsyncEngine)
    async with database.engine.begin() as connection:
        await connection.execute(insert(Counter), [{"id": 1, "value": 0}, {"id": 2, "value": 0}])
    yield target, database.engine
    await drivers.close_async(database, target)


def driver_code(exc: BaseException) -> object:
    """The error number (MySQL) or SQLSTATE (PostgreSQL) the driver reported, wherever the wrapping put it."""
    chain = list(_chain(exc))
    for error in chain:
        args = getattr(error, "args", ())
        if args and isinstance(args[0], int):
            return args[0]
    for error in chain:
        for attribute in ("sqlstate", "pgcode"):
            code = getattr(error, attribute, None)
            if isinstance(code, str):
                return code
    return None


def _chain(exc: BaseException) -> Iterator[BaseException]:
    pending: list[BaseException | None] = [exc]
    while pending:
        error = pending.pop()
        if error is not None:
            yield error
            pending.extend([getattr(error, "orig", None), error.__cause__])


def bump(row: int) -> Any:
    return update(Counter).where(Counter.id == row).values(value=Counter.value + 1)


# -- sync producers -----------------------------------------------------------------------------


def serialization_failure(engine: Engine) -> DBAPIError:
    with engine.connect() as reader, engine.connect() as writer:
        reader.execution_options(isolation_level="REPEATABLE READ")
        reader.execute(select(Counter.value).where(Counter.id == 1)).all()
        writer.execute(bump(1))
        writer.commit()
        try:
            reader.execute(bump(1))
        except DBAPIError as error:
            return error
        finally:
            reader.rollback()
    raise AssertionError("the concurrent update did not fail")


def deadlock(engine: Engine, prepare: str | None = None) -> DBAPIError:
    """Two connections each lock one row, then ask for the other's: the server must pick a victim."""
    errors: list[DBAPIError] = []

    def cross(connection: Connection, row: int) -> None:
        try:
            connection.execute(bump(row))
        except DBAPIError as error:
            errors.append(error)
            connection.rollback()  # PostgreSQL keeps the victim's locks until it rolls back

    with engine.connect() as first, engine.connect() as second:
        for connection in (first, second):
            if prepare:
                connection.exec_driver_sql(prepare)
        first.execute(bump(1))
        second.execute(bump(2))
        thread = threading.Thread(target=cross, args=(first, 2))
        thread.start()
        cross(second, 1)
        thread.join(timeout=30)
        first.rollback()
        second.rollback()
    assert len(errors) == 1, errors
    return errors[0]


def lock_wait_timeout(engine: Engine) -> DBAPIError:
    with engine.connect() as holder, engine.connect() as waiter:
        waiter.exec_driver_sql("SET SESSION innodb_lock_wait_timeout = 1")
        holder.execute(bump(1))
        try:
            waiter.execute(bump(1))
        except DBAPIError as error:
            return error
        finally:
            holder.rollback()
            waiter.rollback()
    raise AssertionError("the lock wait did not time out")


def killed_connection(engine: Engine, target: Target) -> DBAPIError:
    assert target.server is not None
    with engine.connect() as connection:
        backend = connection.execute(text(drivers.backend_id_query(target.dialect))).scalar_one()
        drivers.kill(target.server, backend)
        try:
            connection.execute(text("SELECT 1"))
        except DBAPIError as error:
            return error
    raise AssertionError("the killed connection still answered")


def unique_violation(engine: Engine) -> DBAPIError:
    with engine.connect() as connection:
        connection.execute(insert(Item).values(name="twice"))
        try:
            connection.execute(insert(Item).values(name="twice"))
        except DBAPIError as error:
            return error
        finally:
            connection.rollback()
    raise AssertionError("the duplicate was accepted")


def sqlite_database_locked(engine: Engine) -> DBAPIError:
    with engine.connect() as writer, engine.connect() as other:
        writer.execute(insert(Item).values(name="holds the write lock"))
        try:
            other.execute(insert(Item).values(name="locked out"))
        except DBAPIError as error:
            return error
        finally:
            writer.rollback()
            other.rollback()
    raise AssertionError("the second writer was not locked out")


def sqlite_table_locked(engine: Engine) -> DBAPIError:
    with engine.connect() as connection:
        connection.execute(insert(Item), [{"name": f"item {i}"} for i in range(5)])
        reading = connection.exec_driver_sql("SELECT name FROM uow_items")
        reading.fetchone()
        try:
            connection.exec_driver_sql("DROP TABLE uow_items")
        except DBAPIError as error:
            return error
        finally:
            reading.close()
            connection.rollback()
    raise AssertionError("the table being read was dropped")


# -- async producers ----------------------------------------------------------------------------


async def serialization_failure_async(engine: AsyncEngine) -> DBAPIError:
    async with engine.connect() as reader, engine.connect() as writer:
        await reader.execution_options(isolation_level="REPEATABLE READ")
        (await reader.execute(select(Counter.value).where(Counter.id == 1))).all()
        await writer.execute(bump(1))
        await writer.commit()
        try:
            await reader.execute(bump(1))
        except DBAPIError as error:
            return error
        finally:
            await reader.rollback()
    raise AssertionError("the concurrent update did not fail")


async def deadlock_async(engine: AsyncEngine, prepare: str | None = None) -> DBAPIError:
    errors: list[DBAPIError] = []

    async def cross(connection: AsyncConnection, row: int) -> None:
        try:
            await connection.execute(bump(row))
        except DBAPIError as error:
            errors.append(error)
            await connection.rollback()

    async with engine.connect() as first, engine.connect() as second:
        for connection in (first, second):
            if prepare:
                await connection.exec_driver_sql(prepare)
        await first.execute(bump(1))
        await second.execute(bump(2))
        await asyncio.wait_for(asyncio.gather(cross(first, 2), cross(second, 1)), timeout=30)
        await first.rollback()
        await second.rollback()
    assert len(errors) == 1, errors
    return errors[0]


async def lock_wait_timeout_async(engine: AsyncEngine) -> DBAPIError:
    async with engine.connect() as holder, engine.connect() as waiter:
        await waiter.exec_driver_sql("SET SESSION innodb_lock_wait_timeout = 1")
        await holder.execute(bump(1))
        try:
            await waiter.execute(bump(1))
        except DBAPIError as error:
            return error
        finally:
            await holder.rollback()
            await waiter.rollback()
    raise AssertionError("the lock wait did not time out")


async def killed_connection_async(engine: AsyncEngine, target: Target) -> DBAPIError:
    assert target.server is not None
    async with engine.connect() as connection:
        backend = (await connection.execute(text(drivers.backend_id_query(target.dialect)))).scalar_one()
        await asyncio.to_thread(drivers.kill, target.server, backend)
        try:
            await connection.execute(text("SELECT 1"))
        except DBAPIError as error:
            return error
    raise AssertionError("the killed connection still answered")


async def unique_violation_async(engine: AsyncEngine) -> DBAPIError:
    async with engine.connect() as connection:
        await connection.execute(insert(Item).values(name="twice"))
        try:
            await connection.execute(insert(Item).values(name="twice"))
        except DBAPIError as error:
            return error
        finally:
            await connection.rollback()
    raise AssertionError("the duplicate was accepted")


async def sqlite_database_locked_async(engine: AsyncEngine) -> DBAPIError:
    async with engine.connect() as writer, engine.connect() as other:
        await writer.execute(insert(Item).values(name="holds the write lock"))
        try:
            await other.execute(insert(Item).values(name="locked out"))
        except DBAPIError as error:
            return error
        finally:
            await writer.rollback()
            await other.rollback()
    raise AssertionError("the second writer was not locked out")


# -- PostgreSQL ---------------------------------------------------------------------------------


@pytest.mark.parametrize("sync_engine", PG_SYNC, indirect=True)
def test_postgres_serialization_failure_is_transient(sync_engine: tuple[Target, Engine]) -> None:
    _, engine = sync_engine
    error = serialization_failure(engine)
    assert driver_code(error) == "40001"
    assert is_transient(error)


@pytest.mark.parametrize("async_engine", PG_ASYNC, indirect=True)
async def test_async_postgres_serialization_failure_is_transient(async_engine: tuple[Target, AsyncEngine]) -> None:
    _, engine = async_engine
    error = await serialization_failure_async(engine)
    assert driver_code(error) == "40001"
    assert is_transient(error)


@pytest.mark.parametrize("sync_engine", PG_SYNC, indirect=True)
def test_postgres_deadlock_is_transient(sync_engine: tuple[Target, Engine]) -> None:
    _, engine = sync_engine
    error = deadlock(engine, PG_QUICK_DEADLOCK)
    assert driver_code(error) == "40P01"
    assert is_transient(error)


@pytest.mark.parametrize("async_engine", PG_ASYNC, indirect=True)
async def test_async_postgres_deadlock_is_transient(async_engine: tuple[Target, AsyncEngine]) -> None:
    _, engine = async_engine
    error = await deadlock_async(engine, PG_QUICK_DEADLOCK)
    assert driver_code(error) == "40P01"
    assert is_transient(error)


# -- MariaDB ------------------------------------------------------------------------------------


@pytest.mark.parametrize("sync_engine", MY_SYNC, indirect=True)
def test_mariadb_deadlock_is_transient(sync_engine: tuple[Target, Engine]) -> None:
    _, engine = sync_engine
    error = deadlock(engine)
    assert driver_code(error) == 1213
    assert is_transient(error)


@pytest.mark.parametrize("async_engine", MY_ASYNC, indirect=True)
async def test_async_mariadb_deadlock_is_transient(async_engine: tuple[Target, AsyncEngine]) -> None:
    _, engine = async_engine
    error = await deadlock_async(engine)
    assert driver_code(error) == 1213
    assert is_transient(error)


@pytest.mark.parametrize("sync_engine", MY_SYNC, indirect=True)
def test_mariadb_lock_wait_timeout_is_transient(sync_engine: tuple[Target, Engine]) -> None:
    _, engine = sync_engine
    error = lock_wait_timeout(engine)
    assert driver_code(error) == 1205
    assert is_transient(error)


@pytest.mark.parametrize("async_engine", MY_ASYNC, indirect=True)
async def test_async_mariadb_lock_wait_timeout_is_transient(async_engine: tuple[Target, AsyncEngine]) -> None:
    _, engine = async_engine
    error = await lock_wait_timeout_async(engine)
    assert driver_code(error) == 1205
    assert is_transient(error)


# -- both servers -------------------------------------------------------------------------------


@pytest.mark.parametrize("sync_engine", SERVER_SYNC, indirect=True)
def test_killed_connection_is_transient(sync_engine: tuple[Target, Engine]) -> None:
    target, engine = sync_engine
    error = killed_connection(engine, target)
    assert error.connection_invalidated
    assert is_transient(error)


@pytest.mark.parametrize("async_engine", SERVER_ASYNC, indirect=True)
async def test_async_killed_connection_is_transient(async_engine: tuple[Target, AsyncEngine]) -> None:
    target, engine = async_engine
    error = await killed_connection_async(engine, target)
    assert error.connection_invalidated
    assert is_transient(error)


@pytest.mark.parametrize("sync_engine", [*SERVER_SYNC, "sqlite"], indirect=True)
def test_unique_violation_is_not_transient(sync_engine: tuple[Target, Engine]) -> None:
    _, engine = sync_engine
    error = unique_violation(engine)
    assert isinstance(error, IntegrityError)
    assert not is_transient(error)


@pytest.mark.parametrize("async_engine", [*SERVER_ASYNC, "sqlite+aiosqlite"], indirect=True)
async def test_async_unique_violation_is_not_transient(async_engine: tuple[Target, AsyncEngine]) -> None:
    _, engine = async_engine
    error = await unique_violation_async(engine)
    assert isinstance(error, IntegrityError)
    assert not is_transient(error)


# -- SQLite -------------------------------------------------------------------------------------


@pytest.mark.parametrize("sync_engine", ["sqlite"], indirect=True)
def test_sqlite_database_locked_is_transient(sync_engine: tuple[Target, Engine]) -> None:
    _, engine = sync_engine
    error = sqlite_database_locked(engine)
    assert "database is locked" in str(error)
    assert is_transient(error)


@pytest.mark.parametrize("async_engine", ["sqlite+aiosqlite"], indirect=True)
async def test_async_sqlite_database_locked_is_transient(async_engine: tuple[Target, AsyncEngine]) -> None:
    _, engine = async_engine
    error = await sqlite_database_locked_async(engine)
    assert "database is locked" in str(error)
    assert is_transient(error)


@pytest.mark.parametrize("sync_engine", ["sqlite"], indirect=True)
def test_sqlite_table_locked_is_transient(sync_engine: tuple[Target, Engine]) -> None:
    _, engine = sync_engine
    error = sqlite_table_locked(engine)
    assert "database table is locked" in str(error)
    assert is_transient(error)


# -- without a database -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "error",
    [
        ValueError("database is locked"),
        RuntimeError("deadlock"),
        OSError(1213, "not a database error"),
        KeyboardInterrupt(),
        uow.ConfigurationError("no database"),
        OperationalError("SELECT 1", {}, Exception("syntax error")),
    ],
    ids=repr,
)
def test_other_errors_are_not_transient(error: BaseException) -> None:
    assert not is_transient(error)


def test_any_dbapi_error_on_an_invalidated_connection_is_transient() -> None:
    error = DBAPIError("SELECT 1", {}, Exception("server closed the connection"), connection_invalidated=True)
    assert is_transient(error)
    assert not is_transient(DBAPIError("SELECT 1", {}, Exception("server closed the connection")))

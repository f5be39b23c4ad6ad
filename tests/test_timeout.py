"""`timeout=` per unit on the real databases: slow statements, idle units, lock waits, joiners, retries.

Each Database has a pool of one connection, so the next unit provably runs on the connection the
timed-out unit handed back; the fixtures check that nothing is checked out and no server session is
left idle in a transaction. Timeouts are a few tenths of a second and every slow statement would
take seconds, so a deadline that is not enforced shows as a slow test that fails, never a hang.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from sqlalchemy import select, text
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

import uow
import uow._timeout
import uow.errors
from tests import drivers
from tests.drivers import ONE_CONNECTION, Target
from tests.models import AsyncItemService, Item, ItemService
from uow._timeout import _mariadb_limit, _mysql_limit

SYNC = ["sqlite", "postgresql+psycopg", "postgresql+psycopg2", "mysql+pymysql"]
ASYNC = ["sqlite+aiosqlite", "postgresql+asyncpg", "postgresql+psycopg_async", "mysql+aiomysql", "mysql+asyncmy"]

# Each takes seconds: 3 s on the servers, about as long for SQLite's recursive count.
SLOW = {
    "sqlite": "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 10000000) SELECT count(*) FROM c",
    "postgresql": "SELECT pg_sleep(3)",
    "mariadb": "SELECT SLEEP(3)",
}
TIMEOUT = 0.3
BOUND = 1.5  # a timed-out unit is over well before this, though the machine is loaded
# MariaDB times a statement's limit by its own clock, which may run a little ahead of ours: the
# statement is stopped at the deadline by the server's reckoning, a few milliseconds early by ours at most.
SERVER_CLOCK = {"mariadb": 0.005}


def earliest(database: uow.Database) -> float:
    """The earliest a unit with `TIMEOUT` may be stopped, by our clock."""
    return TIMEOUT - SERVER_CLOCK.get(dialect_of(database), 0.0)


@pytest.fixture(params=SYNC)
def sync_target(request: pytest.FixtureRequest, tmp_path: Path) -> Target:
    return drivers.target(request, request.param, tmp_path)


@pytest.fixture(params=ASYNC)
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


def dialect_of(database: uow.Database) -> str:
    assert database.engine is not None
    dialect = database.engine.dialect
    return "mariadb" if getattr(dialect, "is_mariadb", False) else dialect.name


def names(database: uow.Database) -> list[str]:
    @uow.unit_of_work(database=database)
    def read(session: Session) -> list[str]:
        return list(session.scalars(select(Item.name).order_by(Item.name)))

    return read()


async def names_async(database: uow.Database) -> list[str]:
    @uow.unit_of_work(database=database)
    async def read(session: AsyncSession) -> list[str]:
        return list((await session.scalars(select(Item.name).order_by(Item.name))).all())

    return await read()


LIMITS = {
    "postgresql": "SELECT current_setting('statement_timeout') || ' ' || current_setting('idle_in_transaction_session_timeout')",
    "mariadb": "SELECT CONCAT(@@max_statement_time, '')",
}
NO_LIMITS = {"postgresql": "0 0", "mariadb": "0.000000"}


def assert_no_limits_left(database: uow.Database) -> None:
    """The next unit on the (only) pooled connection runs without the timed-out unit's limits."""
    dialect = dialect_of(database)
    if dialect not in LIMITS:
        return

    @uow.unit_of_work(database=database)
    def limits(session: Session) -> str:
        return str(session.execute(text(LIMITS[dialect])).scalar())

    assert limits() == NO_LIMITS[dialect]


# -- sync ---------------------------------------------------------------------------------------


def test_a_slow_statement_is_stopped_at_the_deadline_and_the_unit_rolls_back(db: uow.Database) -> None:
    slow = SLOW[dialect_of(db)]

    @uow.with_services(ItemService, database=db, timeout=TIMEOUT)
    def work(items: ItemService) -> None:
        items.add("written before the slow statement")
        items.session.execute(text(slow))

    started = time.monotonic()
    with pytest.raises(uow.UnitTimeoutError) as caught:
        work()
    elapsed = time.monotonic() - started
    assert earliest(db) <= elapsed < BOUND
    error = caught.value
    assert isinstance(error, TimeoutError) and isinstance(error, uow.UowError)
    assert error.what.endswith("work()") and error.timeout == TIMEOUT and error.elapsed >= earliest(db)
    assert "work() ran out of time: timeout=0.3s" in str(error)
    assert isinstance(error.__cause__, OperationalError)  # what the database said, chained
    assert names(db) == []
    assert_no_limits_left(db)


def test_a_unit_idle_past_its_deadline_runs_no_further_statement_and_rolls_back(db: uow.Database) -> None:
    statements: list[str] = []

    @uow.with_services(ItemService, database=db, timeout=TIMEOUT)
    def work(items: ItemService) -> None:
        items.add("a")
        time.sleep(TIMEOUT + 0.2)  # Python work the database cannot see
        statements.append("before")
        items.add("b")
        statements.append("after")

    with pytest.raises(uow.UnitTimeoutError, match="work\\(\\) ran out of time"):
        work()
    assert statements == ["before"]
    assert names(db) == []
    assert_no_limits_left(db)


def test_a_unit_past_its_deadline_is_not_committed(db: uow.Database) -> None:
    @uow.with_services(ItemService, database=db, timeout=TIMEOUT)
    def work(items: ItemService) -> None:
        items.add("a")
        time.sleep(TIMEOUT + 0.1)

    with pytest.raises(uow.UnitTimeoutError):
        work()
    assert names(db) == []


def test_a_unit_done_in_time_commits_and_leaves_no_limit_behind(db: uow.Database) -> None:
    @uow.with_services(ItemService, database=db, timeout=5)
    def work(items: ItemService) -> None:
        items.add("a")
        items.session.execute(text("SELECT 1"))

    work()
    assert names(db) == ["a"]
    assert_no_limits_left(db)


def test_the_with_block_and_provide_services_take_a_timeout(db: uow.Database) -> None:
    slow = SLOW[dialect_of(db)]
    with pytest.raises(uow.UnitTimeoutError, match="unit_of_work\\(\\) ran out of time"):
        with uow.unit_of_work(database=db, timeout=TIMEOUT) as session:
            session.add(Item(name="a"))
            session.execute(text(slow))
    with pytest.raises(uow.UnitTimeoutError, match="provide_services\\(.*ItemService\\) ran out of time"):
        with uow.provide_services(ItemService, database=db, timeout=TIMEOUT) as (items,):
            items.add("b")
            time.sleep(TIMEOUT + 0.1)
    with uow.provide_services(ItemService, database=db, timeout=5) as (items,):
        items.add("c")
    assert names(db) == ["c"]


def test_a_joiner_with_a_shorter_timeout_ends_first_and_dooms_the_unit(db: uow.Database) -> None:
    slow = SLOW[dialect_of(db)]

    @uow.unit_of_work(database=db, timeout=TIMEOUT)
    def inner(session: Session) -> None:
        session.execute(text(slow))

    @uow.with_services(ItemService, database=db, timeout=30)
    def outer(items: ItemService) -> None:
        items.add("a")
        try:
            inner()
        except uow.UnitTimeoutError as error:
            assert error.what.endswith("inner()")
        # The joiner has left: the deadline in force is the owner's again (30 s away).
        assert items.session.info["uow_deadline"].label.endswith("outer()")

    started = time.monotonic()
    with pytest.raises(uow.RollbackOnlyError):
        outer()
    assert time.monotonic() - started < BOUND
    assert names(db) == []


def test_a_joiner_cannot_extend_the_deadline_of_the_unit_it_joins(db: uow.Database) -> None:
    @uow.unit_of_work(database=db, timeout=30)
    def inner(session: Session) -> None:
        time.sleep(TIMEOUT + 0.1)
        session.execute(text("SELECT 1"))

    @uow.with_services(ItemService, database=db, timeout=TIMEOUT)
    def outer(items: ItemService) -> None:
        items.add("a")
        inner()

    with pytest.raises(uow.UnitTimeoutError) as caught:
        outer()
    assert caught.value.what.endswith("outer()")  # the deadline that ran out is the owner's
    assert names(db) == []


def test_a_timeout_on_the_callers_session_leaves_the_session_to_the_caller(db: uow.Database) -> None:
    @uow.with_services(ItemService, database=db, timeout=TIMEOUT)
    def work(items: ItemService) -> None:
        items.add("b")
        time.sleep(TIMEOUT + 0.1)
        items.add("c")

    factory = db.session_factory
    with factory() as session:
        assert isinstance(session, Session)
        session.add(Item(name="a"))
        with pytest.raises(uow.UnitTimeoutError):
            work(session=session)
        # The caller decides: its session is open, and with no deadline of its own it works on.
        session.rollback()
        session.add(Item(name="d"))
        session.commit()
    assert names(db) == ["d"]


def test_each_attempt_gets_the_whole_timeout_and_a_timed_out_attempt_is_not_retried(db: uow.Database) -> None:
    attempts: list[int] = []

    # 1 s: an attempt's own work (0.4 s) fits in it on a busy machine; three attempts do not.
    @uow.with_services(ItemService, database=db, timeout=1.0, retry=uow.Retry(attempts=3, backoff=0.01))
    def flaky(items: ItemService) -> None:
        attempts.append(1)
        items.add(f"try {len(attempts)}")
        time.sleep(0.4)  # three of these are longer than the timeout: the deadline is per attempt
        if len(attempts) < 3:
            raise OperationalError("SELECT 1", {}, Exception("database is locked"))

    flaky()
    assert len(attempts) == 3
    assert names(db) == ["try 3"]

    tries: list[int] = []

    @uow.with_services(ItemService, database=db, timeout=TIMEOUT, retry=3)
    def slow(items: ItemService) -> None:
        tries.append(1)
        time.sleep(TIMEOUT + 0.1)
        items.add("never")

    with pytest.raises(uow.UnitTimeoutError):
        slow()
    assert len(tries) == 1
    assert not uow.is_transient(uow.UnitTimeoutError("x", what="f()", timeout=1, elapsed=1))


LOCK_WAIT_SAFETY = {
    "postgresql": "SET LOCAL lock_timeout = '5s'",
    "mariadb": "SET SESSION innodb_lock_wait_timeout = 5",
}


@pytest.fixture(params=["postgresql+psycopg", "mysql+pymysql"])
def server_target(request: pytest.FixtureRequest, tmp_path: Path) -> Target:
    return drivers.target(request, request.param, tmp_path)


@pytest.fixture
def server_db(server_target: Target) -> Iterator[uow.Database]:
    database = drivers.open_sync(server_target, engine_options=ONE_CONNECTION)
    yield database
    drivers.close_sync(database, server_target)


def test_a_unit_waiting_for_a_row_lock_is_stopped_at_its_deadline(
    server_db: uow.Database, server_target: Target
) -> None:
    db, sync_target = server_db, server_target
    dialect = dialect_of(db)
    other = uow.Database(sync_target.url)  # a second pool: the connection that holds the lock
    try:
        with uow.unit_of_work(database=other) as session:
            session.add(Item(id=1, name="locked"))
        with uow.unit_of_work(database=other) as holder:
            holder.execute(text("SELECT name FROM uow_items WHERE id = 1 FOR UPDATE")).all()

            @uow.unit_of_work(database=db, timeout=TIMEOUT)
            def wait(session: Session) -> None:
                session.execute(text(LOCK_WAIT_SAFETY[dialect]))  # a failed deadline errors, never hangs
                session.execute(text("UPDATE uow_items SET name = 'changed' WHERE id = 1"))

            started = time.monotonic()
            with pytest.raises(uow.UnitTimeoutError):
                wait()
            assert time.monotonic() - started < BOUND
        assert names(db) == ["locked"]
    finally:
        with uow.unit_of_work(database=other) as session:
            session.execute(text("DELETE FROM uow_items"))
        drivers.assert_clean(other, sync_target.server)
        other.dispose()


def test_under_the_rollback_fixture_a_timeout_leaves_no_limit_on_the_tests_transaction(db: uow.Database) -> None:
    from uow.testing import bound_to_transaction

    dialect = dialect_of(db)
    with bound_to_transaction(db):

        @uow.with_services(ItemService, database=db, timeout=TIMEOUT)
        def quick(items: ItemService) -> None:
            items.add("a")

        quick()
        time.sleep(TIMEOUT + 0.2)  # past the unit's deadline, still in the test's outer transaction
        assert names(db) == ["a"]  # the connection was not ended for idling, nor is a statement limited
        if dialect in LIMITS:

            @uow.unit_of_work(database=db)
            def limits(session: Session) -> str:
                return str(session.execute(text(LIMITS[dialect])).scalar())

            assert limits() == NO_LIMITS[dialect]
    assert names(db) == []


def test_a_unit_without_a_timeout_watches_nothing(db: uow.Database) -> None:
    @uow.with_services(ItemService, database=db)
    def work(items: ItemService) -> list[str]:
        items.add("a")
        return [key for key in items.session.info if "deadline" in str(key)]

    assert work() == []


# -- async --------------------------------------------------------------------------------------


async def test_an_async_slow_statement_is_cancelled_at_the_deadline(adb: uow.Database) -> None:
    slow = SLOW[dialect_of(adb)]

    @uow.with_services(AsyncItemService, database=adb, timeout=TIMEOUT)
    async def work(items: AsyncItemService) -> None:
        await items.add("a")
        await items.session.execute(text(slow))

    started = time.monotonic()
    with pytest.raises(uow.UnitTimeoutError) as caught:
        await work()
    assert earliest(adb) <= time.monotonic() - started < BOUND
    assert caught.value.what.endswith("work()")
    assert await names_async(adb) == []
    task = asyncio.current_task()
    assert task is not None
    if sys.version_info >= (3, 11):
        assert task.cancelling() == 0  # the cancellation was the deadline's, and it was taken back


async def test_async_python_work_past_the_deadline_is_cancelled(adb: uow.Database) -> None:
    reached: list[str] = []

    @uow.with_services(AsyncItemService, database=adb, timeout=TIMEOUT)
    async def work(items: AsyncItemService) -> None:
        await items.add("a")
        await asyncio.sleep(5)
        reached.append("after the sleep")

    started = time.monotonic()
    with pytest.raises(uow.UnitTimeoutError):
        await work()
    assert time.monotonic() - started < BOUND
    assert reached == []
    assert await names_async(adb) == []


async def test_an_async_unit_done_in_time_commits(adb: uow.Database) -> None:
    @uow.with_services(AsyncItemService, database=adb, timeout=5)
    async def work(items: AsyncItemService) -> None:
        await items.add("a")

    await work()
    assert await names_async(adb) == ["a"]


async def test_async_context_managers_and_joiners_keep_the_earlier_deadline(adb: uow.Database) -> None:
    slow = SLOW[dialect_of(adb)]

    @uow.unit_of_work(database=adb, timeout=30)
    async def inner(session: AsyncSession) -> None:
        await session.execute(text(slow))

    with pytest.raises(uow.UnitTimeoutError) as caught:
        async with uow.unit_of_work(database=adb, timeout=TIMEOUT) as session:
            session.add(Item(name="a"))
            await inner()
    assert caught.value.what == "unit_of_work()"

    @uow.unit_of_work(database=adb, timeout=TIMEOUT)
    async def short(session: AsyncSession) -> None:
        await asyncio.sleep(5)

    with pytest.raises(uow.RollbackOnlyError):  # the joiner's failure doomed the unit
        async with uow.provide_services(AsyncItemService, database=adb, timeout=30) as (items,):
            await items.add("b")
            with pytest.raises(uow.UnitTimeoutError) as caught:
                await short()
            assert caught.value.what.endswith("short()")
            assert items.session.info["uow_deadline"].label.startswith("provide_services(")
    assert await names_async(adb) == []


async def test_an_external_cancellation_stays_a_cancellation(adb: uow.Database) -> None:
    @uow.with_services(AsyncItemService, database=adb, timeout=30)
    async def work(items: AsyncItemService) -> None:
        await items.add("a")
        await asyncio.sleep(5)

    task = asyncio.ensure_future(work())
    await asyncio.sleep(0.2)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await names_async(adb) == []


# -- declaring ----------------------------------------------------------------------------------


@pytest.mark.parametrize("bad", [0, -1, 0.0, float("nan"), float("inf"), "1", True, [1]])
def test_a_bad_timeout_is_refused_when_declared(bad: object) -> None:
    with pytest.raises(uow.ConfigurationError, match="timeout="):
        uow.with_services(ItemService, timeout=bad)  # type: ignore[call-overload]
    with pytest.raises(uow.ConfigurationError, match="timeout="):
        uow.unit_of_work(timeout=bad)  # type: ignore[arg-type]
    with pytest.raises(uow.ConfigurationError, match="timeout="):
        uow.provide_services(ItemService, timeout=bad)  # type: ignore[call-overload]


def test_the_errors_are_exported() -> None:
    assert uow.errors.UnitTimeoutError is uow.UnitTimeoutError
    assert issubclass(uow.UnitTimeoutError, TimeoutError)
    assert issubclass(uow.UnitTimeoutError, uow.UowError)
    assert uow.errors.DatabaseUnavailable is uow.DatabaseUnavailable


def test_mysql_selects_get_an_execution_time_hint() -> None:
    # No MySQL server runs here (MariaDB does, and takes SET STATEMENT): the statement MySQL would get.
    assert _mysql_limit("SELECT 1", 0.25) == "SELECT /*+ MAX_EXECUTION_TIME(250) */ 1"
    assert _mysql_limit("UPDATE t SET x = 1", 0.25) == "UPDATE t SET x = 1"


def test_mariadb_limits_are_rounded_up_to_the_millisecond() -> None:
    # Rounded to nearest, 0.2994 s left would let the server stop the statement 0.4 ms early.
    assert _mariadb_limit("SELECT 1", 0.2994) == "SET STATEMENT max_statement_time=0.300 FOR SELECT 1"
    assert _mariadb_limit("UPDATE t SET x = 1", 0.0001).startswith("SET STATEMENT max_statement_time=0.001 FOR")
    assert _mariadb_limit("SET @a = 1", 0.25) == "SET @a = 1"


@pytest.fixture
def mariadb(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[uow.Database]:
    target = drivers.target(request, "mysql+pymysql", tmp_path)
    database = drivers.open_sync(target, engine_options=ONE_CONNECTION)
    yield database
    drivers.close_sync(database, target)


def test_the_servers_limit_is_the_units_timeout_even_if_it_stops_the_statement_early(
    mariadb: uow.Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The server times the limit by its own clock: its error can come a fraction of a millisecond
    # before the deadline by ours. Here the server is made to stop the statement at half the time
    # left, well before the deadline: the unit still ends as timed out, with the server's error chained.
    def early(statement: str, remaining: float) -> str:
        return _mariadb_limit(statement, remaining / 2)

    monkeypatch.setattr(uow._timeout, "_mariadb_limit", early)

    @uow.with_services(ItemService, database=mariadb, timeout=1.0)
    def work(items: ItemService) -> None:
        items.add("written before the slow statement")
        items.session.execute(text("SELECT SLEEP(3)"))

    started = time.monotonic()
    with pytest.raises(uow.UnitTimeoutError) as caught:
        work()
    assert time.monotonic() - started < 0.9  # stopped by the server, not by the deadline's own checks
    assert isinstance(caught.value.__cause__, OperationalError)
    assert caught.value.__cause__.orig.args[0] == 1969
    assert names(mariadb) == []
    assert_no_limits_left(mariadb)


def test_a_limit_the_unit_did_not_set_stays_the_databases_error(mariadb: uow.Database) -> None:
    # The statement sets its own, shorter limit (SET STATEMENT ... FOR is not limited by the unit):
    # the database's error is the caller's own limit, not the unit running out of time.
    @uow.with_services(ItemService, database=mariadb, timeout=3.0)
    def work(items: ItemService) -> None:
        items.add("written before the slow statement")
        items.session.execute(text("SET STATEMENT max_statement_time=0.05 FOR SELECT SLEEP(3)"))

    with pytest.raises(OperationalError) as caught:
        work()
    assert not isinstance(caught.value, uow.UnitTimeoutError)
    assert caught.value.orig.args[0] == 1969
    assert names(mariadb) == []

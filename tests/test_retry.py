"""`retry=`: the policy itself, what a retried unit may and may not do, and retries against real contention.

The contention tests start 20 units that all read one counter before any of them writes
(a barrier holds the first attempts together), so the database must reject some of them;
with a `Retry` every unit gets through and the count is exact. The retries are counted
from the WARNING records uow logs on logger ``uow``, one per retry, and printed.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import insert, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

import uow
from tests import drivers
from tests.drivers import Target
from tests.models import AsyncItemService, Counter, Item, ItemService
from uow import Retry, is_transient

UNITS = 20
QUICK = Retry(attempts=40, backoff=0.002, max_backoff=0.05)


class Flaky(Exception):
    """A failure the tests declare transient through ``retry_on``."""


def flaky(exc: BaseException) -> bool:
    return isinstance(exc, Flaky)


def retries_logged(caplog: pytest.LogCaptureFixture) -> int:
    return sum(1 for r in caplog.records if r.name == "uow" and r.levelno == logging.WARNING)


def bump(row: int) -> Any:
    return update(Counter).where(Counter.id == row).values(value=Counter.value + 1)


# -- the policy ---------------------------------------------------------------------------------


@pytest.mark.parametrize("attempts", [0, -1, True, 1.5, "3"])
def test_retry_needs_at_least_one_whole_attempt(attempts: Any) -> None:
    with pytest.raises(uow.ConfigurationError, match="attempts"):
        Retry(attempts=attempts)


@pytest.mark.parametrize("retry", [0, -2, "3", 2.5])
def test_decorator_refuses_a_retry_that_is_not_a_policy_or_a_count(retry: Any) -> None:
    with pytest.raises(uow.ConfigurationError, match="retry"):

        @uow.unit_of_work(retry=retry)
        def work() -> None: ...


def test_retry_refuses_negative_delays_and_a_predicate_that_is_not_callable() -> None:
    with pytest.raises(uow.ConfigurationError, match="negative"):
        Retry(backoff=-0.1)
    with pytest.raises(uow.ConfigurationError, match="negative"):
        Retry(max_backoff=-1)
    with pytest.raises(uow.ConfigurationError, match="retry_on"):
        Retry(retry_on="transient")  # type: ignore[arg-type]


def test_backoff_doubles_and_is_capped_without_jitter() -> None:
    policy = Retry(attempts=8, backoff=0.1, max_backoff=0.5, jitter=False)
    assert [policy.delay(n) for n in range(1, 7)] == pytest.approx([0.1, 0.2, 0.4, 0.5, 0.5, 0.5])


def test_jitter_scatters_each_delay_between_half_and_all_of_it() -> None:
    policy = Retry(attempts=5, backoff=0.1, max_backoff=1.0, jitter=True)
    delays = [policy.delay(3) for _ in range(200)]
    assert all(0.2 <= d <= 0.4 for d in delays)
    assert len(set(delays)) > 1


def test_should_retry_stops_at_the_last_attempt_and_never_for_base_exceptions() -> None:
    policy = Retry(attempts=3, retry_on=lambda exc: True)
    assert policy.should_retry(Flaky(), 1)
    assert policy.should_retry(Flaky(), 2)
    assert not policy.should_retry(Flaky(), 3)
    assert not policy.should_retry(KeyboardInterrupt(), 1)
    assert not policy.should_retry(asyncio.CancelledError(), 1)


def test_an_int_is_shorthand_for_that_many_attempts(sqlite_db: uow.Database) -> None:
    calls: list[int] = []

    @uow.unit_of_work(database=sqlite_db, retry=2)
    def work() -> None:
        calls.append(1)
        raise uow.RollbackOnlyError("not transient")

    with pytest.raises(uow.RollbackOnlyError):
        work()
    assert calls == [1]


def test_retry_on_a_with_block_is_refused(sqlite_db: uow.Database) -> None:
    with pytest.raises(uow.ConfigurationError, match="'with' block"), uow.unit_of_work(database=sqlite_db, retry=3):
        pass


async def test_retry_on_an_async_with_block_is_refused(async_sqlite_db: uow.Database) -> None:
    with pytest.raises(uow.ConfigurationError, match="'with' block"):
        async with uow.unit_of_work(database=async_sqlite_db, retry=Retry()):
            pass


# -- what a retried unit does -------------------------------------------------------------------


def test_each_attempt_gets_a_fresh_session_and_services_and_failed_hooks_never_run(
    sqlite_db: uow.Database, caplog: pytest.LogCaptureFixture
) -> None:
    seen: list[tuple[Any, Any]] = []  # the objects themselves: ids of freed ones can be reused
    hooks: list[int] = []

    @uow.with_services(ItemService, database=sqlite_db, retry=Retry(attempts=3, backoff=0, retry_on=flaky))
    def add(items: ItemService) -> int:
        attempt = len(seen) + 1
        seen.append((items.session, items))
        items.add(f"attempt {attempt}")
        uow.on_commit(lambda: hooks.append(attempt), database=sqlite_db)
        if attempt < 3:
            raise Flaky(f"attempt {attempt}")
        return attempt

    with caplog.at_level(logging.WARNING, logger="uow"):
        assert add() == 3
    assert hooks == [3]
    assert len({id(session) for session, _ in seen}) == 3
    assert len({id(service) for _, service in seen}) == 3
    with uow.provide_services(ItemService, database=sqlite_db) as (items,):
        assert items.names() == ["attempt 3"]
    assert retries_logged(caplog) == 2
    message = caplog.records[0].getMessage()
    assert "add" in message
    assert "attempt 1 of 3" in message
    assert "Flaky" in message


async def test_async_each_attempt_gets_a_fresh_session_and_failed_hooks_never_run(
    async_sqlite_db: uow.Database, caplog: pytest.LogCaptureFixture
) -> None:
    sessions: list[Any] = []  # the sessions themselves: ids of freed ones can be reused
    hooks: list[int] = []

    async def async_hook(attempt: int) -> None:
        hooks.append(attempt)

    @uow.with_services(AsyncItemService, database=async_sqlite_db, retry=Retry(attempts=3, backoff=0, retry_on=flaky))
    async def add(items: AsyncItemService) -> int:
        attempt = len(sessions) + 1
        sessions.append(items.session)
        await items.add(f"attempt {attempt}")
        uow.on_commit(lambda: async_hook(attempt), database=async_sqlite_db)
        if attempt < 3:
            raise Flaky(f"attempt {attempt}")
        return attempt

    with caplog.at_level(logging.WARNING, logger="uow"):
        assert await add() == 3
    assert hooks == [3]
    assert len({id(session) for session in sessions}) == 3
    async with uow.provide_services(AsyncItemService, database=async_sqlite_db) as (items,):
        assert await items.names() == ["attempt 3"]
    assert retries_logged(caplog) == 2


def test_the_last_error_is_raised_when_attempts_run_out(
    sqlite_db: uow.Database, caplog: pytest.LogCaptureFixture
) -> None:
    calls: list[int] = []

    @uow.unit_of_work(database=sqlite_db, retry=Retry(attempts=4, backoff=0, retry_on=flaky))
    def work() -> None:
        calls.append(1)
        raise Flaky(f"attempt {len(calls)}")

    with caplog.at_level(logging.WARNING, logger="uow"), pytest.raises(Flaky, match="attempt 4"):
        work()
    assert len(calls) == 4
    assert retries_logged(caplog) == 3


def test_errors_that_are_not_transient_are_not_retried(sqlite_db: uow.Database) -> None:
    calls: list[int] = []

    @uow.with_services(ItemService, database=sqlite_db, retry=5)
    def add_twice(items: ItemService) -> None:
        calls.append(1)
        items.add("same")
        items.add("same")

    with pytest.raises(Exception, match="UNIQUE"):
        add_twice()
    assert calls == [1]


def test_a_joined_unit_never_retries_and_its_error_reaches_the_owner(sqlite_db: uow.Database) -> None:
    inner_calls: list[int] = []

    @uow.unit_of_work(database=sqlite_db, retry=Retry(attempts=5, backoff=0, retry_on=flaky))
    def inner() -> None:
        inner_calls.append(1)
        raise Flaky("inner")

    with pytest.raises(Flaky, match="inner"), uow.unit_of_work(database=sqlite_db):
        inner()
    assert inner_calls == [1]


def test_the_owner_retries_the_whole_function_not_the_joined_one(sqlite_db: uow.Database) -> None:
    inner_calls: list[int] = []
    outer_calls: list[int] = []

    @uow.with_services(ItemService, database=sqlite_db, retry=Retry(attempts=5, backoff=0, retry_on=flaky))
    def inner(items: ItemService) -> None:
        inner_calls.append(1)
        items.add(f"inner {len(inner_calls)}")
        if len(inner_calls) < 2:
            raise Flaky("inner")

    @uow.unit_of_work(database=sqlite_db, retry=Retry(attempts=3, backoff=0, retry_on=flaky))
    def outer() -> None:
        outer_calls.append(1)
        inner()

    outer()
    assert (len(outer_calls), len(inner_calls)) == (2, 2)
    with uow.provide_services(ItemService, database=sqlite_db) as (items,):
        assert items.names() == ["inner 2"]


def test_a_unit_given_the_callers_session_never_retries(sqlite_db: uow.Database) -> None:
    calls: list[int] = []

    @uow.unit_of_work(database=sqlite_db, retry=Retry(attempts=5, backoff=0, retry_on=flaky))
    def work() -> None:
        calls.append(1)
        raise Flaky("caller's session")

    factory = sqlite_db.session_factory
    with factory() as session, pytest.raises(Flaky):
        work(session=session)  # type: ignore[call-arg]
    assert calls == [1]


def test_requires_new_inside_a_unit_owns_its_transaction_and_retries(sqlite_db: uow.Database) -> None:
    calls: list[int] = []

    @uow.with_services(
        ItemService,
        database=sqlite_db,
        propagation="requires_new",
        retry=Retry(attempts=3, backoff=0, retry_on=flaky),
    )
    def audit(items: ItemService) -> None:
        calls.append(1)
        if len(calls) == 1:
            raise Flaky("first try")
        items.add("audited")

    with uow.unit_of_work(database=sqlite_db):
        audit()
    assert calls == [1, 1]
    with uow.provide_services(ItemService, database=sqlite_db) as (items,):
        assert items.names() == ["audited"]


async def test_async_a_joined_unit_never_retries(async_sqlite_db: uow.Database) -> None:
    inner_calls: list[int] = []

    @uow.unit_of_work(database=async_sqlite_db, retry=Retry(attempts=5, backoff=0, retry_on=flaky))
    async def inner() -> None:
        inner_calls.append(1)
        raise Flaky("inner")

    with pytest.raises(Flaky):
        async with uow.unit_of_work(database=async_sqlite_db):
            await inner()
    assert inner_calls == [1]


# -- real contention ----------------------------------------------------------------------------

CONTENTION_SYNC = ["postgresql+psycopg", "mysql+pymysql"]
CONTENTION_ASYNC = ["postgresql+asyncpg", "mysql+aiomysql", "mysql+asyncmy"]
# Retries seen per driver, printed at the end of each contention test (run with -s to see them).
RETRIES_SEEN: dict[str, list[int]] = {}


class Worker:
    """One competing unit: how many times it ran."""

    def __init__(self) -> None:
        self.attempts = 0


@pytest.fixture
def crowded_db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Target, uow.Database]]:
    """A sync Database with a pool big enough for every competing unit, and counter rows 1 and 2 at 0."""
    target = drivers.target(request, request.param, tmp_path)
    database = drivers.open_sync(target, engine_options={"pool_size": UNITS, "max_overflow": 0})
    with uow.unit_of_work(database=database) as session:
        session.execute(insert(Counter), [{"id": 1, "value": 0}, {"id": 2, "value": 0}])
    yield target, database
    drivers.close_sync(database, target)


@pytest.fixture
async def async_crowded_db(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[tuple[Target, uow.Database]]:
    target = drivers.target(request, request.param, tmp_path)
    database = await drivers.open_async(target, engine_options={"pool_size": UNITS, "max_overflow": 0})
    async with uow.unit_of_work(database=database) as session:
        await session.execute(insert(Counter), [{"id": 1, "value": 0}, {"id": 2, "value": 0}])
    yield target, database
    await drivers.close_async(database, target)


def counter_values(database: uow.Database) -> list[int]:
    with uow.unit_of_work(database=database) as session:
        return list(session.scalars(select(Counter.value).order_by(Counter.id)))


async def counter_values_async(database: uow.Database) -> list[int]:
    async with uow.unit_of_work(database=database) as session:
        return list((await session.scalars(select(Counter.value).order_by(Counter.id))).all())


class AsyncGate:
    """Holds tasks until `parties` of them arrived (asyncio.Barrier needs Python 3.11)."""

    def __init__(self, parties: int) -> None:
        self.parties = parties
        self.arrived = 0
        self.open = asyncio.Event()

    async def wait(self) -> None:
        self.arrived += 1
        if self.arrived >= self.parties:
            self.open.set()
        await asyncio.wait_for(self.open.wait(), timeout=20)


def run_increments_sync(database: uow.Database, retry: Retry | None) -> tuple[list[Worker], list[BaseException]]:
    """UNITS threads each add 1 to counter 1 at SERIALIZABLE, all reading it before any writes."""
    barrier = threading.Barrier(UNITS, timeout=20)

    @uow.unit_of_work(database=database, isolation_level="SERIALIZABLE", retry=retry)
    def increment(session: Session, worker: Worker) -> None:
        worker.attempts += 1
        value = session.scalar(select(Counter.value).where(Counter.id == 1))
        if worker.attempts == 1:
            barrier.wait()
        session.execute(update(Counter).where(Counter.id == 1).values(value=value + 1))

    workers = [Worker() for _ in range(UNITS)]
    failures: list[BaseException] = []
    with ThreadPoolExecutor(max_workers=UNITS) as pool:
        futures = [pool.submit(increment, worker) for worker in workers]
        for future in futures:
            error = future.exception(timeout=60)
            if error is not None:
                failures.append(error)
    return workers, failures


async def run_increments_async(database: uow.Database, retry: Retry | None) -> tuple[list[Worker], list[BaseException]]:
    gate = AsyncGate(UNITS)

    @uow.unit_of_work(database=database, isolation_level="SERIALIZABLE", retry=retry)
    async def increment(session: AsyncSession, worker: Worker) -> None:
        worker.attempts += 1
        value = await session.scalar(select(Counter.value).where(Counter.id == 1))
        if worker.attempts == 1:
            await gate.wait()
        await session.execute(update(Counter).where(Counter.id == 1).values(value=value + 1))

    workers = [Worker() for _ in range(UNITS)]
    results = await asyncio.wait_for(
        asyncio.gather(*(increment(worker) for worker in workers), return_exceptions=True), timeout=60
    )
    return workers, [r for r in results if isinstance(r, BaseException)]


def report_failures(key: str, failures: list[BaseException]) -> None:
    kinds = sorted({str(getattr(e, "orig", e)).split("\n")[0][:60] for e in failures})
    print(f"\n{key} without retry: {len(failures)} of {UNITS} units failed: {kinds}")


def record_retries(key: str, caplog: pytest.LogCaptureFixture, workers: list[Worker]) -> int:
    retries = retries_logged(caplog)
    assert retries == sum(w.attempts - 1 for w in workers)
    RETRIES_SEEN.setdefault(key, []).append(retries)
    most = max(w.attempts for w in workers)
    print(f"\n{key}: {len(workers)} units, {retries} retries, most attempts by one unit {most}")
    return retries


@pytest.mark.parametrize("crowded_db", CONTENTION_SYNC, indirect=True)
def test_serializable_increments_fail_transiently_without_retry(crowded_db: tuple[Target, uow.Database]) -> None:
    target, database = crowded_db
    workers, failures = run_increments_sync(database, retry=None)
    report_failures(target.driver, failures)
    assert failures, "with every unit reading before any writes, some must be rejected"
    assert all(is_transient(error) for error in failures), failures
    assert counter_values(database)[0] == UNITS - len(failures)
    assert all(w.attempts == 1 for w in workers)


@pytest.mark.parametrize("crowded_db", CONTENTION_SYNC, indirect=True)
def test_serializable_increments_all_succeed_with_retry(
    crowded_db: tuple[Target, uow.Database], caplog: pytest.LogCaptureFixture
) -> None:
    target, database = crowded_db
    with caplog.at_level(logging.WARNING, logger="uow"):
        workers, failures = run_increments_sync(database, retry=QUICK)
    assert failures == []
    assert counter_values(database)[0] == UNITS
    assert record_retries(target.driver, caplog, workers) >= 1


@pytest.mark.parametrize("async_crowded_db", CONTENTION_ASYNC, indirect=True)
async def test_async_serializable_increments_fail_transiently_without_retry(
    async_crowded_db: tuple[Target, uow.Database],
) -> None:
    target, database = async_crowded_db
    workers, failures = await run_increments_async(database, retry=None)
    report_failures(target.driver, failures)
    assert failures, "with every unit reading before any writes, some must be rejected"
    assert all(is_transient(error) for error in failures), failures
    assert (await counter_values_async(database))[0] == UNITS - len(failures)
    assert all(w.attempts == 1 for w in workers)


@pytest.mark.parametrize("async_crowded_db", CONTENTION_ASYNC, indirect=True)
async def test_async_serializable_increments_all_succeed_with_retry(
    async_crowded_db: tuple[Target, uow.Database], caplog: pytest.LogCaptureFixture
) -> None:
    target, database = async_crowded_db
    with caplog.at_level(logging.WARNING, logger="uow"):
        workers, failures = await run_increments_async(database, retry=QUICK)
    assert failures == []
    assert (await counter_values_async(database))[0] == UNITS
    assert record_retries(target.driver, caplog, workers) >= 1


# -- a deadlock between two units (rows locked in opposite order) ----------------------------------

DEADLOCK_SYNC = ["mysql+pymysql", "postgresql+psycopg"]
DEADLOCK_ASYNC = ["mysql+aiomysql", "mysql+asyncmy", "postgresql+asyncpg"]


def quick_deadlock_detection(session: Session, target: Target) -> None:
    if target.dialect == "postgresql":
        session.execute(text("SET LOCAL deadlock_timeout = '50ms'"))


def run_opposite_locks_sync(
    target: Target, database: uow.Database, retry: Retry | None
) -> tuple[list[Worker], list[BaseException]]:
    barrier = threading.Barrier(2, timeout=20)

    @uow.unit_of_work(database=database, retry=retry)
    def move(session: Session, worker: Worker, first: int, second: int) -> None:
        worker.attempts += 1
        quick_deadlock_detection(session, target)
        session.execute(bump(first))
        if worker.attempts == 1:
            barrier.wait()
        session.execute(bump(second))

    workers = [Worker(), Worker()]
    with ThreadPoolExecutor(max_workers=2) as pool:
        futures = [pool.submit(move, workers[0], 1, 2), pool.submit(move, workers[1], 2, 1)]
        errors = [future.exception(timeout=60) for future in futures]
    return workers, [e for e in errors if e is not None]


async def run_opposite_locks_async(
    target: Target, database: uow.Database, retry: Retry | None
) -> tuple[list[Worker], list[BaseException]]:
    gate = AsyncGate(2)

    @uow.unit_of_work(database=database, retry=retry)
    async def move(session: AsyncSession, worker: Worker, first: int, second: int) -> None:
        worker.attempts += 1
        if target.dialect == "postgresql":
            await session.execute(text("SET LOCAL deadlock_timeout = '50ms'"))
        await session.execute(bump(first))
        if worker.attempts == 1:
            await gate.wait()
        await session.execute(bump(second))

    workers = [Worker(), Worker()]
    results = await asyncio.wait_for(
        asyncio.gather(move(workers[0], 1, 2), move(workers[1], 2, 1), return_exceptions=True), timeout=60
    )
    return workers, [r for r in results if isinstance(r, BaseException)]


@pytest.mark.parametrize("crowded_db", DEADLOCK_SYNC, indirect=True)
def test_opposite_lock_order_deadlocks_one_unit_without_retry(crowded_db: tuple[Target, uow.Database]) -> None:
    target, database = crowded_db
    _, failures = run_opposite_locks_sync(target, database, retry=None)
    assert len(failures) == 1
    assert is_transient(failures[0])
    assert counter_values(database) == [1, 1]


@pytest.mark.parametrize("crowded_db", DEADLOCK_SYNC, indirect=True)
def test_opposite_lock_order_both_units_succeed_with_retry(
    crowded_db: tuple[Target, uow.Database], caplog: pytest.LogCaptureFixture
) -> None:
    target, database = crowded_db
    with caplog.at_level(logging.WARNING, logger="uow"):
        workers, failures = run_opposite_locks_sync(target, database, retry=Retry(attempts=3, backoff=0.01))
    assert failures == []
    assert counter_values(database) == [2, 2]
    assert sorted(w.attempts for w in workers) == [1, 2], caplog.text
    assert record_retries(f"{target.driver} deadlock", caplog, workers) == 1


@pytest.mark.parametrize("async_crowded_db", DEADLOCK_ASYNC, indirect=True)
async def test_async_opposite_lock_order_deadlocks_one_unit_without_retry(
    async_crowded_db: tuple[Target, uow.Database],
) -> None:
    target, database = async_crowded_db
    _, failures = await run_opposite_locks_async(target, database, retry=None)
    assert len(failures) == 1
    assert is_transient(failures[0])
    assert await counter_values_async(database) == [1, 1]


@pytest.mark.parametrize("async_crowded_db", DEADLOCK_ASYNC, indirect=True)
async def test_async_opposite_lock_order_both_units_succeed_with_retry(
    async_crowded_db: tuple[Target, uow.Database], caplog: pytest.LogCaptureFixture
) -> None:
    target, database = async_crowded_db
    with caplog.at_level(logging.WARNING, logger="uow"):
        workers, failures = await run_opposite_locks_async(target, database, retry=Retry(attempts=3, backoff=0.01))
    assert failures == []
    assert await counter_values_async(database) == [2, 2]
    assert sorted(w.attempts for w in workers) == [1, 2], caplog.text
    assert record_retries(f"{target.driver} deadlock", caplog, workers) == 1


# -- a connection killed in the middle of a unit ------------------------------------------------

KILL_SYNC = ["postgresql+psycopg", "postgresql+psycopg2", "mysql+pymysql"]
KILL_ASYNC = ["postgresql+asyncpg", "postgresql+psycopg_async", "mysql+aiomysql", "mysql+asyncmy"]


@pytest.fixture
def one_connection_db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Target, uow.Database]]:
    target = drivers.target(request, request.param, tmp_path)
    database = drivers.open_sync(target, engine_options=drivers.ONE_CONNECTION)
    yield target, database
    drivers.close_sync(database, target)


@pytest.fixture
async def async_one_connection_db(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[tuple[Target, uow.Database]]:
    target = drivers.target(request, request.param, tmp_path)
    database = await drivers.open_async(target, engine_options=drivers.ONE_CONNECTION)
    yield target, database
    await drivers.close_async(database, target)


@pytest.mark.parametrize("one_connection_db", KILL_SYNC, indirect=True)
def test_a_connection_killed_mid_unit_is_retried_on_a_new_one(
    one_connection_db: tuple[Target, uow.Database], caplog: pytest.LogCaptureFixture
) -> None:
    target, database = one_connection_db
    assert target.server is not None
    query = text(drivers.backend_id_query(target.dialect))
    backends: list[int] = []

    @uow.with_services(ItemService, database=database, retry=Retry(attempts=3, backoff=0.01))
    def add(items: ItemService, name: str) -> None:
        items.add(f"{name} {len(backends) + 1}")
        backends.append(items.session.execute(query).scalar_one())
        if len(backends) == 1:
            drivers.kill(target.server, backends[0])  # type: ignore[arg-type]
        items.add(f"{name} again")

    with caplog.at_level(logging.WARNING, logger="uow"):
        add("item")
    assert retries_logged(caplog) == 1
    assert len(backends) == 2
    assert backends[0] != backends[1]
    pool = database.engine.pool  # type: ignore[union-attr]
    assert pool.checkedout() == 0

    @uow.unit_of_work(database=database)
    def after(session: Session) -> tuple[int, list[str]]:
        return session.execute(query).scalar_one(), list(session.scalars(select(Item.name).order_by(Item.name)))

    assert after() == (backends[1], ["item 2", "item again"])


@pytest.mark.parametrize("async_one_connection_db", KILL_ASYNC, indirect=True)
async def test_async_a_connection_killed_mid_unit_is_retried_on_a_new_one(
    async_one_connection_db: tuple[Target, uow.Database], caplog: pytest.LogCaptureFixture
) -> None:
    target, database = async_one_connection_db
    server = target.server
    assert server is not None
    query = text(drivers.backend_id_query(target.dialect))
    backends: list[int] = []

    @uow.with_services(AsyncItemService, database=database, retry=Retry(attempts=3, backoff=0.01))
    async def add(items: AsyncItemService, name: str) -> None:
        await items.add(f"{name} {len(backends) + 1}")
        backends.append((await items.session.execute(query)).scalar_one())
        if len(backends) == 1:
            await asyncio.to_thread(drivers.kill, server, backends[0])
        await items.add(f"{name} again")

    with caplog.at_level(logging.WARNING, logger="uow"):
        await add("item")
    assert retries_logged(caplog) == 1
    assert len(backends) == 2
    assert backends[0] != backends[1]
    pool = database.engine.pool  # type: ignore[union-attr]
    assert pool.checkedout() == 0

    @uow.unit_of_work(database=database)
    async def after(session: AsyncSession) -> tuple[int, list[str]]:
        backend = (await session.execute(query)).scalar_one()
        return backend, list((await session.scalars(select(Item.name).order_by(Item.name))).all())

    assert await after() == (backends[1], ["item 2", "item again"])


# -- SQLite: a second writer finds the database locked ------------------------------------------


@pytest.fixture
def locking_sqlite(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Target, uow.Database]]:
    """SQLite that reports "database is locked" at once instead of waiting for the other writer."""
    target = drivers.target(request, "sqlite", tmp_path)
    database = drivers.open_sync(target, engine_options={"connect_args": {"timeout": 0}})
    yield target, database
    drivers.close_sync(database, target)


@pytest.fixture
async def async_locking_sqlite(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[uow.Database]:
    target = drivers.target(request, "sqlite+aiosqlite", tmp_path)
    database = await drivers.open_async(target, engine_options={"connect_args": {"timeout": 0}})
    yield database
    await drivers.close_async(database, target)


def test_sqlite_database_locked_is_retried_until_the_other_writer_commits(
    locking_sqlite: tuple[Target, uow.Database], caplog: pytest.LogCaptureFixture
) -> None:
    _, database = locking_sqlite
    holding = threading.Event()
    locked_out = threading.Event()

    def noting_lock_out(exc: BaseException) -> bool:
        locked_out.set()
        return is_transient(exc)

    @uow.with_services(ItemService, database=database)
    def hold_the_lock(items: ItemService) -> None:
        items.add("first writer")
        holding.set()
        assert locked_out.wait(timeout=20)

    @uow.with_services(
        ItemService, database=database, retry=Retry(attempts=20, backoff=0.005, retry_on=noting_lock_out)
    )
    def write(items: ItemService) -> None:
        items.add("second writer")

    with caplog.at_level(logging.WARNING, logger="uow"), ThreadPoolExecutor(max_workers=1) as pool:
        holder = pool.submit(hold_the_lock)
        assert holding.wait(timeout=20)
        write()
        holder.result(timeout=20)
    assert retries_logged(caplog) >= 1
    assert "database is locked" in caplog.records[0].getMessage()
    with uow.provide_services(ItemService, database=database) as (items,):
        assert items.names() == ["first writer", "second writer"]


async def test_async_sqlite_database_locked_is_retried_until_the_other_writer_commits(
    async_locking_sqlite: uow.Database, caplog: pytest.LogCaptureFixture
) -> None:
    database = async_locking_sqlite
    holding = asyncio.Event()
    locked_out = asyncio.Event()

    def noting_lock_out(exc: BaseException) -> bool:
        locked_out.set()
        return is_transient(exc)

    @uow.with_services(AsyncItemService, database=database)
    async def hold_the_lock(items: AsyncItemService) -> None:
        await items.add("first writer")
        holding.set()
        await asyncio.wait_for(locked_out.wait(), timeout=20)

    @uow.with_services(
        AsyncItemService, database=database, retry=Retry(attempts=20, backoff=0.005, retry_on=noting_lock_out)
    )
    async def write(items: AsyncItemService) -> None:
        await holding.wait()
        await items.add("second writer")

    with caplog.at_level(logging.WARNING, logger="uow"):
        await asyncio.wait_for(asyncio.gather(hold_the_lock(), write()), timeout=30)
    assert retries_logged(caplog) >= 1
    assert "database is locked" in caplog.records[0].getMessage()
    async with uow.provide_services(AsyncItemService, database=database) as (items,):
        assert await items.names() == ["first writer", "second writer"]

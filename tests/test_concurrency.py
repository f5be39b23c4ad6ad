"""Concurrent units never share a session; a cancelled unit rolls back and returns its connection.

The ambient unit lives in a ContextVar, so each asyncio task and each thread has its own. Every
unit here waits at a barrier before touching the database, so all of them are alive at once
(their sessions exist, no connection is held yet) before any of them writes.
"""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

import uow
from tests.conftest import Backend
from tests.helpers import checked_out, committed, committed_async
from tests.models import AsyncItemService, Item, ItemService
from uow import current_session, unit_of_work, with_services

TASKS = 120
THREADS = 16
ROWS_PER_UNIT = 2


class Boom(Exception):
    pass


def fails(n: int) -> bool:
    """Every seventh unit fails, so the totals also prove the failed ones rolled back alone."""
    return n % 7 == 0


def expected_names(count: int, prefix: str) -> list[str]:
    return sorted(f"{prefix}{n:03d}-{k}" for n in range(count) if not fails(n) for k in range(ROWS_PER_UNIT))


class AsyncBarrier:
    """asyncio.Barrier for Python 3.10: releases everyone once `parties` tasks arrived."""

    def __init__(self, parties: int) -> None:
        self.parties = parties
        self.arrived = 0
        self.released = asyncio.Event()

    async def wait(self) -> None:
        self.arrived += 1
        if self.arrived == self.parties:
            self.released.set()
        await self.released.wait()


def _only_mine(session: Session, prefix: str) -> bool:
    return all(isinstance(o, Item) and o.name.startswith(prefix) for o in session.identity_map.values())


async def test_concurrent_async_units_each_have_their_own_session(async_db: uow.Database) -> None:
    barrier = AsyncBarrier(TASKS)

    @with_services(AsyncItemService, database=async_db)
    async def work(items: AsyncItemService, n: int) -> AsyncSession:
        session = items.session
        await barrier.wait()
        mine = f"t{n:03d}-"
        for k in range(ROWS_PER_UNIT):
            await items.add(f"{mine}{k}")
            await asyncio.sleep(0)  # let the other tasks run in between
            assert current_session() is session
        assert _only_mine(session.sync_session, mine)
        if fails(n):
            raise Boom
        return session

    results = await asyncio.gather(*(work(n) for n in range(TASKS)), return_exceptions=True)

    sessions = [r for r in results if isinstance(r, AsyncSession)]
    failures = [r for r in results if isinstance(r, Boom)]
    assert len(sessions) + len(failures) == TASKS, [r for r in results if not isinstance(r, (AsyncSession, Boom))]
    assert len({id(s) for s in sessions}) == len(sessions)
    assert len(failures) == sum(fails(n) for n in range(TASKS))
    assert await committed_async(async_db) == expected_names(TASKS, "t")
    assert checked_out(async_db) == 0


async def test_one_unit_of_work_object_shared_by_concurrent_tasks(async_db: uow.Database) -> None:
    unit = unit_of_work(database=async_db)  # made once, entered by every task at the same time
    barrier = AsyncBarrier(TASKS)

    async def work(n: int) -> AsyncSession:
        async with unit as session:
            await barrier.wait()
            for k in range(ROWS_PER_UNIT):
                session.add(Item(name=f"u{n:03d}-{k}"))
                await session.flush()
                await asyncio.sleep(0)
                assert current_session() is session
            if fails(n):
                raise Boom
            return session

    results = await asyncio.gather(*(work(n) for n in range(TASKS)), return_exceptions=True)

    unexpected = [r for r in results if not isinstance(r, (AsyncSession, Boom))]
    assert not unexpected
    sessions = [r for r in results if isinstance(r, AsyncSession)]
    assert len({id(s) for s in sessions}) == len(sessions)
    assert await committed_async(async_db) == expected_names(TASKS, "u")


def test_threads_of_sync_units_each_have_their_own_session(sync_db: uow.Database) -> None:
    barrier = threading.Barrier(THREADS)

    @with_services(ItemService, database=sync_db)
    def work(items: ItemService, n: int) -> Session:
        barrier.wait(timeout=30)
        mine = f"s{n:03d}-"
        for k in range(ROWS_PER_UNIT):
            items.add(f"{mine}{k}")
            assert current_session() is items.session
        assert _only_mine(items.session, mine)
        if fails(n):
            raise Boom
        return items.session

    with ThreadPoolExecutor(max_workers=THREADS) as pool:
        futures = [pool.submit(work, n) for n in range(THREADS)]
    sessions = []
    for n, future in enumerate(futures):
        if fails(n):
            assert isinstance(future.exception(), Boom)
        else:
            sessions.append(future.result())
    assert len({id(s) for s in sessions}) == len(sessions)
    assert committed(sync_db) == expected_names(THREADS, "s")
    assert checked_out(sync_db) == 0


def test_a_unit_in_one_thread_is_invisible_to_another(sync_db: uow.Database) -> None:
    seen: list[BaseException] = []

    def other_thread() -> None:
        try:
            current_session()
        except uow.NoActiveUnitOfWork as error:
            seen.append(error)

    with unit_of_work(database=sync_db):
        thread = threading.Thread(target=other_thread)
        thread.start()
        thread.join()
    assert len(seen) == 1


# -- cancellation ---------------------------------------------------------------------------------


def _blocking_unit(async_db: uow.Database, inside: asyncio.Event) -> object:
    @with_services(AsyncItemService, database=async_db)
    async def slow(items: AsyncItemService) -> None:
        await items.add("never")  # a connection is checked out and a transaction is open
        inside.set()
        await asyncio.Event().wait()  # waits until cancelled

    return slow


async def test_cancelled_task_rolls_back_and_returns_the_connection(async_db: uow.Database) -> None:
    inside = asyncio.Event()
    slow = _blocking_unit(async_db, inside)
    task = asyncio.create_task(slow())  # type: ignore[operator]
    await inside.wait()
    assert checked_out(async_db) == 1
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert checked_out(async_db) == 0
    assert await committed_async(async_db) == []


async def test_wait_for_timeout_rolls_back_and_returns_the_connection(async_db: uow.Database) -> None:
    inside = asyncio.Event()
    slow = _blocking_unit(async_db, inside)

    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(slow(), timeout=1.0)  # type: ignore[operator]
    assert inside.is_set()
    assert checked_out(async_db) == 0
    assert await committed_async(async_db) == []


async def test_cancelled_nested_unit_inside_a_live_outer_unit(async_db: uow.Database) -> None:
    inside = asyncio.Event()

    @with_services(AsyncItemService, database=async_db, propagation="nested")
    async def savepoint(items: AsyncItemService) -> None:
        await items.add("savepoint")
        inside.set()
        await asyncio.Event().wait()

    @with_services(AsyncItemService, database=async_db)
    async def outer(items: AsyncItemService) -> None:
        await items.add("outer")
        inner = asyncio.ensure_future(savepoint())
        await inside.wait()
        inner.cancel()
        with pytest.raises(asyncio.CancelledError):
            await inner
        assert await items.names() == ["outer"]

    await outer()
    assert await committed_async(async_db) == ["outer"]
    assert checked_out(async_db) == 0


SERVER_SLEEP = {"postgresql": "SELECT pg_sleep(2)", "mariadb": "SELECT SLEEP(2)"}


@pytest.mark.parametrize("backend", sorted(SERVER_SLEEP), indirect=True)
async def test_cancelled_while_the_database_is_working(backend: Backend, async_db: uow.Database) -> None:
    # SQLite has no server-side sleep to interrupt; the servers' drivers must cope with a cancelled query.
    inside = asyncio.Event()

    @unit_of_work(database=async_db)
    async def slow(session: AsyncSession) -> None:
        session.add(Item(name="never"))
        await session.flush()
        inside.set()
        await session.execute(text(SERVER_SLEEP[backend.name]))

    task = asyncio.create_task(slow())
    await inside.wait()
    await asyncio.sleep(0.1)  # let the sleep reach the server
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert checked_out(async_db) == 0
    assert await committed_async(async_db) == []


async def test_cancelled_again_while_rolling_back(async_db: uow.Database) -> None:
    # A second cancellation (wait_for giving up, a shutdown) lands in the rollback: the connection still goes back.
    inside = asyncio.Event()
    slow = _blocking_unit(async_db, inside)
    task = asyncio.create_task(slow())  # type: ignore[operator]
    await inside.wait()
    task.cancel()
    await asyncio.sleep(0)
    await asyncio.sleep(0)  # the unit is now awaiting its rollback
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert checked_out(async_db) == 0
    assert await committed_async(async_db) == []

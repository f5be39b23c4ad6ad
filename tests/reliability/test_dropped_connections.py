"""The server side of a unit's connection killed (``pg_terminate_backend``), sync and async, on PostgreSQL.

A unit whose connection dies fails with the driver's error (``connection_invalidated``), leaves
nothing committed and nothing checked out, and the pool serves the next unit from a fresh
connection. With ``retry=`` the unit runs again, in a fresh session, and commits exactly once.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import pytest
from sqlalchemy import Engine, event, exc, text
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

import uow
from tests import servers
from tests.conftest import Backend, finish_async_db, finish_sync_db, make_async_db, make_sync_db
from tests.models import AsyncItemService, ItemService
from tests.reliability._checks import assert_no_leak, item_names_async, item_names_sync

NO_WAIT = uow.Retry(attempts=3, backoff=0, jitter=False)


@pytest.fixture
def admin() -> Iterator[Engine]:
    engine = servers._admin_engine(servers.POSTGRES_ADMIN_URL)
    yield engine
    engine.dispose()


def kill(admin: Engine, pid: int) -> None:
    """Terminate server backend `pid` and wait until it is gone, so the next statement surely fails."""
    with admin.connect() as connection:
        assert connection.scalar(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
        for _ in range(200):
            alive = connection.scalar(text("SELECT count(*) FROM pg_stat_activity WHERE pid = :pid"), {"pid": pid})
            if not alive:
                return
            time.sleep(0.005)
    raise AssertionError(f"backend {pid} survived pg_terminate_backend")


def backend_pid(session: Session) -> int:
    return int(session.scalar(text("SELECT pg_backend_pid()")) or 0)


async def backend_pid_async(session: AsyncSession) -> int:
    return int(await session.scalar(text("SELECT pg_backend_pid()")) or 0)


# -- sync ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("when", ["mid-body", "before-commit"])
def test_sync_unit_fails_cleanly_and_the_pool_recovers(pg_backend: Backend, admin: Engine, when: str) -> None:
    database = make_sync_db(pg_backend)
    hooks: list[str] = []
    try:

        @uow.with_services(ItemService, database=database)
        def unit(items: ItemService) -> None:
            items.add("a")
            uow.on_commit(lambda: hooks.append("a"), database=database)
            pid = backend_pid(items.session)
            if when == "mid-body":
                kill(admin, pid)
                items.add("b")
            else:
                event.listen(items.session, "before_commit", lambda _: kill(admin, pid), once=True)

        with pytest.raises(exc.DBAPIError) as failure:
            unit()
        assert failure.value.connection_invalidated, failure.value
        assert uow.is_transient(failure.value)
        assert_no_leak(database, pg_backend)
        assert item_names_sync(database) == set()
        assert hooks == []

        @uow.with_services(ItemService, database=database)
        def next_unit(items: ItemService) -> int:
            items.add("next")
            return backend_pid(items.session)

        next_unit()
        assert item_names_sync(database) == {"next"}
        assert_no_leak(database, pg_backend)
    finally:
        finish_sync_db(database, pg_backend)


@pytest.mark.parametrize("when", ["mid-body", "before-commit", "while-pooled"])
def test_sync_unit_retries_to_success(pg_backend: Backend, admin: Engine, when: str) -> None:
    database = make_sync_db(pg_backend)
    attempts: list[int] = []
    hooks: list[int] = []
    try:
        if when == "while-pooled":
            # A connection that died while it sat in the pool: the next unit's first statement fails.
            with uow.unit_of_work(database=database) as session:
                kill_later = backend_pid(session)
            kill(admin, kill_later)

        @uow.with_services(ItemService, database=database, retry=NO_WAIT)
        def unit(items: ItemService) -> None:
            attempt = len(attempts) + 1
            attempts.append(attempt)
            items.add("a")
            uow.on_commit(lambda: hooks.append(attempt), database=database)
            if attempt > 1:
                items.add("b")
                return
            pid = backend_pid(items.session)
            if when == "mid-body":
                kill(admin, pid)
                items.add("b")
            elif when == "before-commit":
                items.add("b")
                event.listen(items.session, "before_commit", lambda _: kill(admin, pid), once=True)
            else:
                items.add("b")

        unit()
        assert attempts == [1, 2], "the unit did not run exactly twice"
        assert hooks == [2], "hooks of the failed attempt ran"
        assert item_names_sync(database) == {"a", "b"}
        assert_no_leak(database, pg_backend)
    finally:
        finish_sync_db(database, pg_backend)


# -- async ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("retry", [False, True], ids=["fails", "retries"])
async def test_async_unit_killed_mid_body(pg_backend: Backend, admin: Engine, retry: bool) -> None:
    database = await make_async_db(pg_backend)
    attempts: list[int] = []
    hooks: list[int] = []
    try:

        @uow.with_services(AsyncItemService, database=database, retry=NO_WAIT if retry else None)
        async def unit(items: AsyncItemService) -> None:
            attempt = len(attempts) + 1
            attempts.append(attempt)
            await items.add("a")
            uow.on_commit(lambda: hooks.append(attempt), database=database)
            if attempt == 1:
                pid = await backend_pid_async(items.session)
                await asyncio.to_thread(kill, admin, pid)
            await items.add("b")

        if retry:
            await unit()
            assert attempts == [1, 2]
            assert hooks == [2]
            assert await item_names_async(database) == {"a", "b"}
        else:
            with pytest.raises(exc.DBAPIError) as failure:
                await unit()
            assert failure.value.connection_invalidated, failure.value
            assert hooks == []
            assert await item_names_async(database) == set()
        assert_no_leak(database, pg_backend)

        @uow.with_services(AsyncItemService, database=database)
        async def next_unit(items: AsyncItemService) -> None:
            await items.add("next")

        await next_unit()
        assert_no_leak(database, pg_backend)
    finally:
        await finish_async_db(database, pg_backend)

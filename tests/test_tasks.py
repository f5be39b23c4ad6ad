"""Tasks and threads started inside a unit: one task at a time on a session (docs/design.md, "The concurrency rule").

A child that joins the unit from a task or thread of its own is admitted while nobody else uses the
session (the parent waits for it), and holds the session until it returns. A second child joining
meanwhile, or the parent using the session while its child runs, gets `PropagationError` and the
whole unit rolls back; a unit never commits while a child that joined it still runs; a session uow
closed never begins again. Every test ends with no connection checked out and, on PostgreSQL, no
server session idle in a transaction (the fixtures check, after the tasks the test started settled).
"""

from __future__ import annotations

import asyncio
import contextvars
import sys
import threading
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import anyio
import pytest
from sqlalchemy import event, select
from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine
from sqlalchemy.orm import Session

import uow
from tests import drivers
from tests.helpers import checked_out, committed, committed_async
from tests.models import AsyncItemService, Item, ItemService
from tests.reliability._checks import _settled
from uow import NoActiveUnitOfWork, PropagationError, RollbackOnlyError, unit_of_work, with_services
from uow._ownership import GUARDS

ASYNC_DRIVERS = ["sqlite+aiosqlite", "postgresql+asyncpg", "postgresql+psycopg_async"]
SYNC_DRIVERS = ["sqlite", "postgresql+psycopg"]
WAIT = 10  # seconds: every wait is bounded, so a broken rule fails a test instead of hanging the suite


def _assert_settled(database: uow.Database, target: drivers.Target) -> None:
    # An invalidated connection is closed by the client at once; its server process notices a moment later.
    if target.server is not None:
        assert not _settled(target.server), "server sessions left idle in a transaction"
    assert checked_out(database) == 0


@pytest.fixture(params=ASYNC_DRIVERS)
async def adb(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[uow.Database]:
    target = drivers.target(request, request.param, tmp_path)
    database = await drivers.open_async(target)
    yield database
    await _settle_tasks()
    _assert_settled(database, target)
    await drivers.close_async(database, target)


@pytest.fixture(params=SYNC_DRIVERS)
def sdb(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[uow.Database]:
    target = drivers.target(request, request.param, tmp_path)
    database = drivers.open_sync(target)
    yield database
    _assert_settled(database, target)
    drivers.close_sync(database, target)


async def _settle_tasks() -> None:
    """Let the tasks a test left behind (a straggler, gather's other child) finish, boundedly."""
    others = asyncio.all_tasks() - {asyncio.current_task()}
    if others:
        await asyncio.wait(others, timeout=WAIT)


def _children(database: uow.Database) -> tuple[Any, asyncio.Event, asyncio.Event]:
    """A decorated child that writes, says it is inside, waits to be released, and writes again."""
    inside, release = asyncio.Event(), asyncio.Event()

    @with_services(AsyncItemService, database=database)
    async def child(items: AsyncItemService, name: str) -> str:
        await items.add(name)
        inside.set()
        await asyncio.wait_for(release.wait(), WAIT)
        await items.add(f"{name}-again")
        return name

    return child, inside, release


def _writer(database: uow.Database) -> Any:
    @with_services(AsyncItemService, database=database)
    async def write(items: AsyncItemService, name: str) -> str:
        await items.add(name)
        assert await items.count() >= 1
        return name

    return write


# -- fan-out is refused, the unit rolls back ---------------------------------------------------------------


async def test_gather_of_two_joining_children_is_refused_and_rolls_back(adb: uow.Database) -> None:
    write = _writer(adb)

    @with_services(AsyncItemService, database=adb)
    async def parent(items: AsyncItemService) -> None:
        await items.add("parent")
        await asyncio.gather(write("a"), write("b"))

    with pytest.raises(PropagationError, match=r"write.*requires_new") as raised:
        await parent()
    assert "one after" in str(raised.value)
    assert await committed_async(adb) == []


async def test_gather_return_exceptions_gets_a_uow_error_and_the_unit_rolls_back(adb: uow.Database) -> None:
    write = _writer(adb)
    results: list[object] = []

    @with_services(AsyncItemService, database=adb)
    async def parent(items: AsyncItemService) -> None:
        await items.add("parent")
        results.extend(await asyncio.gather(write("a"), write("b"), return_exceptions=True))

    with pytest.raises(RollbackOnlyError):
        await parent()
    assert results[0] == "a"
    assert isinstance(results[1], PropagationError), results[1]
    assert await committed_async(adb) == []


@pytest.mark.skipif(sys.version_info < (3, 11), reason="asyncio.TaskGroup is new in Python 3.11")
async def test_task_group_of_joining_children_is_refused(adb: uow.Database) -> None:
    write = _writer(adb)

    @with_services(AsyncItemService, database=adb)
    async def parent(items: AsyncItemService) -> None:
        await items.add("parent")
        async with asyncio.TaskGroup() as group:  # type: ignore[attr-defined,unused-ignore]
            group.create_task(write("a"))
            group.create_task(write("b"))

    with pytest.raises(BaseException) as raised:  # an ExceptionGroup (Python 3.11+)
        await parent()
    assert [type(e) for e in raised.value.exceptions] == [PropagationError]  # type: ignore[attr-defined]
    assert await committed_async(adb) == []


async def test_anyio_task_group_of_joining_children_is_refused(adb: uow.Database) -> None:
    write = _writer(adb)

    @with_services(AsyncItemService, database=adb)
    async def parent(items: AsyncItemService) -> None:
        await items.add("parent")
        async with anyio.create_task_group() as group:
            group.start_soon(write, "a")
            group.start_soon(write, "b")

    with pytest.raises(BaseException) as raised:
        await parent()
    errors = getattr(raised.value, "exceptions", [raised.value])
    assert [type(e) for e in errors] == [PropagationError]
    assert await committed_async(adb) == []


async def test_create_task_while_another_child_holds_the_unit(adb: uow.Database) -> None:
    child, inside, release = _children(adb)

    @with_services(AsyncItemService, database=adb)
    async def parent(items: AsyncItemService) -> None:
        first = asyncio.create_task(child("a"))
        await asyncio.wait_for(inside.wait(), WAIT)
        second = asyncio.create_task(child("b"))
        with pytest.raises(PropagationError, match="child"):
            await second
        release.set()
        assert await first == "a"

    with pytest.raises(RollbackOnlyError):
        await parent()
    assert await committed_async(adb) == []


async def test_shielded_children_run_concurrently_are_refused(adb: uow.Database) -> None:
    write = _writer(adb)

    @with_services(AsyncItemService, database=adb)
    async def parent(items: AsyncItemService) -> None:
        await asyncio.gather(asyncio.shield(write("a")), asyncio.shield(write("b")))

    with pytest.raises(PropagationError):
        await parent()
    assert await committed_async(adb) == []


async def test_wait_for_children_run_concurrently_are_refused(adb: uow.Database) -> None:
    write = _writer(adb)

    @with_services(AsyncItemService, database=adb)
    async def parent(items: AsyncItemService) -> None:
        await asyncio.gather(asyncio.wait_for(write("a"), WAIT), asyncio.wait_for(write("b"), WAIT))

    with pytest.raises(PropagationError):
        await parent()
    assert await committed_async(adb) == []


# -- the parent and its child interleaving on one session -----------------------------------------------


async def test_child_joining_while_the_parent_is_in_a_statement_is_refused(adb: uow.Database) -> None:
    write = _writer(adb)

    @with_services(AsyncItemService, database=adb)
    async def parent(items: AsyncItemService) -> None:
        task = asyncio.create_task(write("child"))
        await items.add("parent")  # the child starts while this flush waits for the database
        await task

    with pytest.raises(PropagationError, match="in a statement"):
        await parent()
    assert await committed_async(adb) == []


async def test_parent_using_the_session_while_its_child_runs_is_refused(adb: uow.Database) -> None:
    child, inside, release = _children(adb)
    seen: list[BaseException] = []

    @with_services(AsyncItemService, database=adb)
    async def parent(items: AsyncItemService) -> None:
        task = asyncio.create_task(child("child"))
        await asyncio.wait_for(inside.wait(), WAIT)
        try:
            await items.names()
        except PropagationError as error:
            seen.append(error)
        release.set()
        await task

    with pytest.raises(RollbackOnlyError):
        await parent()
    assert len(seen) == 1 and "child" in str(seen[0])
    assert await committed_async(adb) == []


# -- a unit never commits under a child that still runs ------------------------------------------------------


async def test_unit_ending_while_its_child_runs_rolls_back_and_the_child_fails_cleanly(adb: uow.Database) -> None:
    child, inside, release = _children(adb)
    tasks: list[asyncio.Task[str]] = []

    @with_services(AsyncItemService, database=adb)
    async def parent(items: AsyncItemService) -> None:
        await items.add("parent")
        tasks.append(asyncio.create_task(child("straggler")))
        await asyncio.wait_for(inside.wait(), WAIT)

    with pytest.raises(PropagationError, match="still running"):
        await parent()
    assert checked_out(adb) == 0
    release.set()
    with pytest.raises(NoActiveUnitOfWork, match="has ended"):
        await tasks[0]  # its next write hits the closed session: a uow error, no new transaction
    assert await committed_async(adb) == []


async def test_straggler_that_never_touches_the_session_again_is_told(adb: uow.Database) -> None:
    inside, release = asyncio.Event(), asyncio.Event()
    tasks: list[asyncio.Task[None]] = []

    @with_services(AsyncItemService, database=adb)
    async def child(items: AsyncItemService) -> None:
        await items.add("child")
        inside.set()
        await asyncio.wait_for(release.wait(), WAIT)

    @with_services(AsyncItemService, database=adb)
    async def parent(items: AsyncItemService) -> None:
        tasks.append(asyncio.create_task(child()))
        await asyncio.wait_for(inside.wait(), WAIT)

    with pytest.raises(PropagationError, match="still running"):
        await parent()
    release.set()
    with pytest.raises(PropagationError, match="was still running"):
        await tasks[0]
    assert await committed_async(adb) == []


# -- one child awaited alone keeps working ---------------------------------------------------------------


async def test_one_child_at_a_time_shares_the_unit(adb: uow.Database) -> None:
    write = _writer(adb)
    sessions: list[object] = []

    @with_services(AsyncItemService, database=adb)
    async def child(items: AsyncItemService, name: str) -> None:
        sessions.append(items.session)
        await items.add(name)
        await write(f"{name}-nested")  # a call inside the child joins on the direct path

    @with_services(AsyncItemService, database=adb)
    async def parent(items: AsyncItemService) -> None:
        sessions.append(items.session)
        await items.add("parent")
        await asyncio.create_task(child("task"))
        await asyncio.wait_for(child("wait_for"), WAIT)
        await asyncio.shield(child("shield"))
        async with anyio.create_task_group() as group:
            group.start_soon(child, "anyio")
        await items.add("parent-again")  # the parent has the session back

    await parent()
    assert len({id(s) for s in sessions}) == 1
    assert await committed_async(adb) == sorted(
        ["parent", "parent-again"]
        + [f"{n}{s}" for n in ("task", "wait_for", "shield", "anyio") for s in ("", "-nested")]
    )


async def test_flush_refused_after_a_failed_flush_leaves_the_session_free(adb: uow.Database) -> None:
    """A flush on a transaction a failed flush deactivated raises PendingRollbackError before it
    begins: the check must not leave the session marked as in a statement, or the unit's ending
    would take itself for a straggler and never close the session (found by the reliability model)."""
    async with unit_of_work(database=adb) as session:
        session.add(Item(name="taken"))
    errors: list[str] = []

    @with_services(AsyncItemService, database=adb)
    async def unit(items: AsyncItemService) -> None:
        for name in ("taken", "other"):
            items.session.add(Item(name=name))
            try:
                await items.session.flush()
            except Exception as error:  # the violation, then PendingRollbackError: both swallowed
                errors.append(type(error).__name__)

    with pytest.raises(RollbackOnlyError):
        await unit()
    assert errors == ["IntegrityError", "PendingRollbackError"]
    assert checked_out(adb) == 0
    assert await committed_async(adb) == ["taken"]


async def test_services_opened_in_a_finished_task_and_closed_later_share_the_unit(adb: uow.Database) -> None:
    """Litestar resolves several dependencies in tasks of their own: a generator dependency enters
    `provide_services` in its task, which ends at the ``yield``, and is closed later from the request's
    task. That task uses the session no longer: the parent may use it, and the unit commits."""

    async def dependency() -> Any:
        async with uow.provide_services(AsyncItemService, database=adb) as (items,):
            yield items

    @with_services(AsyncItemService, database=adb)
    async def parent(items: AsyncItemService) -> None:
        generator = dependency()
        built = await asyncio.create_task(anext(generator))
        assert built.session is items.session
        await built.add("from-dependency")
        await items.add("parent")
        with pytest.raises(StopAsyncIteration):
            await anext(generator)

    await parent()
    assert await committed_async(adb) == ["from-dependency", "parent"]


async def test_grandchild_awaited_alone_by_its_child_shares_the_unit(adb: uow.Database) -> None:
    write = _writer(adb)

    @with_services(AsyncItemService, database=adb)
    async def child(items: AsyncItemService) -> None:
        await items.add("child")
        await asyncio.wait_for(write("grandchild"), WAIT)
        await items.add("child-again")

    @with_services(AsyncItemService, database=adb)
    async def parent(items: AsyncItemService) -> None:
        await asyncio.create_task(child())

    await parent()
    assert await committed_async(adb) == ["child", "child-again", "grandchild"]


async def test_requires_new_children_run_concurrently_each_in_its_own_unit(adb: uow.Database) -> None:
    @with_services(AsyncItemService, database=adb, propagation="requires_new")
    async def write(items: AsyncItemService, name: str) -> None:
        await items.add(name)

    @with_services(AsyncItemService, database=adb)
    async def parent(items: AsyncItemService) -> None:
        await asyncio.gather(write("a"), write("b"), write("c"))

    await parent()
    assert await committed_async(adb) == ["a", "b", "c"]


# -- a session uow closed never begins again ----------------------------------------------------------------


async def test_service_kept_after_its_unit_refuses_to_work(adb: uow.Database) -> None:
    @with_services(AsyncItemService, database=adb)
    async def keep(items: AsyncItemService) -> AsyncItemService:
        await items.add("kept")
        return items

    kept = await keep()
    for use in (lambda: kept.add("late"), kept.names, lambda: kept.session.get(Item, 1)):
        with pytest.raises(NoActiveUnitOfWork, match="keep.*has ended"):
            await use()
        assert checked_out(adb) == 0
    with pytest.raises(NoActiveUnitOfWork):
        await kept.session.connection()
    assert checked_out(adb) == 0
    assert await committed_async(adb) == ["kept"]


def test_sync_service_kept_in_a_closure_refuses_to_work(sdb: uow.Database) -> None:
    @with_services(ItemService, database=sdb)
    def keep(items: ItemService) -> Any:
        items.add("kept")
        return lambda: items.add("late")

    late = keep()
    with pytest.raises(NoActiveUnitOfWork, match="keep"):
        late()
    assert checked_out(sdb) == 0
    assert committed(sdb) == ["kept"]


async def test_rolled_back_session_kept_after_its_unit_refuses_to_work(adb: uow.Database) -> None:
    kept: list[AsyncItemService] = []

    @with_services(AsyncItemService, database=adb)
    async def fail(items: AsyncItemService) -> None:
        kept.append(items)
        await items.add("doomed")
        raise ValueError("boom")

    with pytest.raises(ValueError):
        await fail()
    with pytest.raises(NoActiveUnitOfWork):
        await kept[0].session.execute(select(Item.name))
    assert checked_out(adb) == 0


# -- threads: sync sessions, same rules ------------------------------------------------------------------------


def _sync_child(database: uow.Database) -> tuple[Any, threading.Event, threading.Event]:
    inside, release = threading.Event(), threading.Event()

    @with_services(ItemService, database=database)
    def child(items: ItemService, name: str) -> str:
        items.add(name)
        inside.set()
        assert release.wait(WAIT)
        items.add(f"{name}-again")
        return name

    return child, inside, release


async def test_to_thread_children_run_concurrently_are_refused(sdb: uow.Database) -> None:
    child, inside, release = _sync_child(sdb)

    with pytest.raises(RollbackOnlyError):
        with unit_of_work(database=sdb) as session:
            session.add(Item(name="parent"))
            first = asyncio.ensure_future(asyncio.to_thread(child, "a"))
            assert await asyncio.to_thread(inside.wait, WAIT)
            with pytest.raises(PropagationError, match="thread"):
                await asyncio.to_thread(child, "b")
            release.set()
            assert await first == "a"
    assert committed(sdb) == []


async def test_one_to_thread_child_at_a_time_shares_the_unit(sdb: uow.Database) -> None:
    @with_services(ItemService, database=sdb)
    def child(items: ItemService, name: str) -> int:
        items.add(name)
        return id(items.session)

    with unit_of_work(database=sdb) as session:
        session.add(Item(name="parent"))
        session.flush()
        assert await asyncio.to_thread(child, "a") == id(session)
        assert await asyncio.to_thread(child, "b") == id(session)
        session.add(Item(name="parent-again"))
    assert committed(sdb) == ["a", "b", "parent", "parent-again"]


def test_copied_context_threads_run_concurrently_are_refused(sdb: uow.Database) -> None:
    child, inside, release = _sync_child(sdb)

    with pytest.raises(RollbackOnlyError):
        with unit_of_work(database=sdb), ThreadPoolExecutor(max_workers=2) as pool:
            first = pool.submit(contextvars.copy_context().run, child, "a")
            assert inside.wait(WAIT)
            second = pool.submit(contextvars.copy_context().run, child, "b")
            assert isinstance(second.exception(WAIT), PropagationError)
            release.set()
            assert first.result(WAIT) == "a"
    assert committed(sdb) == []


def test_copied_context_thread_awaited_alone_shares_the_unit(sdb: uow.Database) -> None:
    @with_services(ItemService, database=sdb)
    def child(items: ItemService, name: str) -> None:
        items.add(name)

    with unit_of_work(database=sdb) as session, ThreadPoolExecutor(max_workers=1) as pool:
        session.add(Item(name="parent"))
        pool.submit(contextvars.copy_context().run, child, "a").result(WAIT)
        pool.submit(contextvars.copy_context().run, child, "b").result(WAIT)
    assert committed(sdb) == ["a", "b", "parent"]


def test_main_thread_using_the_session_while_a_thread_holds_it_is_refused(sdb: uow.Database) -> None:
    child, inside, release = _sync_child(sdb)

    with pytest.raises(RollbackOnlyError):
        with unit_of_work(database=sdb) as session, ThreadPoolExecutor(max_workers=1) as pool:
            first = pool.submit(contextvars.copy_context().run, child, "a")
            assert inside.wait(WAIT)
            with pytest.raises(PropagationError, match="thread"):
                session.execute(select(Item.name))
            release.set()
            first.result(WAIT)
    assert committed(sdb) == []


def test_sync_unit_ending_while_its_thread_runs_rolls_back(sdb: uow.Database) -> None:
    child, inside, release = _sync_child(sdb)

    with ThreadPoolExecutor(max_workers=1) as pool:
        with pytest.raises(PropagationError, match="still running"):
            with unit_of_work(database=sdb):
                straggler = pool.submit(contextvars.copy_context().run, child, "late")
                assert inside.wait(WAIT)
        assert checked_out(sdb) == 0
        release.set()
        assert isinstance(straggler.exception(WAIT), NoActiveUnitOfWork)
    assert committed(sdb) == []


# -- the checks stay on uow's sessions -------------------------------------------------------------------------


async def test_checks_cost_nothing_to_sessions_outside_uow(adb: uow.Database) -> None:
    @with_services(AsyncItemService, database=adb)
    async def write(items: AsyncItemService) -> None:
        await items.add("one")

    await write()
    # A do_orm_execute listener on Session itself would make SQLAlchemy build an execute state for
    # every statement of every session in the process.
    # (Other libraries and tests may listen on Session themselves: look for uow's listeners only.)
    for name, listener in GUARDS:
        assert not event.contains(Session, name, listener), name


async def test_user_sync_session_class_is_kept_and_guarded(tmp_path: Path) -> None:
    class MySession(Session):
        pass

    engine = create_async_engine(f"sqlite+aiosqlite:///{tmp_path / 'own.sqlite3'}")
    database = uow.Database(session_factory=async_sessionmaker(engine, sync_session_class=MySession))
    try:
        async with unit_of_work(database=database) as session:
            assert type(session.sync_session) is MySession
            kept = session
        with pytest.raises(NoActiveUnitOfWork):
            await kept.execute(select(1))
        assert checked_out(database) == 0
    finally:
        await engine.dispose()


# -- a plain coroutine on the unit's session, left running ---------------------------------------------------


async def test_unit_ending_under_a_plain_task_in_a_statement_rolls_back(adb: uow.Database) -> None:
    tasks: list[asyncio.Task[Any]] = []

    @with_services(AsyncItemService, database=adb)
    async def parent(items: AsyncItemService) -> None:
        await items.add("parent")
        tasks.append(asyncio.create_task(items.names()))  # not a decorated call: it never joins the unit
        # returns at once: the task's statement runs while the unit ends

    with pytest.raises(PropagationError):
        await parent()
    await _settle_tasks()
    assert await committed_async(adb) == []
    assert checked_out(adb) == 0
    await _writer(adb)("next")  # the connection went back to the pool clean
    assert await committed_async(adb) == ["next"]


async def test_unit_failing_while_a_plain_task_is_in_a_statement_leaks_nothing(adb: uow.Database) -> None:
    tasks: list[asyncio.Task[Any]] = []
    inside = asyncio.Event()

    async def slow_read(items: AsyncItemService) -> list[str]:
        inside.set()
        return await items.names()

    @with_services(AsyncItemService, database=adb)
    async def parent(items: AsyncItemService) -> None:
        await items.add("parent")
        tasks.append(asyncio.create_task(slow_read(items)))
        await asyncio.wait_for(inside.wait(), WAIT)
        raise ValueError("the unit fails while its session is in use elsewhere")

    with pytest.raises(ValueError):
        await parent()
    await _settle_tasks()
    assert await committed_async(adb) == []
    assert checked_out(adb) == 0
    await _writer(adb)("next")
    assert await committed_async(adb) == ["next"]

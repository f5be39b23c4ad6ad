"""An exception injected at each point of a unit's life, sync and async, on SQLite and PostgreSQL.

After every fault: the database holds exactly what is expected, no connection is checked
out, no server session is idle in a transaction, the next unit on the same Database works,
and the caller sees the original exception (a secondary failure is noted on it, never
put in its place).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from sqlalchemy import Column, Engine, ForeignKeyConstraint, Integer, MetaData, Table, event, exc, insert
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from sqlalchemy.orm import Session, sessionmaker

import uow
from tests.conftest import Backend
from tests.models import AsyncItemService, Item, ItemService
from tests.reliability._checks import (
    assert_no_leak,
    clear_items_async,
    clear_items_sync,
    item_names_async,
    item_names_sync,
)


class Injected(Exception):
    """The fault."""


class Boom(Exception):
    """The body's own failure, which must reach the caller even when cleaning up fails too."""


# What is armed: fault names, consumed when they fire (each fires once).
ARMED: set[str] = set()
# The exception instance each fault raised, to check the caller sees that very object.
RAISED: dict[str, BaseException] = {}


def fire(point: str, kind: type[BaseException] = Injected) -> None:
    if point in ARMED:
        ARMED.discard(point)
        error = kind(point)
        RAISED[point] = error
        raise error


class FlakySession(Session):
    """A Session whose rollback and close can be made to fail once."""

    def rollback(self) -> None:
        fire("rollback")
        super().rollback()

    def close(self) -> None:
        fire("close")
        super().close()


class FlakyAsyncSession(AsyncSession):
    sync_session_class = FlakySession


@event.listens_for(FlakySession, "before_flush")
def _before_flush(session: Session, *_: Any) -> None:
    fire("flush")
    fire("flush_interrupt", KeyboardInterrupt)
    if session.info.get("reliability_fail_flush_at_commit") and "commit_flush" in ARMED:
        fire("commit_flush")


@event.listens_for(FlakySession, "before_commit")
def _before_commit(_: Session) -> None:
    fire("commit")
    fire("commit_interrupt", KeyboardInterrupt)


@event.listens_for(FlakySession, "after_commit")
def _after_commit(_: Session) -> None:
    # COMMIT has gone through; what fails now fails inside session.commit() all the same.
    fire("after_commit")
    fire("after_commit_interrupt", KeyboardInterrupt)


deferred_metadata = MetaData()
parents = Table("reliability_parents", deferred_metadata, Column("id", Integer, primary_key=True))
children = Table(
    "reliability_children",
    deferred_metadata,
    Column("id", Integer, primary_key=True),
    Column("parent_id", Integer, nullable=False),
    # Checked at COMMIT, not at INSERT: the commit itself fails at the server.
    ForeignKeyConstraint(["parent_id"], ["reliability_parents.id"], deferrable=True, initially="DEFERRED"),
)


def _sqlite_foreign_keys(dbapi_connection: Any, _record: Any) -> None:
    if "sqlite" in type(dbapi_connection).__module__:
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA foreign_keys = ON")
        cursor.close()


def enforce_sqlite_foreign_keys(engine: Engine | AsyncEngine) -> None:
    sync_engine = engine.sync_engine if isinstance(engine, AsyncEngine) else engine
    if sync_engine.dialect.name == "sqlite":
        event.listen(sync_engine, "connect", _sqlite_foreign_keys)


# -- the faults ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Fault:
    """One injection point and what must hold after it fired."""

    point: str
    rows: frozenset[str] = frozenset()  # committed afterwards
    error: str | None = "point"  # which exception the caller sees: the fault's own, "boom", "integrity", None
    noted: bool = False  # the caller's exception carries a note about the secondary failure
    hooks: tuple[str, ...] = ()  # on_commit hooks that ran
    interrupt: bool = False  # the fault is a KeyboardInterrupt (sync only)
    body_raises: bool = False
    armed: tuple[str, ...] = field(default=())

    @property
    def arms(self) -> tuple[str, ...]:
        return self.armed or (self.point,)


COMMITTED = frozenset({"a"})
FAULTS = [
    Fault("open"),
    Fault("checkout"),
    Fault("constructor"),
    Fault("provider_start"),
    Fault("provider_finish"),
    Fault("provider_finish_after_failure", error="boom", noted=True, body_raises=True),
    Fault("body"),
    Fault("flush"),
    Fault("commit_flush"),
    Fault("commit"),
    Fault("deferred_constraint", error="integrity", armed=("none",)),
    Fault("rollback", error="boom", noted=True, body_raises=True),
    Fault("commit_and_rollback", armed=("commit", "rollback"), error="commit"),
    Fault("commit_and_close", armed=("commit", "close"), error="commit"),
    Fault("close", error="boom", noted=True, body_raises=True),
    Fault("after_commit", rows=COMMITTED, error=None, hooks=("first", "second")),
    Fault("close_after_commit", rows=COMMITTED, error=None, hooks=("first", "second"), armed=("close",)),
    Fault("on_commit", rows=COMMITTED, error=None, hooks=("first", "second")),
]
INTERRUPTS = [
    Fault("body_interrupt", interrupt=True),
    Fault("flush_interrupt", interrupt=True),
    Fault("commit_interrupt", interrupt=True),
    Fault("provider_start_interrupt", interrupt=True),
    Fault("after_commit_interrupt", rows=COMMITTED, hooks=("first", "second"), interrupt=True),
]


class Service:
    def __init__(self, session: Session) -> None:
        fire("constructor")
        self.session = session


class AsyncService:
    def __init__(self, session: AsyncSession) -> None:
        fire("constructor")
        self.session = session


class Resource:
    """What a generator provider yields."""


def provide_resource(session: Session) -> Iterator[Resource]:
    fire("provider_start")
    fire("provider_start_interrupt", KeyboardInterrupt)
    try:
        yield Resource()
    except Boom:
        fire("provider_finish_after_failure")
        raise
    fire("provider_finish")


async def provide_async_resource(session: AsyncSession) -> AsyncIterator[Resource]:
    fire("provider_start")
    try:
        yield Resource()
    except Boom:
        fire("provider_finish_after_failure")
        raise
    fire("provider_finish")


def flaky_sync_database(engine: Engine) -> uow.Database:
    @event.listens_for(engine, "checkout")
    def _checkout(*_: Any) -> None:
        fire("checkout")

    factory = sessionmaker(engine, class_=FlakySession, expire_on_commit=False)
    return uow.Database(session_factory=factory)


def flaky_async_database(engine: AsyncEngine) -> uow.Database:
    @event.listens_for(engine.sync_engine, "checkout")
    def _checkout(*_: Any) -> None:
        fire("checkout")

    factory = async_sessionmaker(engine, class_=FlakyAsyncSession, expire_on_commit=False)
    return uow.Database(session_factory=factory)


class HookLog:
    def __init__(self, database: uow.Database) -> None:
        self.ran: list[str] = []
        self.database = database

    def register(self) -> None:
        uow.on_commit(lambda: self.ran.append("first"), database=self.database)
        uow.on_commit(self.failing, database=self.database)
        uow.on_commit(lambda: self.ran.append("second"), database=self.database)

    @staticmethod
    def failing() -> None:
        fire("on_commit")


def expected_error(fault: Fault) -> type[BaseException] | None:
    if fault.error is None:
        return None
    if fault.error == "boom":
        return Boom
    if fault.error == "integrity":
        return exc.IntegrityError
    return KeyboardInterrupt if fault.interrupt else Injected


def check_error(fault: Fault, seen: BaseException | None, boom: Boom) -> None:
    wanted = expected_error(fault)
    if wanted is None:
        assert seen is None, f"{fault.point}: the caller saw {seen!r}, expected no error"
        return
    assert isinstance(seen, wanted), f"{fault.point}: the caller saw {seen!r}, expected {wanted.__name__}"
    if fault.error == "boom":
        assert seen is boom, f"{fault.point}: the body's exception was replaced"
    elif fault.error == "commit":
        assert seen is RAISED["commit"], f"{fault.point}: the commit's exception was replaced"
    elif fault.error == "point":
        assert seen is RAISED[fault.arms[0]], f"{fault.point}: the caller did not see the injected exception"
    if fault.noted:
        notes = getattr(seen, "__notes__", None)
        if notes is not None:
            assert any("also failed" in note for note in notes), f"{fault.point}: no note on {seen!r}: {notes}"
        secondary = RAISED[fault.arms[0]]
        assert _in_chain(seen, secondary), f"{fault.point}: the secondary failure is not chained to {seen!r}"


def _in_chain(error: BaseException, wanted: BaseException) -> bool:
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        if current is wanted:
            return True
        seen.add(id(current))
        current = current.__context__
    return False


# -- sync ----------------------------------------------------------------------------------------


def run_sync_fault(database: uow.Database, fault: Fault) -> tuple[BaseException | None, Boom, HookLog]:
    hooks = HookLog(database)
    boom = Boom(fault.point)

    @uow.with_services(ItemService, Service, provide_resource, database=database)
    def unit(items: ItemService, service: Service, resource: Resource) -> None:
        fire("body")
        fire("body_interrupt", KeyboardInterrupt)
        hooks.register()
        if fault.point == "commit_flush":
            # Left for the commit to flush: the failure happens inside commit().
            items.session.info["reliability_fail_flush_at_commit"] = True
            items.session.add(Item(name="a"))
        else:
            items.add("a")
        if fault.point == "deferred_constraint":
            items.session.execute(insert(children).values(id=1, parent_id=999))
        if fault.body_raises:
            raise boom

    ARMED.clear()
    RAISED.clear()
    ARMED.update(fault.arms)
    try:
        if fault.point == "open":
            with failing_session_init():
                unit()
        else:
            unit()
    except BaseException as error:
        return error, boom, hooks
    return None, boom, hooks


@contextlib.contextmanager
def failing_session_init() -> Iterator[None]:
    """Make FlakySession() itself raise while active: the unit cannot even get a session."""
    original = FlakySession.__init__

    def init(session: FlakySession, *args: Any, **kwargs: Any) -> None:
        fire("open")
        original(session, *args, **kwargs)

    FlakySession.__init__ = init  # type: ignore[method-assign]
    try:
        yield
    finally:
        FlakySession.__init__ = original  # type: ignore[method-assign]


@pytest.mark.parametrize("faults", ["faults", "interrupts"])
def test_sync_faults_leave_nothing_behind(
    backend: Backend, sync_db: uow.Database, faults: str, caplog: pytest.LogCaptureFixture
) -> None:
    engine = sync_db.engine
    assert isinstance(engine, Engine)
    enforce_sqlite_foreign_keys(engine)
    engine.dispose()
    deferred_metadata.create_all(engine)
    database = flaky_sync_database(engine)
    try:
        for fault in FAULTS if faults == "faults" else INTERRUPTS:
            clear_items_sync(database)
            with caplog.at_level(logging.ERROR, logger="uow"):
                seen, boom, hooks = run_sync_fault(database, fault)
            assert not (ARMED & set(fault.arms)) or fault.point == "deferred_constraint", f"{fault.point} never fired"
            check_error(fault, seen, boom)
            assert_no_leak(database, backend)
            assert item_names_sync(database) == set(fault.rows), f"{fault.point}: wrong rows committed"
            assert tuple(hooks.ran) == fault.hooks, f"{fault.point}: hooks ran {hooks.ran}"
            if fault.point == "on_commit":
                assert any("on_commit hook" in r.getMessage() for r in caplog.records), "hook failure not logged"
            assert_next_unit_works_sync(database)
    finally:
        ARMED.clear()
        deferred_metadata.drop_all(engine)


def assert_next_unit_works_sync(database: uow.Database) -> None:
    @uow.with_services(ItemService, database=database)
    def next_unit(items: ItemService) -> int:
        items.add("next")
        return items.count()

    next_unit()
    clear_items_sync(database)


# -- async ---------------------------------------------------------------------------------------


async def run_async_fault(database: uow.Database, fault: Fault) -> tuple[BaseException | None, Boom, HookLog]:
    hooks = HookLog(database)
    boom = Boom(fault.point)

    @uow.with_services(AsyncItemService, AsyncService, provide_async_resource, database=database)
    async def unit(items: AsyncItemService, async_service: AsyncService, resource: Resource) -> None:
        fire("body")
        hooks.register()
        if fault.point == "commit_flush":
            items.session.sync_session.info["reliability_fail_flush_at_commit"] = True
            items.session.add(Item(name="a"))
        else:
            await items.add("a")
        if fault.point == "deferred_constraint":
            await items.session.execute(insert(children).values(id=1, parent_id=999))
        if fault.body_raises:
            raise boom

    ARMED.clear()
    RAISED.clear()
    ARMED.update(fault.arms)
    try:
        if fault.point == "open":
            with failing_session_init():
                await unit()
        else:
            await unit()
    except BaseException as error:
        return error, boom, hooks
    return None, boom, hooks


async def test_async_faults_leave_nothing_behind(
    backend: Backend, async_db: uow.Database, caplog: pytest.LogCaptureFixture
) -> None:
    engine = async_db.engine
    assert isinstance(engine, AsyncEngine)
    enforce_sqlite_foreign_keys(engine)
    await engine.dispose()
    async with engine.begin() as connection:
        await connection.run_sync(deferred_metadata.create_all)
    database = flaky_async_database(engine)
    try:
        for fault in FAULTS:
            await clear_items_async(database)
            with caplog.at_level(logging.ERROR, logger="uow"):
                seen, boom, hooks = await run_async_fault(database, fault)
            assert not (ARMED & set(fault.arms)) or fault.point == "deferred_constraint", f"{fault.point} never fired"
            check_error(fault, seen, boom)
            assert_no_leak(database, backend)
            assert await item_names_async(database) == set(fault.rows), f"{fault.point}: wrong rows committed"
            assert tuple(hooks.ran) == fault.hooks, f"{fault.point}: hooks ran {hooks.ran}"
            await assert_next_unit_works_async(database)
    finally:
        ARMED.clear()
        async with engine.begin() as connection:
            await connection.run_sync(deferred_metadata.drop_all)


async def assert_next_unit_works_async(database: uow.Database) -> None:
    @uow.with_services(AsyncItemService, database=database)
    async def next_unit(items: AsyncItemService) -> int:
        await items.add("next")
        return await items.count()

    await next_unit()
    await clear_items_async(database)


# -- provide_services: the context manager form ----------------------------------------------------


def test_provide_services_keeps_the_blocks_exception(backend: Backend, sync_db: uow.Database) -> None:
    boom = Boom("block")
    ARMED.clear()
    ARMED.add("provider_finish_after_failure")
    with pytest.raises(Boom) as seen:
        with uow.provide_services(ItemService, provide_resource, database=sync_db) as (items, _):
            items.add("a")
            raise boom
    assert seen.value is boom, "the provider's failure replaced the block's exception"
    assert _in_chain(seen.value, RAISED["provider_finish_after_failure"])
    assert_no_leak(sync_db, backend)
    assert item_names_sync(sync_db) == set()


async def test_provide_services_keeps_the_blocks_exception_async(backend: Backend, async_db: uow.Database) -> None:
    boom = Boom("block")
    ARMED.clear()
    ARMED.add("provider_finish_after_failure")
    with pytest.raises(Boom) as seen:
        async with uow.provide_services(AsyncItemService, provide_async_resource, database=async_db) as (items, _):
            await items.add("a")
            raise boom
    assert seen.value is boom, "the provider's failure replaced the block's exception"
    assert _in_chain(seen.value, RAISED["provider_finish_after_failure"])
    assert_no_leak(async_db, backend)
    assert await item_names_async(async_db) == set()

"""Ownership (docs/design.md, "Ownership"), propagation, hooks and the unit's public helpers, sync and async.

Every test runs on each backend (SQLite file, PostgreSQL, MariaDB) through the ``sync_db`` /
``async_db`` fixtures, which also fail the test if a connection or a server transaction leaked.
Results are read back on a connection of their own (tests.helpers), never through uow.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest
import sqlalchemy
import sqlalchemy.exc
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

import uow
from tests.helpers import checked_out, committed, committed_async
from tests.models import AsyncItemService, AsyncTagService, Item, ItemService, TagService
from uow import (
    ConfigurationError,
    NoActiveUnitOfWork,
    Propagation,
    PropagationError,
    RollbackOnlyError,
    current_session,
    on_commit,
    provide_services,
    unit_of_work,
    with_services,
)


class Boom(Exception):
    """The failure the tests raise on purpose."""


# -- owner: commit on return, roll back on raise, close ---------------------------------------------


def test_commit_on_return(sync_db: uow.Database) -> None:
    @with_services(ItemService, database=sync_db)
    def add(items: ItemService, name: str) -> str:
        items.add(name)
        return "done"

    assert add("a") == "done"
    assert committed(sync_db) == ["a"]
    assert checked_out(sync_db) == 0


async def test_commit_on_return_async(async_db: uow.Database) -> None:
    @with_services(AsyncItemService, database=async_db)
    async def add(items: AsyncItemService, name: str) -> str:
        await items.add(name)
        return "done"

    assert await add("a") == "done"
    assert await committed_async(async_db) == ["a"]
    assert checked_out(async_db) == 0


def test_rollback_on_raise(sync_db: uow.Database) -> None:
    @with_services(ItemService, database=sync_db)
    def add(items: ItemService) -> None:
        items.add("a")
        raise Boom

    with pytest.raises(Boom):
        add()
    assert committed(sync_db) == []
    assert checked_out(sync_db) == 0


async def test_rollback_on_raise_async(async_db: uow.Database) -> None:
    @with_services(AsyncItemService, database=async_db)
    async def add(items: AsyncItemService) -> None:
        await items.add("a")
        raise Boom

    with pytest.raises(Boom):
        await add()
    assert await committed_async(async_db) == []
    assert checked_out(async_db) == 0


@pytest.mark.parametrize("error", [KeyboardInterrupt, SystemExit, GeneratorExit])
def test_rollback_on_base_exception(sync_db: uow.Database, error: type[BaseException]) -> None:
    @with_services(ItemService, database=sync_db)
    def add(items: ItemService) -> None:
        items.add("a")
        raise error

    with pytest.raises(error):
        add()
    assert committed(sync_db) == []
    assert checked_out(sync_db) == 0


async def test_rollback_on_cancelled_error_async(async_db: uow.Database) -> None:
    @with_services(AsyncItemService, database=async_db)
    async def add(items: AsyncItemService) -> None:
        await items.add("a")
        raise asyncio.CancelledError

    with pytest.raises(asyncio.CancelledError):
        await add()
    assert await committed_async(async_db) == []
    assert checked_out(async_db) == 0


@pytest.mark.parametrize("error", [KeyboardInterrupt, SystemExit])
def test_context_managers_roll_back_on_base_exception(sync_db: uow.Database, error: type[BaseException]) -> None:
    with pytest.raises(error), unit_of_work(database=sync_db) as session:
        session.add(Item(name="a"))
        session.flush()
        raise error
    with pytest.raises(error), provide_services(ItemService, database=sync_db) as (items,):
        items.add("b")
        raise error
    assert committed(sync_db) == []
    assert checked_out(sync_db) == 0


async def test_context_managers_roll_back_on_cancelled_error_async(async_db: uow.Database) -> None:
    with pytest.raises(asyncio.CancelledError):
        async with unit_of_work(database=async_db) as session:
            session.add(Item(name="a"))
            await session.flush()
            raise asyncio.CancelledError
    with pytest.raises(asyncio.CancelledError):
        async with provide_services(AsyncItemService, database=async_db) as (items,):
            await items.add("b")
            raise asyncio.CancelledError
    assert await committed_async(async_db) == []
    assert checked_out(async_db) == 0


def test_session_is_closed_after_the_unit(sync_db: uow.Database) -> None:
    seen: list[Session] = []

    @with_services(ItemService, database=sync_db)
    def add(items: ItemService) -> Item:
        seen.append(items.session)
        return items.add("a")

    item = add()
    (session,) = seen  # held, so closing (not garbage collection) must be what detached the item
    assert not session.in_transaction()
    assert item not in session
    assert len(session.identity_map) == 0
    assert sqlalchemy.inspect(item).detached


async def test_session_is_closed_after_the_unit_async(async_db: uow.Database) -> None:
    seen: list[AsyncSession] = []

    @with_services(AsyncItemService, database=async_db)
    async def add(items: AsyncItemService) -> Item:
        seen.append(items.session)
        return await items.add("a")

    item = await add()
    (session,) = seen
    assert not session.in_transaction()
    assert item not in session
    assert len(session.identity_map) == 0
    assert sqlalchemy.inspect(item).detached


def test_session_is_closed_after_a_rollback(sync_db: uow.Database) -> None:
    with unit_of_work(database=sync_db) as session:
        session.add(Item(name="a"))
    seen: list[tuple[Session, Item]] = []

    @unit_of_work(database=sync_db)
    def load_and_fail(session: Session) -> None:
        seen.append((session, session.scalars(sqlalchemy.select(Item)).one()))
        raise Boom

    with pytest.raises(Boom):
        load_and_fail()
    ((session, item),) = seen
    assert item not in session  # a rollback alone would keep the loaded object, expired
    assert len(session.identity_map) == 0


def test_objects_stay_readable_after_commit(sync_db: uow.Database) -> None:
    @with_services(ItemService, database=sync_db)
    def add(items: ItemService) -> Item:
        return items.add("a")

    item = add()
    state = sqlalchemy.inspect(item)
    assert state.detached
    assert not state.expired
    assert item.name == "a"
    assert isinstance(item.id, int)


async def test_objects_stay_readable_after_commit_async(async_db: uow.Database) -> None:
    @with_services(AsyncItemService, database=async_db)
    async def add(items: AsyncItemService) -> Item:
        return await items.add("a")

    item = await add()
    state = sqlalchemy.inspect(item)
    assert state.detached
    assert not state.expired
    assert item.name == "a"
    assert isinstance(item.id, int)


def test_all_services_of_a_unit_share_its_session(sync_db: uow.Database) -> None:
    @with_services(ItemService, TagService, database=sync_db)
    def tag(items: ItemService, tags: TagService, session: Session) -> None:
        assert items.session is tags.session is session is current_session()
        tags.tag(items.add("a"), "red")

    tag()
    assert committed(sync_db) == ["a"]


async def test_all_services_of_a_unit_share_its_session_async(async_db: uow.Database) -> None:
    @with_services(AsyncItemService, AsyncTagService, database=async_db)
    async def tag(items: AsyncItemService, tags: AsyncTagService, session: AsyncSession) -> None:
        assert items.session is tags.session is session is current_session()
        await tags.tag(await items.add("a"), "red")

    await tag()
    assert await committed_async(async_db) == ["a"]


def test_each_top_level_call_gets_a_fresh_session(sync_db: uow.Database) -> None:
    seen: list[Session] = []

    @with_services(ItemService, database=sync_db)
    def touch(items: ItemService) -> None:
        seen.append(items.session)

    touch()
    touch()
    assert seen[0] is not seen[1]


def test_failed_commit_rolls_back_and_skips_hooks(sync_db: uow.Database) -> None:
    calls: list[str] = []
    with unit_of_work(database=sync_db) as session:
        session.add(Item(name="a"))

    @unit_of_work(database=sync_db)
    def duplicate(session: Session) -> None:
        session.add(Item(name="a"))  # flushed only by the commit, which fails on the unique name
        on_commit(lambda: calls.append("hook"))

    with pytest.raises(sqlalchemy.exc.IntegrityError):
        duplicate()
    assert calls == []
    assert committed(sync_db) == ["a"]
    assert checked_out(sync_db) == 0


async def test_failed_commit_rolls_back_and_skips_hooks_async(async_db: uow.Database) -> None:
    calls: list[str] = []
    async with unit_of_work(database=async_db) as session:
        session.add(Item(name="a"))

    @unit_of_work(database=async_db)
    async def duplicate(session: AsyncSession) -> None:
        session.add(Item(name="a"))
        on_commit(lambda: calls.append("hook"))

    with pytest.raises(sqlalchemy.exc.IntegrityError):
        await duplicate()
    assert calls == []
    assert await committed_async(async_db) == ["a"]
    assert checked_out(async_db) == 0


def test_unit_without_a_database_joins_the_active_one(sync_db: uow.Database) -> None:
    with unit_of_work(database=sync_db) as outer, unit_of_work() as inner:
        assert inner is outer
        inner.add(Item(name="a"))
    assert committed(sync_db) == ["a"]


async def test_unit_without_a_database_refuses_an_active_unit_of_the_other_kind(async_db: uow.Database) -> None:
    async with unit_of_work(database=async_db):
        with pytest.raises(ConfigurationError, match="is sync but the active unit it would join is async"):
            with unit_of_work():
                pass

        @unit_of_work(propagation="requires_new")
        def sync_work() -> None:
            pass

        with pytest.raises(ConfigurationError, match="is sync but the active unit"):
            sync_work()
    assert checked_out(async_db) == 0


# -- session= : the caller owns it ---------------------------------------------------------------


def test_explicit_session_is_left_uncommitted_and_open(sync_db: uow.Database) -> None:
    @with_services(ItemService, database=sync_db)
    def add(items: ItemService, name: str) -> None:
        assert items.session is session
        items.add(name)

    with Session(sync_db.engine) as session:
        add("a", session=session)
        assert session.in_transaction()
        assert committed(sync_db) == []
        session.commit()  # the caller's commit
    assert committed(sync_db) == ["a"]


async def test_explicit_session_is_left_uncommitted_and_open_async(async_db: uow.Database) -> None:
    @with_services(AsyncItemService, database=async_db)
    async def add(items: AsyncItemService, name: str) -> None:
        assert items.session is session
        await items.add(name)

    async with AsyncSession(async_db.engine) as session:  # type: ignore[arg-type]
        await add("a", session=session)
        assert session.in_transaction()
        assert await committed_async(async_db) == []
        await session.commit()
    assert await committed_async(async_db) == ["a"]


def test_explicit_session_is_not_rolled_back_or_closed_on_raise(sync_db: uow.Database) -> None:
    @with_services(ItemService, database=sync_db)
    def fail(items: ItemService) -> None:
        items.add("b")
        raise Boom

    with Session(sync_db.engine) as session:
        session.add(Item(name="a"))
        session.flush()
        with pytest.raises(Boom):
            fail(session=session)
        assert session.in_transaction()
        # The caller decides: here it keeps the work done before and by the failed call.
        session.commit()
    assert committed(sync_db) == ["a", "b"]


def test_nested_calls_inside_an_explicit_session_join_it(sync_db: uow.Database) -> None:
    @with_services(ItemService, database=sync_db)
    def inner(items: ItemService) -> None:
        assert items.session is session
        items.add("inner")

    @with_services(ItemService, database=sync_db)
    def outer(items: ItemService) -> None:
        items.add("outer")
        inner()
        assert current_session() is session

    with Session(sync_db.engine) as session:
        outer(session=session)
        assert committed(sync_db) == []
        session.rollback()  # the caller's decision holds for the inner call too
    assert committed(sync_db) == []
    assert checked_out(sync_db) == 0


async def test_nested_calls_inside_an_explicit_session_join_it_async(async_db: uow.Database) -> None:
    @with_services(AsyncItemService, database=async_db)
    async def inner(items: AsyncItemService) -> None:
        assert items.session is session
        await items.add("inner")

    @with_services(AsyncItemService, database=async_db)
    async def outer(items: AsyncItemService) -> None:
        await items.add("outer")
        await inner()

    async with AsyncSession(async_db.engine) as session:  # type: ignore[arg-type]
        await outer(session=session)
        assert await committed_async(async_db) == []
        await session.commit()
    assert await committed_async(async_db) == ["inner", "outer"]


def test_swallowed_failure_inside_an_explicit_session_raises_rollback_only(sync_db: uow.Database) -> None:
    @with_services(ItemService, database=sync_db)
    def inner(items: ItemService) -> None:
        raise Boom

    @with_services(ItemService, database=sync_db)
    def outer(items: ItemService) -> None:
        items.add("outer")
        try:
            inner()
        except Boom:
            pass

    with Session(sync_db.engine) as session:
        with pytest.raises(RollbackOnlyError):
            outer(session=session)
        assert session.in_transaction()  # still the caller's to roll back
        session.rollback()
    assert committed(sync_db) == []


def test_sync_function_refuses_an_async_session(sync_db: uow.Database) -> None:
    @with_services(ItemService, database=sync_db)
    def add(items: ItemService) -> None:
        pass

    with pytest.raises(ConfigurationError, match="must be a Session, got AsyncSession"):
        add(session=AsyncSession())


def test_nested_unit_inside_an_explicit_session_uses_a_savepoint_in_it(sync_db: uow.Database) -> None:
    @unit_of_work(database=sync_db, propagation="nested")
    def savepoint() -> None:
        assert current_session() is session
        current_session().add(Item(name="savepoint"))
        raise Boom

    @unit_of_work(database=sync_db)
    def work() -> None:
        current_session().add(Item(name="work"))
        with pytest.raises(Boom):
            savepoint()

    with Session(sync_db.engine) as session:
        work(session=session)
        assert session.in_transaction()
        session.commit()
    assert committed(sync_db) == ["work"]


@pytest.mark.parametrize("propagation", ["requires_new", "never"])
def test_explicit_session_with_a_propagation_that_cannot_use_it(sync_db: uow.Database, propagation: str) -> None:
    @unit_of_work(database=sync_db, propagation=propagation)
    def work() -> None:
        pass

    with Session(sync_db.engine) as session, pytest.raises(PropagationError, match=propagation):
        work(session=session)


# -- required: nested calls join the outer unit ----------------------------------------------------

JOIN_CASES = [
    # (inner fails, outer fails, what the caller sees, committed)
    pytest.param(False, False, None, ["inner", "outer"], id="inner-commit-outer-commit"),
    pytest.param(True, False, RollbackOnlyError, [], id="inner-rollback-swallowed-outer-commit"),
    pytest.param(False, True, Boom, [], id="inner-commit-outer-rollback"),
    pytest.param(True, True, Boom, [], id="inner-rollback-outer-rollback"),
]


@pytest.mark.parametrize(("inner_fails", "outer_fails", "raised", "expected"), JOIN_CASES)
def test_joined_units(
    sync_db: uow.Database, inner_fails: bool, outer_fails: bool, raised: type[Exception] | None, expected: list[str]
) -> None:
    @with_services(ItemService, database=sync_db)
    def inner(items: ItemService) -> None:
        assert items.session is outer_session[0]
        items.add("inner")
        if inner_fails:
            raise Boom

    outer_session: list[Session] = []

    @with_services(ItemService, database=sync_db)
    def outer(items: ItemService) -> None:
        outer_session.append(items.session)
        items.add("outer")
        try:
            inner()
        except Boom:
            pass  # swallowed: the shared transaction is rollback-only now
        assert committed(sync_db) == []  # the inner unit did not commit on its own
        if outer_fails:
            raise Boom

    if raised is None:
        outer()
    else:
        with pytest.raises(raised):
            outer()
    assert committed(sync_db) == expected
    assert checked_out(sync_db) == 0


@pytest.mark.parametrize(("inner_fails", "outer_fails", "raised", "expected"), JOIN_CASES)
async def test_joined_units_async(
    async_db: uow.Database, inner_fails: bool, outer_fails: bool, raised: type[Exception] | None, expected: list[str]
) -> None:
    outer_session: list[AsyncSession] = []

    @with_services(AsyncItemService, database=async_db)
    async def inner(items: AsyncItemService) -> None:
        assert items.session is outer_session[0]
        await items.add("inner")
        if inner_fails:
            raise Boom

    @with_services(AsyncItemService, database=async_db)
    async def outer(items: AsyncItemService) -> None:
        outer_session.append(items.session)
        await items.add("outer")
        try:
            await inner()
        except Boom:
            pass
        assert await committed_async(async_db) == []
        if outer_fails:
            raise Boom

    if raised is None:
        await outer()
    else:
        with pytest.raises(raised):
            await outer()
    assert await committed_async(async_db) == expected
    assert checked_out(async_db) == 0


def test_inner_failure_that_propagates_rolls_back_everything(sync_db: uow.Database) -> None:
    @with_services(ItemService, database=sync_db)
    def inner(items: ItemService) -> None:
        items.add("inner")
        raise Boom

    @with_services(ItemService, database=sync_db)
    def outer(items: ItemService) -> None:
        items.add("outer")
        inner()

    with pytest.raises(Boom):
        outer()
    assert committed(sync_db) == []


def test_rollback_only_error_explains_the_fix(sync_db: uow.Database) -> None:
    @unit_of_work(database=sync_db)
    def inner() -> None:
        raise Boom

    @with_services(ItemService, database=sync_db)
    def outer(items: ItemService) -> None:
        items.add("outer")
        with pytest.raises(Boom):
            inner()

    with pytest.raises(RollbackOnlyError, match="propagation='nested'") as info:
        outer()
    assert not isinstance(info.value, Boom)
    assert committed(sync_db) == []


# -- nested: savepoints ------------------------------------------------------------------------

NESTED_CASES = [
    pytest.param(False, False, None, ["inner", "outer"], id="inner-release-outer-commit"),
    pytest.param(True, False, None, ["outer"], id="inner-rollback-outer-commit"),
    pytest.param(False, True, Boom, [], id="inner-release-outer-rollback"),
    pytest.param(True, True, Boom, [], id="inner-rollback-outer-rollback"),
]


@pytest.mark.parametrize(("inner_fails", "outer_fails", "raised", "expected"), NESTED_CASES)
def test_nested_units(
    sync_db: uow.Database, inner_fails: bool, outer_fails: bool, raised: type[Exception] | None, expected: list[str]
) -> None:
    @with_services(ItemService, database=sync_db, propagation="nested")
    def inner(items: ItemService) -> None:
        assert items.session is current_session()
        assert items.session.in_nested_transaction()
        items.add("inner")
        if inner_fails:
            raise Boom

    @with_services(ItemService, database=sync_db)
    def outer(items: ItemService) -> None:
        items.add("outer")
        try:
            inner()
        except Boom:
            pass  # recoverable: only the savepoint was rolled back
        assert not items.session.in_nested_transaction()
        assert sorted(items.names()) == (["outer"] if inner_fails else ["inner", "outer"])
        if outer_fails:
            raise Boom

    if raised is None:
        outer()
    else:
        with pytest.raises(raised):
            outer()
    assert committed(sync_db) == expected
    assert checked_out(sync_db) == 0


@pytest.mark.parametrize(("inner_fails", "outer_fails", "raised", "expected"), NESTED_CASES)
async def test_nested_units_async(
    async_db: uow.Database, inner_fails: bool, outer_fails: bool, raised: type[Exception] | None, expected: list[str]
) -> None:
    @with_services(AsyncItemService, database=async_db, propagation=Propagation.NESTED)
    async def inner(items: AsyncItemService) -> None:
        assert items.session is current_session()
        assert items.session.in_nested_transaction()
        await items.add("inner")
        if inner_fails:
            raise Boom

    @with_services(AsyncItemService, database=async_db)
    async def outer(items: AsyncItemService) -> None:
        await items.add("outer")
        try:
            await inner()
        except Boom:
            pass
        assert sorted(await items.names()) == (["outer"] if inner_fails else ["inner", "outer"])
        if outer_fails:
            raise Boom

    if raised is None:
        await outer()
    else:
        with pytest.raises(raised):
            await outer()
    assert await committed_async(async_db) == expected
    assert checked_out(async_db) == 0


def test_nested_without_an_active_unit_begins_one(sync_db: uow.Database) -> None:
    @with_services(ItemService, database=sync_db, propagation="nested")
    def add(items: ItemService) -> None:
        assert not items.session.in_nested_transaction()
        items.add("a")

    add()
    assert committed(sync_db) == ["a"]


async def test_nested_without_an_active_unit_begins_one_async(async_db: uow.Database) -> None:
    @with_services(AsyncItemService, database=async_db, propagation="nested")
    async def add(items: AsyncItemService) -> None:
        assert not items.session.in_nested_transaction()
        await items.add("a")

    await add()
    assert await committed_async(async_db) == ["a"]


@pytest.mark.parametrize("outer_catches", [True, False])
def test_swallowed_failure_inside_a_nested_unit(sync_db: uow.Database, outer_catches: bool) -> None:
    @unit_of_work(database=sync_db)
    def joined() -> None:
        current_session().add(Item(name="joined"))
        raise Boom

    @with_services(ItemService, database=sync_db, propagation="nested")
    def savepoint(items: ItemService) -> None:
        items.add("savepoint")
        try:
            joined()
        except Boom:
            pass  # swallowed inside the savepoint: the savepoint, not the outer unit, is doomed

    @with_services(ItemService, database=sync_db)
    def outer(items: ItemService) -> None:
        items.add("outer")
        if outer_catches:
            with pytest.raises(RollbackOnlyError, match="savepoint"):
                savepoint()
        else:
            savepoint()

    if outer_catches:
        outer()
        assert committed(sync_db) == ["outer"]
    else:
        with pytest.raises(RollbackOnlyError):
            outer()
        assert committed(sync_db) == []


async def test_swallowed_failure_inside_a_nested_unit_async(async_db: uow.Database) -> None:
    @unit_of_work(database=async_db)
    async def joined() -> None:
        current_session().add(Item(name="joined"))
        raise Boom

    @with_services(AsyncItemService, database=async_db, propagation="nested")
    async def savepoint(items: AsyncItemService) -> None:
        await items.add("savepoint")
        try:
            await joined()
        except Boom:
            pass

    @with_services(AsyncItemService, database=async_db)
    async def outer(items: AsyncItemService) -> None:
        await items.add("outer")
        with pytest.raises(RollbackOnlyError):
            await savepoint()

    await outer()
    assert await committed_async(async_db) == ["outer"]


def test_nested_inside_nested(sync_db: uow.Database) -> None:
    @unit_of_work(database=sync_db, propagation="nested")
    def deepest() -> None:
        current_session().add(Item(name="deepest"))
        raise Boom

    @unit_of_work(database=sync_db, propagation="nested")
    def middle() -> None:
        current_session().add(Item(name="middle"))
        with pytest.raises(Boom):
            deepest()

    @unit_of_work(database=sync_db)
    def outer() -> None:
        current_session().add(Item(name="outer"))
        middle()

    outer()
    assert committed(sync_db) == ["middle", "outer"]


# -- requires_new: a unit of its own -------------------------------------------------------------


def test_requires_new_commits_independently_of_an_outer_rollback(sync_db: uow.Database) -> None:
    sessions: dict[str, Session] = {}

    @with_services(ItemService, database=sync_db, propagation="requires_new")
    def audit(items: ItemService) -> None:
        sessions["inner"] = items.session
        assert current_session() is items.session
        items.add("audit")

    @with_services(ItemService, database=sync_db)
    def outer(items: ItemService) -> None:
        sessions["outer"] = items.session
        audit()  # first, so SQLite's single writer is free for it
        assert committed(sync_db) == ["audit"]
        assert current_session() is items.session
        items.add("outer")
        raise Boom

    with pytest.raises(Boom):
        outer()
    assert sessions["inner"] is not sessions["outer"]
    assert not sessions["inner"].in_transaction()  # closed by its own unit
    assert committed(sync_db) == ["audit"]
    assert checked_out(sync_db) == 0


async def test_requires_new_commits_independently_of_an_outer_rollback_async(async_db: uow.Database) -> None:
    sessions: dict[str, AsyncSession] = {}

    @with_services(AsyncItemService, database=async_db, propagation="requires_new")
    async def audit(items: AsyncItemService) -> None:
        sessions["inner"] = items.session
        assert current_session() is items.session
        await items.add("audit")

    @with_services(AsyncItemService, database=async_db)
    async def outer(items: AsyncItemService) -> None:
        sessions["outer"] = items.session
        await audit()
        assert await committed_async(async_db) == ["audit"]
        assert current_session() is items.session
        await items.add("outer")
        raise Boom

    with pytest.raises(Boom):
        await outer()
    assert sessions["inner"] is not sessions["outer"]
    assert await committed_async(async_db) == ["audit"]
    assert checked_out(async_db) == 0


def test_requires_new_failure_does_not_doom_the_outer_unit(sync_db: uow.Database) -> None:
    @with_services(ItemService, database=sync_db, propagation="requires_new")
    def audit(items: ItemService) -> None:
        items.add("audit")
        raise Boom

    @with_services(ItemService, database=sync_db)
    def outer(items: ItemService) -> None:
        with pytest.raises(Boom):
            audit()
        items.add("outer")

    outer()
    assert committed(sync_db) == ["outer"]


# -- mandatory / never ---------------------------------------------------------------------------


def test_mandatory_needs_an_active_unit(sync_db: uow.Database) -> None:
    @with_services(ItemService, database=sync_db, propagation="mandatory")
    def add(items: ItemService) -> Session:
        items.add("a")
        return items.session

    with pytest.raises(PropagationError, match="mandatory"):
        add()

    @with_services(ItemService, database=sync_db)
    def outer(items: ItemService) -> None:
        assert add() is items.session

    outer()
    assert committed(sync_db) == ["a"]


async def test_mandatory_needs_an_active_unit_async(async_db: uow.Database) -> None:
    @with_services(AsyncItemService, database=async_db, propagation="mandatory")
    async def add(items: AsyncItemService) -> AsyncSession:
        await items.add("a")
        return items.session

    with pytest.raises(PropagationError, match="mandatory"):
        await add()

    @with_services(AsyncItemService, database=async_db)
    async def outer(items: AsyncItemService) -> None:
        assert await add() is items.session

    await outer()
    assert await committed_async(async_db) == ["a"]


def test_never_refuses_an_active_unit(sync_db: uow.Database) -> None:
    @with_services(ItemService, database=sync_db, propagation="never")
    def add(items: ItemService) -> None:
        items.add("a")

    add()  # no unit active: it begins and commits its own
    assert committed(sync_db) == ["a"]

    @with_services(ItemService, database=sync_db)
    def outer(items: ItemService) -> None:
        items.add("outer")
        add()

    with pytest.raises(PropagationError, match="never"):
        outer()
    assert committed(sync_db) == ["a"]


async def test_never_refuses_an_active_unit_async(async_db: uow.Database) -> None:
    @with_services(AsyncItemService, database=async_db, propagation="never")
    async def add(items: AsyncItemService) -> None:
        await items.add("a")

    await add()
    assert await committed_async(async_db) == ["a"]

    @with_services(AsyncItemService, database=async_db)
    async def outer(items: AsyncItemService) -> None:
        await add()

    with pytest.raises(PropagationError, match="never"):
        await outer()


def test_unknown_propagation_is_refused_when_decorating(sync_db: uow.Database) -> None:
    with pytest.raises(ConfigurationError, match="unknown propagation 'sometimes'"):

        @with_services(ItemService, database=sync_db, propagation="sometimes")
        def add(items: ItemService) -> None:
            pass


# -- current_session -----------------------------------------------------------------------------


def test_current_session_inside_and_outside(sync_db: uow.Database) -> None:
    with pytest.raises(NoActiveUnitOfWork, match="current_session"):
        current_session()

    @with_services(ItemService, database=sync_db)
    def inside(items: ItemService) -> None:
        assert current_session() is items.session
        assert current_session(sync_db) is items.session

    inside()
    with unit_of_work(database=sync_db) as session:
        assert current_session() is session
    with pytest.raises(NoActiveUnitOfWork):
        current_session()


async def test_current_session_inside_and_outside_async(async_db: uow.Database) -> None:
    with pytest.raises(NoActiveUnitOfWork):
        current_session()

    @with_services(AsyncItemService, database=async_db)
    async def inside(items: AsyncItemService) -> None:
        assert current_session() is items.session
        assert await uow.current_session_async() is items.session

    await inside()
    async with unit_of_work(database=async_db) as session:
        assert current_session() is session
    with pytest.raises(NoActiveUnitOfWork):
        current_session()


def test_current_session_of_another_database_is_not_this_one(sync_db: uow.Database, tmp_path: Any) -> None:
    other = uow.Database(f"sqlite:///{tmp_path / 'other.sqlite3'}")
    try:
        with unit_of_work(database=sync_db) as session:
            assert current_session(sync_db) is session
            with pytest.raises(NoActiveUnitOfWork, match="other.sqlite3"):
                current_session(other)
    finally:
        other.dispose()


# -- on_commit -----------------------------------------------------------------------------------


def test_on_commit_runs_in_order_after_the_outermost_commit(sync_db: uow.Database) -> None:
    calls: list[tuple[str, list[str]]] = []

    def hook(name: str) -> Any:
        return lambda: calls.append((name, committed(sync_db)))

    @unit_of_work(database=sync_db)
    def inner() -> None:
        current_session().add(Item(name="inner"))
        on_commit(hook("inner"))

    @unit_of_work(database=sync_db, propagation="nested")
    def savepoint() -> None:
        on_commit(hook("savepoint"))

    @with_services(ItemService, database=sync_db)
    def outer(items: ItemService) -> None:
        on_commit(hook("first"))
        items.add("outer")
        inner()
        savepoint()
        on_commit(hook("last"))
        assert calls == []  # nothing runs before the outermost unit commits

    outer()
    everything = ["inner", "outer"]
    assert calls == [("first", everything), ("inner", everything), ("savepoint", everything), ("last", everything)]


async def test_on_commit_runs_in_order_after_the_outermost_commit_async(async_db: uow.Database) -> None:
    calls: list[str] = []

    async def async_hook() -> None:
        await asyncio.sleep(0)
        calls.append("async")

    @unit_of_work(database=async_db)
    async def inner() -> None:
        on_commit(async_hook)
        on_commit(lambda: calls.append("sync"))

    @with_services(AsyncItemService, database=async_db)
    async def outer(items: AsyncItemService) -> None:
        on_commit(lambda: calls.append("first"))
        await items.add("outer")
        await inner()
        assert calls == []

    await outer()
    assert calls == ["first", "async", "sync"]


def test_on_commit_is_dropped_on_rollback(sync_db: uow.Database) -> None:
    calls: list[str] = []

    @unit_of_work(database=sync_db)
    def fail() -> None:
        on_commit(lambda: calls.append("hook"))
        raise Boom

    with pytest.raises(Boom):
        fail()

    @unit_of_work(database=sync_db)
    def inner() -> None:
        on_commit(lambda: calls.append("inner"))
        raise Boom

    @unit_of_work(database=sync_db)
    def swallowing() -> None:
        on_commit(lambda: calls.append("outer"))
        with pytest.raises(Boom):
            inner()

    with pytest.raises(RollbackOnlyError):
        swallowing()
    assert calls == []


async def test_on_commit_is_dropped_on_rollback_async(async_db: uow.Database) -> None:
    calls: list[str] = []

    async def hook() -> None:
        calls.append("hook")

    @unit_of_work(database=async_db)
    async def fail() -> None:
        on_commit(hook)
        raise Boom

    with pytest.raises(Boom):
        await fail()
    assert calls == []


@pytest.mark.parametrize("savepoint_fails", [True, False])
def test_on_commit_follows_its_savepoint(sync_db: uow.Database, savepoint_fails: bool) -> None:
    calls: list[str] = []

    @unit_of_work(database=sync_db, propagation="nested")
    def savepoint() -> None:
        on_commit(lambda: calls.append("savepoint"))
        if savepoint_fails:
            raise Boom

    @unit_of_work(database=sync_db)
    def outer() -> None:
        on_commit(lambda: calls.append("before"))
        try:
            savepoint()
        except Boom:
            pass
        on_commit(lambda: calls.append("after"))

    outer()
    assert calls == (["before", "after"] if savepoint_fails else ["before", "savepoint", "after"])


async def test_on_commit_follows_its_savepoint_async(async_db: uow.Database) -> None:
    calls: list[str] = []

    @unit_of_work(database=async_db, propagation="nested")
    async def savepoint(fail: bool) -> None:
        on_commit(lambda: calls.append(f"savepoint-{'failed' if fail else 'released'}"))
        if fail:
            raise Boom

    @unit_of_work(database=async_db)
    async def outer() -> None:
        await savepoint(False)
        with pytest.raises(Boom):
            await savepoint(True)

    await outer()
    assert calls == ["savepoint-released"]


def test_on_commit_in_a_released_savepoint_is_dropped_with_an_enclosing_one(sync_db: uow.Database) -> None:
    calls: list[str] = []

    @unit_of_work(database=sync_db, propagation="nested")
    def inner() -> None:
        on_commit(lambda: calls.append("inner"))

    @unit_of_work(database=sync_db, propagation="nested")
    def middle() -> None:
        inner()  # released into `middle`...
        raise Boom  # ...which then rolls back

    @unit_of_work(database=sync_db)
    def outer() -> None:
        with pytest.raises(Boom):
            middle()
        on_commit(lambda: calls.append("outer"))

    outer()
    assert calls == ["outer"]


def test_on_commit_hook_that_raises_is_logged_and_the_rest_run(
    sync_db: uow.Database, caplog: pytest.LogCaptureFixture
) -> None:
    calls: list[str] = []

    def broken() -> None:
        raise RuntimeError("hook failed")

    @unit_of_work(database=sync_db)
    def work() -> str:
        on_commit(lambda: calls.append("one"))
        on_commit(broken)
        on_commit(lambda: calls.append("three"))
        return "result"

    with caplog.at_level(logging.ERROR, logger="uow"):
        assert work() == "result"  # the commit stands; the hook's failure is not the caller's
    assert calls == ["one", "three"]
    records = [r for r in caplog.records if r.name == "uow" and r.levelno == logging.ERROR]
    assert len(records) == 1
    assert "broken" in records[0].getMessage()
    assert records[0].exc_info is not None
    assert isinstance(records[0].exc_info[1], RuntimeError)


async def test_on_commit_async_hook_that_raises_is_logged_and_the_rest_run(
    async_db: uow.Database, caplog: pytest.LogCaptureFixture
) -> None:
    calls: list[str] = []

    async def broken() -> None:
        raise RuntimeError("hook failed")

    async def fine() -> None:
        calls.append("fine")

    @unit_of_work(database=async_db)
    async def work() -> None:
        on_commit(broken)
        on_commit(fine)

    with caplog.at_level(logging.ERROR, logger="uow"):
        await work()
    assert calls == ["fine"]
    assert [r.levelno for r in caplog.records if r.name == "uow"] == [logging.ERROR]


def test_on_commit_hook_may_start_a_new_unit(sync_db: uow.Database) -> None:
    @with_services(ItemService, database=sync_db)
    def audit(items: ItemService) -> None:
        items.add("audit")

    @with_services(ItemService, database=sync_db)
    def work(items: ItemService) -> None:
        items.add("work")
        on_commit(audit)  # runs after this unit is gone: it begins a unit of its own

    work()
    assert committed(sync_db) == ["audit", "work"]
    assert checked_out(sync_db) == 0


async def test_on_commit_hook_may_start_a_new_unit_async(async_db: uow.Database) -> None:
    @with_services(AsyncItemService, database=async_db)
    async def audit(items: AsyncItemService) -> None:
        await items.add("audit")

    @with_services(AsyncItemService, database=async_db)
    async def work(items: AsyncItemService) -> None:
        await items.add("work")
        on_commit(audit)

    await work()
    assert await committed_async(async_db) == ["audit", "work"]


def test_on_commit_outside_a_unit_raises(sync_db: uow.Database) -> None:
    with pytest.raises(NoActiveUnitOfWork, match="on_commit"):
        on_commit(lambda: None)


def test_async_hook_in_a_sync_unit_is_refused(sync_db: uow.Database) -> None:
    async def hook() -> None:
        pass

    with unit_of_work(database=sync_db), pytest.raises(ConfigurationError, match="async unit"):
        on_commit(hook)


def test_on_commit_in_requires_new_runs_when_that_unit_commits(sync_db: uow.Database) -> None:
    calls: list[str] = []

    @unit_of_work(database=sync_db, propagation="requires_new")
    def audit() -> None:
        on_commit(lambda: calls.append("audit"))

    @unit_of_work(database=sync_db)
    def outer() -> None:
        on_commit(lambda: calls.append("outer"))
        audit()
        assert calls == ["audit"]
        raise Boom

    with pytest.raises(Boom):
        outer()
    assert calls == ["audit"]


def test_on_commit_inside_an_explicit_session_follows_the_callers_commit(sync_db: uow.Database) -> None:
    calls: list[str] = []

    @unit_of_work(database=sync_db)
    def work(name: str) -> None:
        on_commit(lambda: calls.append(name))

    with Session(sync_db.engine) as session:
        work("kept", session=session)
        assert calls == []
        session.commit()
        assert calls == ["kept"]
        work("dropped", session=session)
        session.rollback()
        session.commit()
    assert calls == ["kept"]


async def test_on_commit_inside_an_explicit_session_follows_the_callers_commit_async(async_db: uow.Database) -> None:
    calls: list[str] = []

    @unit_of_work(database=async_db)
    async def work(name: str) -> None:
        on_commit(lambda: calls.append(name))

    async with AsyncSession(async_db.engine) as session:  # type: ignore[arg-type]
        await work("dropped", session=session)
        await session.rollback()
        await work("kept", session=session)
        assert calls == []
        await session.commit()
    assert calls == ["kept"]


def test_on_commit_inside_an_explicit_session_follows_its_savepoint(sync_db: uow.Database) -> None:
    calls: list[str] = []

    @unit_of_work(database=sync_db, propagation="nested")
    def savepoint(name: str, fail: bool) -> None:
        on_commit(lambda: calls.append(name))
        if fail:
            raise Boom

    @unit_of_work(database=sync_db)
    def work() -> None:
        current_session().add(Item(name="a"))
        on_commit(lambda: calls.append("work"))
        savepoint("released", False)
        with pytest.raises(Boom):
            savepoint("rolled back", True)

    with Session(sync_db.engine) as session:
        work(session=session)
        assert calls == []  # releasing a savepoint is not the caller's commit
        session.commit()
    assert committed(sync_db) == ["a"]
    assert calls == ["work", "released"]


# -- unit_of_work --------------------------------------------------------------------------------


def test_unit_of_work_as_decorator(sync_db: uow.Database) -> None:
    @unit_of_work(database=sync_db)
    def add(name: str, session: Session) -> Session:
        session.add(Item(name=name))
        return session

    @unit_of_work(database=sync_db)
    def no_session_parameter() -> None:
        current_session().add(Item(name="b"))

    session = add("a")
    no_session_parameter()
    assert committed(sync_db) == ["a", "b"]
    assert not session.in_transaction()


async def test_unit_of_work_as_decorator_async(async_db: uow.Database) -> None:
    @unit_of_work(database=async_db)
    async def add(name: str, db_session: AsyncSession) -> None:
        db_session.add(Item(name=name))
        await db_session.flush()

    await add("a")
    assert await committed_async(async_db) == ["a"]


def test_unit_of_work_as_context_manager(sync_db: uow.Database) -> None:
    with unit_of_work(database=sync_db) as session:
        assert isinstance(session, Session)
        session.add(Item(name="a"))
    assert committed(sync_db) == ["a"]
    assert checked_out(sync_db) == 0

    with pytest.raises(Boom), unit_of_work(database=sync_db) as session:
        session.add(Item(name="b"))
        session.flush()
        raise Boom
    assert committed(sync_db) == ["a"]
    assert checked_out(sync_db) == 0


async def test_unit_of_work_as_context_manager_async(async_db: uow.Database) -> None:
    async with unit_of_work(database=async_db) as session:
        assert isinstance(session, AsyncSession)
        session.add(Item(name="a"))
    assert await committed_async(async_db) == ["a"]

    with pytest.raises(Boom):
        async with unit_of_work(database=async_db) as session:
            session.add(Item(name="b"))
            await session.flush()
            raise Boom
    assert await committed_async(async_db) == ["a"]
    assert checked_out(async_db) == 0


def test_unit_of_work_context_managers_nest_and_join(sync_db: uow.Database) -> None:
    unit = unit_of_work(database=sync_db)
    with unit as outer, unit as inner:  # the same object entered twice
        assert inner is outer
        inner.add(Item(name="a"))
    assert committed(sync_db) == ["a"]


def test_unit_of_work_retry_refuses_a_with_block(sync_db: uow.Database) -> None:
    with (
        pytest.raises(ConfigurationError, match="cannot retry a 'with' block"),
        unit_of_work(database=sync_db, retry=2),
    ):
        pass


def test_unit_of_work_without_a_database(sync_db: uow.Database) -> None:
    with pytest.raises(ConfigurationError, match="configure"), unit_of_work():
        pass
    uow.configure(sync_db)
    with unit_of_work() as session:
        session.add(Item(name="a"))
    assert committed(sync_db) == ["a"]


# -- provide_services ----------------------------------------------------------------------------


def test_provide_services_with(sync_db: uow.Database) -> None:
    with provide_services(TagService, ItemService, database=sync_db) as services:
        tags, items = services
        assert type(tags) is TagService
        assert type(items) is ItemService
        assert tags.session is items.session is current_session()
        tags.tag(items.add("a"), "red")
    assert committed(sync_db) == ["a"]

    with pytest.raises(Boom), provide_services(ItemService, database=sync_db) as (items,):
        items.add("b")
        raise Boom
    assert committed(sync_db) == ["a"]
    assert checked_out(sync_db) == 0


async def test_provide_services_async_with(async_db: uow.Database) -> None:
    async with provide_services(AsyncTagService, AsyncItemService, database=async_db) as (tags, items):
        assert type(tags) is AsyncTagService
        assert type(items) is AsyncItemService
        assert tags.session is items.session is current_session()
        await tags.tag(await items.add("a"), "red")
    assert await committed_async(async_db) == ["a"]

    with pytest.raises(Boom):
        async with provide_services(AsyncItemService, database=async_db) as (items,):
            await items.add("b")
            raise Boom
    assert await committed_async(async_db) == ["a"]
    assert checked_out(async_db) == 0


def test_provide_services_joins_an_active_unit_and_an_explicit_session(sync_db: uow.Database) -> None:
    @with_services(ItemService, database=sync_db)
    def outer(items: ItemService) -> None:
        with provide_services(ItemService, database=sync_db) as (inner,):
            assert inner.session is items.session
            inner.add("a")
        assert committed(sync_db) == []

    outer()
    assert committed(sync_db) == ["a"]

    with Session(sync_db.engine) as session:
        with provide_services(ItemService, session=session) as (items,):
            assert items.session is session
            items.add("b")
        assert session.in_transaction()
        session.rollback()
    assert committed(sync_db) == ["a"]


def test_no_services_value_error_word_for_word() -> None:
    with pytest.raises(ValueError) as from_decorator:
        with_services()
    with pytest.raises(ValueError) as from_context:
        provide_services()
    assert str(from_decorator.value) == "At least one service provider is required"
    assert str(from_context.value) == "At least one service provider is required"


def test_session_and_connection_value_error_word_for_word(sync_db: uow.Database) -> None:
    @with_services(ItemService, database=sync_db)
    def add(items: ItemService) -> None:
        pass

    with Session(sync_db.engine) as session:
        with pytest.raises(ValueError) as from_call:
            add(session=session, connection=object())
        with pytest.raises(ValueError) as from_context:
            provide_services(ItemService, session=session, connection=object())
    message = "Cannot provide both 'session' and 'connection' - choose one"
    assert str(from_call.value) == message
    assert str(from_context.value) == message


async def test_session_and_connection_value_error_async(async_db: uow.Database) -> None:
    @with_services(AsyncItemService, database=async_db)
    async def add(items: AsyncItemService) -> None:
        pass

    with pytest.raises(ValueError, match="^Cannot provide both 'session' and 'connection' - choose one$"):
        await add(session=AsyncSession(), connection=object())


async def test_context_managers_refuse_the_other_kind_of_database(sync_db: uow.Database, tmp_path: Any) -> None:
    async_db = uow.Database(f"sqlite+aiosqlite:///{tmp_path / 'async.sqlite3'}")
    try:
        with pytest.raises(ConfigurationError, match="is sync but .* is async"), unit_of_work(database=async_db):
            pass
        with (
            pytest.raises(ConfigurationError, match="is sync but .* is async"),
            provide_services(ItemService, database=async_db),
        ):
            pass
        with pytest.raises(ConfigurationError, match="is async but .* is sync"):
            async with unit_of_work(database=sync_db):
                pass
        with pytest.raises(ConfigurationError, match="is async but .* is sync"):
            async with provide_services(AsyncItemService, database=sync_db):
                pass
    finally:
        await async_db.dispose_async()


class FakeRequest:
    """A connection object no integration knows."""


def test_connection_without_an_integration_is_a_configuration_error(sync_db: uow.Database) -> None:
    @with_services(ItemService, database=sync_db)
    def add(items: ItemService) -> None:
        pass

    with pytest.raises(ConfigurationError, match="connection=FakeRequest.*integration") as info:
        add(connection=FakeRequest())
    assert "add" in str(info.value)
    with pytest.raises(ConfigurationError, match="integration"):
        with provide_services(ItemService, connection=FakeRequest(), database=sync_db):
            pass
    assert checked_out(sync_db) == 0


async def test_connection_without_an_integration_is_a_configuration_error_async(async_db: uow.Database) -> None:
    @with_services(AsyncItemService, database=async_db)
    async def add(items: AsyncItemService) -> None:
        pass

    with pytest.raises(ConfigurationError, match="integration"):
        await add(connection=FakeRequest())
    with pytest.raises(ConfigurationError, match="integration"):
        async with provide_services(AsyncItemService, connection=FakeRequest(), database=async_db):
            pass

"""The direct call path (`_inject._sync_wrapper` / `_async_wrapper`) behaves exactly like the general one.

A decorated call whose services are classes built from the session alone, with no retry, no
override and no keyword uow takes for itself, skips the general path's bookkeeping. These
tests walk each situation that path handles itself or must hand back to the general path.
"""

from __future__ import annotations

import sys
from types import FrameType
from typing import Any

import pytest
from sqlalchemy.orm import Session

import uow
from tests.models import AsyncItemService, ItemService, TagService
from uow.errors import PropagationError, RollbackOnlyError


class KeywordOnlyService:
    """A service whose session is keyword-only, so it cannot be built positionally."""

    def __init__(self, *, session: Session) -> None:
        self.session = session


def _python_calls(fn: Any) -> int:
    """How many Python-level functions run during ``fn()`` (C functions are not counted)."""
    count = 0

    def profiler(frame: FrameType, event: str, arg: Any) -> None:
        nonlocal count
        if event == "call":
            count += 1

    sys.setprofile(profiler)
    try:
        fn()
    finally:
        sys.setprofile(None)
    return count - 1  # the lambda itself


def test_a_joined_call_runs_few_python_functions(sqlite_db: uow.Database) -> None:
    @uow.with_services(ItemService, database=sqlite_db)
    def handler(items: ItemService) -> ItemService:
        return items

    with uow.unit_of_work(database=sqlite_db) as session:
        handler()  # the first join of a unit sets up what later joins reuse
        calls = _python_calls(lambda: handler())
        assert handler().session is session
    # the wrapper, the join check, ItemService.__init__ and the handler: no planning, no bookkeeping
    assert calls <= 4, calls


def test_commits_on_return_and_rolls_back_on_raise(sqlite_db: uow.Database) -> None:
    @uow.with_services(ItemService, database=sqlite_db)
    def add(items: ItemService, name: str, fail: bool = False) -> None:
        items.add(name)
        if fail:
            raise RuntimeError("boom")

    add("a")
    add(name="b")
    with pytest.raises(RuntimeError):
        add("c", fail=True)
    with uow.provide_services(ItemService, database=sqlite_db) as (items,):
        assert items.names() == ["a", "b"]


def test_joined_failure_marks_the_outer_unit_rollback_only(sqlite_db: uow.Database) -> None:
    @uow.with_services(ItemService, database=sqlite_db)
    def fail(items: ItemService) -> None:
        items.add("inner")
        raise RuntimeError("boom")

    @uow.with_services(ItemService, database=sqlite_db)
    def outer(items: ItemService) -> None:
        items.add("outer")
        try:
            fail()
        except RuntimeError:
            pass

    with pytest.raises(RollbackOnlyError):
        outer()
    with uow.provide_services(ItemService, database=sqlite_db) as (items,):
        assert items.names() == []


def test_positional_arguments_after_the_service(sqlite_db: uow.Database) -> None:
    @uow.with_services(ItemService, database=sqlite_db)
    def add(items: ItemService, name: str) -> str:
        return items.add(name).name

    with uow.unit_of_work(database=sqlite_db):
        assert add("p") == "p"
        assert add(name="k") == "k"


def test_several_services_and_a_session_parameter_share_the_session(sqlite_db: uow.Database) -> None:
    @uow.with_services(ItemService, TagService, KeywordOnlyService, database=sqlite_db)
    def handler(items: ItemService, tags: TagService, other: KeywordOnlyService, session: Session) -> set[int]:
        return {id(items.session), id(tags.session), id(other.session), id(session)}

    with uow.unit_of_work(database=sqlite_db) as session:
        assert handler() == {id(session)}
    assert len(handler()) == 1


def test_a_keyword_only_session_service(sqlite_db: uow.Database) -> None:
    @uow.with_services(KeywordOnlyService, database=sqlite_db)
    def handler(service: KeywordOnlyService) -> Session:
        return service.session

    with uow.unit_of_work(database=sqlite_db) as session:
        assert handler() is session


def test_caller_keywords_take_the_general_path(sqlite_db: uow.Database) -> None:
    @uow.with_services(ItemService, database=sqlite_db)
    def handler(items: ItemService) -> ItemService:
        return items

    fake = ItemService.__new__(ItemService)
    assert handler(items=fake) is fake
    with sqlite_db.session_factory() as mine:
        assert handler(session=mine).session is mine
    with pytest.raises(ValueError, match="choose one"):
        handler(session=object(), connection=object())


def test_a_session_keyword_for_a_session_parameter_is_replaced_as_before(sqlite_db: uow.Database) -> None:
    @uow.unit_of_work(database=sqlite_db)
    def handler(db_session: Session) -> Session:
        return db_session

    with uow.unit_of_work(database=sqlite_db) as session:
        assert handler(db_session="ignored") is session  # type: ignore[arg-type]


def test_an_override_takes_the_general_path(sqlite_db: uow.Database) -> None:
    class FakeItems(ItemService):
        pass

    @uow.with_services(ItemService, database=sqlite_db)
    def handler(items: ItemService) -> ItemService:
        return items

    with uow.override(ItemService, FakeItems):
        assert type(handler()) is FakeItems
    assert type(handler()) is ItemService


def test_joining_refuses_what_the_general_path_refuses(sqlite_db: uow.Database) -> None:
    @uow.with_services(ItemService, database=sqlite_db)
    def writer(items: ItemService) -> None: ...

    @uow.with_services(ItemService, database=sqlite_db, isolation_level="SERIALIZABLE")
    def serializable(items: ItemService) -> None: ...

    with uow.unit_of_work(database=sqlite_db, read_only=True), pytest.raises(PropagationError, match="read_only"):
        writer()
    with uow.unit_of_work(database=sqlite_db), pytest.raises(PropagationError, match="isolation_level"):
        serializable()


def test_the_configured_default_database_is_joined(sqlite_db: uow.Database) -> None:
    @uow.with_services(ItemService)
    def handler(items: ItemService) -> Session:
        return items.session

    uow.configure(sqlite_db)
    with uow.unit_of_work() as session:
        assert handler() is session


def test_other_propagations_take_the_general_path(sqlite_db: uow.Database) -> None:
    @uow.with_services(ItemService, database=sqlite_db, propagation="requires_new")
    def separate(items: ItemService) -> Session:
        return items.session

    @uow.with_services(ItemService, database=sqlite_db, propagation="never")
    def never(items: ItemService) -> None: ...

    with uow.unit_of_work(database=sqlite_db) as session:
        assert separate() is not session
        with pytest.raises(PropagationError):
            never()


async def test_async_direct_path(async_sqlite_db: uow.Database) -> None:
    @uow.with_services(AsyncItemService, database=async_sqlite_db)
    async def add(items: AsyncItemService, name: str) -> AsyncItemService:
        await items.add(name)
        return items

    @uow.with_services(AsyncItemService, database=async_sqlite_db)
    async def outer(items: AsyncItemService) -> None:
        joined = await add("joined")
        assert joined.session is items.session
        try:
            await add("joined")  # unique name: fails inside the joined unit
        except Exception:
            pass

    await add("own")
    with pytest.raises(RollbackOnlyError):
        await outer()
    async with uow.provide_services(AsyncItemService, database=async_sqlite_db) as (items,):
        assert await items.names() == ["own"]

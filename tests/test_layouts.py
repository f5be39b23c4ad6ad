"""Each layout tests/typing/check_types.py types exactly also works at run time, on a real SQLite unit.

The typing layer (`uow._typing`) changes nothing at run time; these tests pin that the calls the
checkers now accept (plain calls, ``session=``, a service passed by keyword) do what they say:
the services are built and injected, the unit commits, a caller's session is joined and left
open, and a service passed by keyword is used as is.
"""

from __future__ import annotations

import inspect
import subprocess
import sys
from collections.abc import Callable

import pytest
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

import uow
from tests.helpers import committed, committed_async
from tests.models import AsyncItemService, AsyncTagService, Item, ItemService, TagService


class FakeItems(ItemService):
    """A user's own fake: records what it was asked to add instead of writing it."""

    def __init__(self) -> None:
        self.added: list[str] = []

    def add(self, name: str) -> Item:
        self.added.append(name)
        return Item(name=name)

    def count(self) -> int:
        return len(self.added)


class AsyncFakeItems(AsyncItemService):
    def __init__(self) -> None:
        self.added: list[str] = []

    async def add(self, name: str) -> Item:
        self.added.append(name)
        return Item(name=name)


class Jobs:
    label = "class"

    def __init__(self) -> None:
        self.label = "instance"

    @uow.with_services(ItemService)
    def run(self, items: ItemService, name: str) -> str:
        items.add(name)
        return self.label

    @uow.with_services(AsyncItemService, AsyncTagService)
    async def run_async(self, items: AsyncItemService, tags: AsyncTagService, *, name: str) -> str:
        item = await items.add(name)
        await tags.tag(item, "t")
        return self.label

    @classmethod
    @uow.with_services(ItemService)
    def for_class(cls, items: ItemService, name: str) -> str:
        items.add(name)
        return cls.label

    @uow.with_services(ItemService)
    @classmethod
    def for_class_outer(cls, items: ItemService, name: str) -> str:
        items.add(name)
        return cls.label

    @staticmethod
    @uow.with_services(ItemService)
    def static(items: ItemService, name: str) -> str:
        items.add(name)
        return "static"

    @uow.with_services(ItemService)
    @staticmethod
    def static_outer(name: str, items: ItemService) -> str:
        items.add(name)
        return "static"


@uow.with_services(AsyncItemService)
async def job(ctx: dict[str, object], items: AsyncItemService, *, name: str) -> dict[str, object]:
    await items.add(name)
    return ctx


@uow.with_services(ItemService, TagService)
def command(name: str, label: str, items: ItemService, tags: TagService, *, quiet: bool = False) -> str:
    tags.tag(items.add(name), label)
    return label


@uow.with_services(ItemService)
def trailing(name: str, items: ItemService) -> int:
    items.add(name)
    return items.count()


@uow.with_services(ItemService)
def keyword_only(name: str, *, items: ItemService) -> int:
    items.add(name)
    return items.count()


class WithSession:
    @uow.with_services(ItemService)
    def session_then_services(self, session: Session, items: ItemService, name: str) -> bool:
        items.add(name)
        return items.session is session

    @uow.with_services(ItemService)
    def services_then_session(self, items: ItemService, session: Session, name: str) -> bool:
        items.add(name)
        return items.session is session


@uow.with_services(ItemService)
def session_first(session: Session, items: ItemService, name: str) -> bool:
    items.add(name)
    return items.session is session


@pytest.mark.parametrize(
    ("call", "expected"),
    [
        (lambda: Jobs().run("a"), "instance"),
        (lambda: Jobs().run(name="a"), "instance"),
        (lambda: Jobs.run(Jobs(), "a"), "instance"),
        (lambda: Jobs.for_class("a"), "class"),
        (lambda: Jobs().for_class("a"), "class"),
        (lambda: Jobs.for_class_outer("a"), "class"),
        (lambda: Jobs.static("a"), "static"),
        (lambda: Jobs().static("a"), "static"),
        (lambda: Jobs.static_outer("a"), "static"),
        (lambda: command("a", "red"), "red"),
        (lambda: command("a", "red", quiet=True), "red"),
        (lambda: trailing("a"), 1),
        (lambda: keyword_only("a"), 1),
        (lambda: session_first("a"), True),
        (lambda: WithSession().session_then_services("a"), True),
        (lambda: WithSession().services_then_session(name="a"), True),
    ],
    ids=[
        "method",
        "method-by-keyword",
        "method-unbound",
        "classmethod",
        "classmethod-on-instance",
        "classmethod-under-with_services",
        "staticmethod",
        "staticmethod-on-instance",
        "staticmethod-under-with_services",
        "options-first",
        "options-first-keyword",
        "after-positional",
        "keyword-only-fallback",
        "session-first",
        "method-session-then-services",
        "method-services-then-session",
    ],
)
def test_sync_layouts_commit(sqlite_db: uow.Database, call: Callable[[], object], expected: object) -> None:
    uow.configure(sqlite_db)
    assert call() == expected
    assert committed(sqlite_db) == ["a"]


def test_visible_signatures_drop_only_the_services() -> None:
    assert str(inspect.signature(Jobs().run)) == "(name: str) -> str"
    assert str(inspect.signature(Jobs.for_class)) == "(name: str) -> str"
    assert str(inspect.signature(Jobs.static_outer)) == "(name: str) -> str"
    assert str(inspect.signature(job)) == "(ctx: dict[str, object], *, name: str) -> dict[str, object]"
    assert str(inspect.signature(command)) == "(name: str, label: str, *, quiet: bool = False) -> str"


async def test_async_method_and_job_commit(async_sqlite_db: uow.Database) -> None:
    uow.configure(async_sqlite_db)
    assert await Jobs().run_async(name="a") == "instance"
    ctx: dict[str, object] = {"worker": "w"}
    assert await job(ctx, name="b") is ctx
    assert await committed_async(async_sqlite_db) == ["a", "b"]


def _session(database: uow.Database) -> Session:
    session = database.session_factory_for(read_only=False)()
    assert isinstance(session, Session)
    return session


def test_session_keyword_joins_the_callers_session(sqlite_db: uow.Database) -> None:
    uow.configure(sqlite_db)
    with _session(sqlite_db) as session:
        assert Jobs().run("a", session=session) == "instance"
        assert Jobs.for_class("b", session=session) == "class"
        assert command("c", "red", session=session) == "red"
        assert trailing("d", session=session) == 4
        # The caller owns the session: nothing is committed until it commits.
        assert committed(sqlite_db) == []
        session.commit()
    assert committed(sqlite_db) == ["a", "b", "c", "d"]


async def test_session_keyword_on_async_job(async_sqlite_db: uow.Database) -> None:
    uow.configure(async_sqlite_db)
    factory = async_sqlite_db.session_factory_for(read_only=False)
    async with factory() as session:
        assert isinstance(session, AsyncSession)
        await job({}, name="a", session=session)
        assert await committed_async(async_sqlite_db) == []
        await session.commit()
    assert await committed_async(async_sqlite_db) == ["a"]


def test_service_passed_by_keyword_is_used_as_is(sqlite_db: uow.Database) -> None:
    uow.configure(sqlite_db)
    fake = FakeItems()
    assert Jobs().run(name="a", items=fake) == "instance"
    assert Jobs.for_class(name="b", items=fake) == "class"
    assert Jobs.static_outer("c", items=fake) == "static"
    assert trailing("d", items=fake) == 4
    assert fake.added == ["a", "b", "c", "d"]
    assert committed(sqlite_db) == []


async def test_service_passed_by_keyword_to_a_job(async_sqlite_db: uow.Database) -> None:
    uow.configure(async_sqlite_db)
    fake = AsyncFakeItems()
    await job({}, items=fake, name="a")
    assert fake.added == ["a"]
    assert await committed_async(async_sqlite_db) == []


class Units:
    @uow.unit_of_work()
    def add(self, session: Session, name: str) -> bool:
        session.add(Item(name=name))
        return uow.current_session() is session

    @uow.unit_of_work()
    async def add_async(self, session: AsyncSession, *, name: str) -> bool:
        session.add(Item(name=name))
        return uow.current_session() is session


def test_unit_of_work_method_gets_the_units_session(sqlite_db: uow.Database) -> None:
    uow.configure(sqlite_db)
    assert Units().add("a") is True
    assert committed(sqlite_db) == ["a"]


async def test_unit_of_work_async_method_gets_the_units_session(async_sqlite_db: uow.Database) -> None:
    uow.configure(async_sqlite_db)
    assert await Units().add_async(name="a") is True
    assert await committed_async(async_sqlite_db) == ["a"]


def test_the_typing_layer_is_not_imported_at_run_time() -> None:
    # uow._typing and the mypy plugin are for type checkers; `import uow` must not pay for them.
    code = "import sys, uow; print(sorted(m for m in sys.modules if m in ('uow._typing', 'uow.mypy', 'mypy')))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert result.stdout.strip() == "[]"

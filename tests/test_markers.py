"""Parameters marked ``= injected()`` at run time, on real SQLite units (tests/typing/check_marked.py types them).

The marker only says which parameter uow fills: the unit, the services, ``session=``, a service
passed by keyword and the signature frameworks see behave exactly as for a listed service.
"""

from __future__ import annotations

import inspect
import sys
from collections.abc import Callable, Iterator

import click
import pytest
from click.testing import CliRunner
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

import uow
from tests.helpers import checked_out, committed, committed_async
from tests.models import AsyncItemService, AsyncTagService, Item, ItemService, TagService
from uow import injected


class FakeItems(ItemService):
    def __init__(self) -> None:
        self.added: list[str] = []

    def add(self, name: str) -> Item:
        self.added.append(name)
        return Item(name=name)

    def count(self) -> int:
        return len(self.added)


class Tags(TagService):
    """Built by a provider, not by the class: proves the provider ran."""

    from_provider = False


def provide_tags(session: Session) -> Iterator[Tags]:
    tags = Tags(session)
    tags.from_provider = True
    yield tags


@uow.unit_of_work()
async def job(ctx: dict[str, object], *, name: str, items: AsyncItemService = injected()) -> dict[str, object]:
    await items.add(name)
    return ctx


@uow.unit_of_work()
def command(a: int, b: int, c: int, d: int, items: ItemService = injected(), *, name: str = "a") -> int:
    items.add(name)
    return a + b + c + d


@uow.unit_of_work()
def between(name: str, tags: Tags = injected(provide_tags), *, label: str, items: ItemService = injected()) -> bool:
    tags.tag(items.add(name), label)
    return tags.from_provider


@uow.unit_of_work()
def with_session(session: Session = injected(), *, name: str, items: ItemService = injected()) -> bool:
    items.add(name)
    return items.session is session and uow.current_session() is session


@uow.with_services(ItemService)
def listed_and_marked(name: str, *, items: ItemService = injected(), tags: TagService = injected()) -> str:
    tags.tag(items.add(name), "t")
    return name


class Jobs:
    label = "class"

    def __init__(self) -> None:
        self.label = "instance"

    @uow.unit_of_work()
    def run(self, name: str, *, items: ItemService = injected()) -> str:
        items.add(name)
        return self.label

    @classmethod
    @uow.unit_of_work()
    def for_class(cls, name: str, items: ItemService = injected()) -> str:
        items.add(name)
        return cls.label

    @staticmethod
    @uow.unit_of_work()
    def static(name: str, *, items: ItemService = injected()) -> str:
        items.add(name)
        return "static"

    @uow.unit_of_work()
    @classmethod
    def for_class_outer(cls, name: str, *, items: ItemService = injected()) -> str:
        items.add(name)
        return cls.label

    @uow.unit_of_work()
    @staticmethod
    def static_outer(name: str, items: ItemService = injected()) -> str:
        items.add(name)
        return "static"

    @uow.unit_of_work()
    async def run_async(
        self, *, name: str, items: AsyncItemService = injected(), tags: AsyncTagService = injected()
    ) -> str:
        await tags.tag(await items.add(name), "t")
        return self.label


@pytest.mark.parametrize(
    ("call", "expected"),
    [
        (lambda: command(1, 2, 3, 4), 10),
        (lambda: command(a=1, b=2, c=3, d=4), 10),
        (lambda: between("a", label="red"), True),
        (lambda: with_session(name="a"), True),
        (lambda: listed_and_marked("a"), "a"),
        (lambda: Jobs().run("a"), "instance"),
        (lambda: Jobs.run(Jobs(), name="a"), "instance"),
        (lambda: Jobs.for_class("a"), "class"),
        (lambda: Jobs().for_class("a"), "class"),
        (lambda: Jobs.static("a"), "static"),
        (lambda: Jobs.for_class_outer("a"), "class"),
        (lambda: Jobs().static_outer("a"), "static"),
    ],
    ids=[
        "after-four-positional",
        "after-four-positional-by-keyword",
        "provider-between-and-keyword-only",
        "marked-session",
        "listed-and-marked",
        "method",
        "method-unbound",
        "classmethod",
        "classmethod-on-instance",
        "staticmethod",
        "classmethod-under-unit_of_work",
        "staticmethod-under-unit_of_work",
    ],
)
def test_marked_layouts_commit(sqlite_db: uow.Database, call: Callable[[], object], expected: object) -> None:
    uow.configure(sqlite_db)
    assert call() == expected
    assert committed(sqlite_db) == ["a"]
    assert checked_out(sqlite_db) == 0


async def test_marked_async_job_and_method_commit(async_sqlite_db: uow.Database) -> None:
    uow.configure(async_sqlite_db)
    ctx: dict[str, object] = {"worker": "w"}
    assert await job(ctx, name="a") is ctx
    assert await Jobs().run_async(name="b") == "instance"
    assert await committed_async(async_sqlite_db) == ["a", "b"]


def test_a_failing_marked_unit_rolls_back(sqlite_db: uow.Database) -> None:
    uow.configure(sqlite_db)

    @uow.unit_of_work()
    def fails(name: str, *, items: ItemService = injected()) -> None:
        items.add(name)
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        fails("a")
    assert committed(sqlite_db) == []
    assert checked_out(sqlite_db) == 0


def test_session_keyword_joins_the_callers_session(sqlite_db: uow.Database) -> None:
    uow.configure(sqlite_db)
    session = sqlite_db.session_factory_for(read_only=False)()
    assert isinstance(session, Session)
    with session:
        assert command(1, 2, 3, 4, name="a", session=session) == 10
        assert Jobs().run("b", session=session) == "instance"
        assert with_session(name="c", session=session) is True
        assert committed(sqlite_db) == []
        session.commit()
    assert committed(sqlite_db) == ["a", "b", "c"]


async def test_session_keyword_on_a_marked_job(async_sqlite_db: uow.Database) -> None:
    uow.configure(async_sqlite_db)
    async with async_sqlite_db.session_factory_for(read_only=False)() as session:
        assert isinstance(session, AsyncSession)
        await job({}, name="a", session=session)
        assert await committed_async(async_sqlite_db) == []
        await session.commit()
    assert await committed_async(async_sqlite_db) == ["a"]


def test_a_service_passed_by_keyword_is_used_as_is(sqlite_db: uow.Database) -> None:
    uow.configure(sqlite_db)
    fake = FakeItems()
    assert command(1, 2, 3, 4, items=fake, name="a") == 10
    assert Jobs().run("b", items=fake) == "instance"
    assert Jobs.for_class(name="c", items=fake) == "class"
    assert fake.added == ["a", "b", "c"]
    assert committed(sqlite_db) == []


def test_frameworks_see_the_signature_without_the_marked_parameters() -> None:
    assert str(inspect.signature(job)) == "(ctx: dict[str, object], *, name: str) -> dict[str, object]"
    assert str(inspect.signature(command)) == "(a: int, b: int, c: int, d: int, *, name: str = 'a') -> int"
    assert str(inspect.signature(between)) == "(name: str, *, label: str) -> bool"
    assert str(inspect.signature(with_session)) == "(*, name: str) -> bool"
    assert str(inspect.signature(Jobs().run)) == "(name: str) -> str"
    assert "items" not in job.__annotations__
    # The original function is untouched.
    assert "items" in inspect.signature(job.__wrapped__).parameters  # type: ignore[attr-defined]


def test_a_click_command_with_a_marked_service(sqlite_db: uow.Database) -> None:
    uow.configure(sqlite_db)

    @click.command()
    @click.option("--name", required=True)
    @uow.unit_of_work()
    def add(name: str, *, items: ItemService = injected()) -> None:
        items.add(name)
        click.echo(f"added {items.count()}")

    result = CliRunner().invoke(add, ["--name", "a"])
    assert result.exit_code == 0, result.output
    assert result.output == "added 1\n"
    assert committed(sqlite_db) == ["a"]


def test_code_without_markers_is_unchanged(sqlite_db: uow.Database) -> None:
    # An ordinary default is the function's own: uow neither fills nor hides it.
    uow.configure(sqlite_db)

    @uow.with_services(ItemService)
    def plain(items: ItemService, name: str = "a", note: object = None) -> object:
        items.add(name)
        return note

    # Python 3.10's get_type_hints still reads a None default as Optional (PEP 484's implicit Optional).
    note = "Optional[object]" if sys.version_info < (3, 11) else "object"
    assert str(inspect.signature(plain)) == f"(name: str = 'a', note: {note} = None) -> object"
    assert plain() is None
    assert committed(sqlite_db) == ["a"]


def test_marker_repr() -> None:
    assert repr(injected()) == "injected()"
    assert repr(injected(provide_tags)) == "injected(tests.test_markers.provide_tags)"


def test_a_marked_parameter_without_a_service_class_is_refused_when_decorating() -> None:
    with pytest.raises(
        uow.InjectionError,
        match=r"parameter 'items' is marked injected\(\), but its annotation <class 'int'> is not a service",
    ):

        @uow.unit_of_work()
        def untyped(name: str, *, items: int = injected()) -> None:
            pass

    with pytest.raises(uow.InjectionError, match=r"its annotation 'Missing' is not a service class"):

        @uow.unit_of_work()
        def forward(name: str, *, items: Missing = injected()) -> None:  # type: ignore[name-defined]  # noqa: F821
            pass

    with pytest.raises(uow.InjectionError, match=r"parameter 'items' is marked injected\(\), but it has no annotation"):

        @uow.unit_of_work()
        def unannotated(name: str, *, items=injected()) -> None:  # type: ignore[no-untyped-def]  # noqa: ANN001
            pass


def test_a_marker_naming_another_provider_than_the_listed_service_is_refused() -> None:
    def provide_items(session: Session) -> ItemService:
        return ItemService(session)

    with pytest.raises(uow.InjectionError, match=r"parameter 'items' is marked injected\(.*provide_items\)"):

        @uow.with_services(ItemService)
        def twice(*, items: ItemService = injected(provide_items)) -> None:
            pass


def test_a_positional_only_marked_parameter_is_refused() -> None:
    with pytest.raises(uow.InjectionError, match="positional-only"):

        @uow.unit_of_work()
        def positional(items: ItemService = injected(), /) -> None:
            pass


def test_a_service_passed_positionally_to_a_marked_tail_is_used_as_is(sqlite_db: uow.Database) -> None:
    # The checkers see the function's own signature, so they accept this call: it works at run time too.
    uow.configure(sqlite_db)
    fake = FakeItems()
    assert command(1, 2, 3, 4, fake, name="a") == 10
    assert Jobs().for_class("b", fake) == "class"
    assert Jobs.for_class("c", fake) == "class"
    assert fake.added == ["a", "b", "c"]
    assert committed(sqlite_db) == []


def test_a_session_passed_positionally_to_a_marked_tail_joins_it(sqlite_db: uow.Database) -> None:
    uow.configure(sqlite_db)

    @uow.unit_of_work()
    def add(name: str, session: Session = injected()) -> bool:
        session.add(Item(name=name))
        return uow.current_session() is session

    with sqlite_db.session_factory_for(read_only=False)() as session:
        assert isinstance(session, Session)
        assert add("a", session) is True
        assert committed(sqlite_db) == []
        session.commit()
    assert committed(sqlite_db) == ["a"]
    assert add("b") is True
    assert committed(sqlite_db) == ["a", "b"]


async def test_a_service_passed_positionally_to_an_async_marked_tail(async_sqlite_db: uow.Database) -> None:
    uow.configure(async_sqlite_db)

    class AsyncFake(AsyncItemService):
        def __init__(self) -> None:
            self.added: list[str] = []

        async def add(self, name: str) -> Item:
            self.added.append(name)
            return Item(name=name)

    @uow.unit_of_work()
    async def add(name: str, items: AsyncItemService = injected()) -> str:
        await items.add(name)
        return name

    assert inspect.iscoroutinefunction(add)
    fake = AsyncFake()
    assert await add("a", fake) == "a"
    assert fake.added == ["a"]
    assert await add("b") == "b"
    assert await committed_async(async_sqlite_db) == ["b"]


def test_too_many_positional_arguments_or_a_service_twice_are_refused(sqlite_db: uow.Database) -> None:
    uow.configure(sqlite_db)
    with pytest.raises(uow.InjectionError, match=r"command\(\) takes at most 5 positional arguments \(6 given\)"):
        command(1, 2, 3, 4, FakeItems(), "x")
    with pytest.raises(uow.InjectionError, match="got multiple values for argument 'items'"):
        command(1, 2, 3, 4, FakeItems(), items=FakeItems())
    assert committed(sqlite_db) == []

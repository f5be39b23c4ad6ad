"""Every form a service can be given in: class, function, coroutine function, generator, async generator.

Also services built from other services of the same unit, and `override()`. Provider mechanics do
not depend on the database, so these run on SQLite files (sync pysqlite, async aiosqlite).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

import uow
from tests.helpers import committed, committed_async
from tests.models import AsyncItemService, Item, ItemService
from uow import InjectionError, override, provide_services, with_services


class Boom(Exception):
    pass


class Clock:
    """A service that needs no session at all."""

    def now(self) -> str:
        return "noon"


# -- plain forms ---------------------------------------------------------------------------------


def test_class_is_built_with_the_session(sqlite_db: uow.Database) -> None:
    @with_services(ItemService, database=sqlite_db)
    def f(items: ItemService, session: Session) -> None:
        assert items.session is session

    f()


def test_plain_function_provider(sqlite_db: uow.Database) -> None:
    calls: list[Session] = []

    def provide_items(session: Session) -> ItemService:
        calls.append(session)
        return ItemService(session)

    @with_services(provide_items, database=sqlite_db)
    def f(items: ItemService, session: Session) -> None:
        assert calls == [session]
        items.add("a")

    f()
    assert committed(sqlite_db) == ["a"]


def test_provider_without_a_session_parameter(sqlite_db: uow.Database) -> None:
    def provide_clock() -> Clock:
        return Clock()

    @with_services(provide_clock, database=sqlite_db)
    def f(clock: Clock) -> str:
        return clock.now()

    assert f() == "noon"


async def test_coroutine_function_provider(async_sqlite_db: uow.Database) -> None:
    async def provide_items(session: AsyncSession) -> AsyncItemService:
        await asyncio.sleep(0)
        return AsyncItemService(session)

    @with_services(provide_items, database=async_sqlite_db)
    async def f(items: AsyncItemService, session: AsyncSession) -> None:
        assert items.session is session
        await items.add("a")

    await f()
    assert await committed_async(async_sqlite_db) == ["a"]


async def test_sync_providers_in_an_async_unit(async_sqlite_db: uow.Database) -> None:
    events: list[str] = []

    def provide_items(session: AsyncSession) -> AsyncItemService:
        return AsyncItemService(session)

    def provide_clock() -> Iterator[Clock]:
        yield Clock()
        events.append("clock closed")

    @with_services(provide_items, provide_clock, database=async_sqlite_db)
    async def f(items: AsyncItemService, clock: Clock) -> str:
        await items.add("a")
        return clock.now()

    assert await f() == "noon"
    assert events == ["clock closed"]


# -- generators: closed when the unit ends --------------------------------------------------------


def _recording_provider(events: list[str]) -> Any:
    def provide_items(session: Session) -> Iterator[ItemService]:
        events.append("open")
        try:
            yield ItemService(session)
        except Exception as error:
            events.append(f"thrown {type(error).__name__}")
            raise
        # Teardown runs inside the unit, before its commit: the session still works here.
        session.add(Item(name="from teardown"))
        events.append("closed")

    return provide_items


def test_generator_closed_on_success(sqlite_db: uow.Database) -> None:
    events: list[str] = []

    @with_services(_recording_provider(events), database=sqlite_db)
    def f(items: ItemService) -> None:
        events.append("call")
        items.add("a")

    f()
    assert events == ["open", "call", "closed"]
    assert committed(sqlite_db) == ["a", "from teardown"]


def test_generator_gets_the_failure_thrown_in(sqlite_db: uow.Database) -> None:
    events: list[str] = []

    @with_services(_recording_provider(events), database=sqlite_db)
    def f(items: ItemService) -> None:
        items.add("a")
        raise Boom

    with pytest.raises(Boom):
        f()
    assert events == ["open", "thrown Boom"]
    assert committed(sqlite_db) == []


def test_base_exception_is_thrown_into_the_generator(sqlite_db: uow.Database) -> None:
    events: list[str] = []

    def provide_items(session: Session) -> Iterator[ItemService]:
        try:
            yield ItemService(session)
        except BaseException as error:
            events.append(type(error).__name__)
            raise

    @with_services(provide_items, database=sqlite_db)
    def f(items: ItemService) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        f()
    assert events == ["KeyboardInterrupt"]


def test_generator_cannot_swallow_the_units_failure(sqlite_db: uow.Database) -> None:
    def provide_items(session: Session) -> Iterator[ItemService]:
        try:
            yield ItemService(session)
        except Boom:
            pass  # a provider's cleanup must not turn a failed unit into a committed one

    @with_services(provide_items, database=sqlite_db)
    def f(items: ItemService) -> None:
        items.add("a")
        raise Boom

    with pytest.raises(Boom):
        f()
    assert committed(sqlite_db) == []


def test_generator_teardown_failure_rolls_back(sqlite_db: uow.Database) -> None:
    def provide_items(session: Session) -> Iterator[ItemService]:
        yield ItemService(session)
        raise RuntimeError("teardown failed")

    @with_services(provide_items, database=sqlite_db)
    def f(items: ItemService) -> None:
        items.add("a")

    with pytest.raises(RuntimeError, match="teardown failed"):
        f()
    assert committed(sqlite_db) == []


def test_generators_close_last_opened_first(sqlite_db: uow.Database) -> None:
    events: list[str] = []

    def provide_items(session: Session) -> Iterator[ItemService]:
        yield ItemService(session)
        events.append("items")

    def provide_clock() -> Iterator[Clock]:
        yield Clock()
        events.append("clock")

    @with_services(provide_items, provide_clock, database=sqlite_db)
    def f(items: ItemService, clock: Clock) -> None:
        pass

    f()
    assert events == ["clock", "items"]


def test_generator_yielding_twice_is_an_error(sqlite_db: uow.Database) -> None:
    def provide_items(session: Session) -> Iterator[ItemService]:
        yield ItemService(session)
        yield ItemService(session)

    @with_services(provide_items, database=sqlite_db)
    def f(items: ItemService) -> None:
        items.add("a")

    with pytest.raises(RuntimeError, match="yielded more than once"):
        f()
    assert committed(sqlite_db) == []


def _recording_async_provider(events: list[str]) -> Any:
    async def provide_items(session: AsyncSession) -> AsyncIterator[AsyncItemService]:
        events.append("open")
        try:
            yield AsyncItemService(session)
        except BaseException as error:
            events.append(f"thrown {type(error).__name__}")
            raise
        await AsyncItemService(session).add("from teardown")
        events.append("closed")

    return provide_items


async def test_async_generator_closed_on_success(async_sqlite_db: uow.Database) -> None:
    events: list[str] = []

    @with_services(_recording_async_provider(events), database=async_sqlite_db)
    async def f(items: AsyncItemService) -> None:
        events.append("call")
        await items.add("a")

    await f()
    assert events == ["open", "call", "closed"]
    assert await committed_async(async_sqlite_db) == ["a", "from teardown"]


@pytest.mark.parametrize("error", [Boom, asyncio.CancelledError])
async def test_async_generator_gets_the_failure_thrown_in(
    async_sqlite_db: uow.Database, error: type[BaseException]
) -> None:
    events: list[str] = []

    @with_services(_recording_async_provider(events), database=async_sqlite_db)
    async def f(items: AsyncItemService) -> None:
        await items.add("a")
        raise error

    with pytest.raises(error):
        await f()
    assert events == ["open", f"thrown {error.__name__}"]
    assert await committed_async(async_sqlite_db) == []


async def test_async_generator_teardown_failure_rolls_back(async_sqlite_db: uow.Database) -> None:
    async def provide_items(session: AsyncSession) -> AsyncIterator[AsyncItemService]:
        yield AsyncItemService(session)
        raise RuntimeError("teardown failed")

    @with_services(provide_items, database=async_sqlite_db)
    async def f(items: AsyncItemService) -> None:
        await items.add("a")

    with pytest.raises(RuntimeError, match="teardown failed"):
        await f()
    assert await committed_async(async_sqlite_db) == []


def test_generator_in_provide_services(sqlite_db: uow.Database) -> None:
    events: list[str] = []
    with provide_services(_recording_provider(events), database=sqlite_db) as (items,):
        items.add("a")
        assert events == ["open"]
    assert events == ["open", "closed"]
    assert committed(sqlite_db) == ["a", "from teardown"]

    events.clear()
    with pytest.raises(Boom), provide_services(_recording_provider(events), database=sqlite_db) as (items,):
        items.add("b")
        raise Boom
    assert events == ["open", "thrown Boom"]
    assert committed(sqlite_db) == ["a", "from teardown"]


async def test_async_generator_in_provide_services(async_sqlite_db: uow.Database) -> None:
    events: list[str] = []
    async with provide_services(_recording_async_provider(events), database=async_sqlite_db) as (items,):
        await items.add("a")
    assert events == ["open", "closed"]

    events.clear()
    with pytest.raises(Boom):
        async with provide_services(_recording_async_provider(events), database=async_sqlite_db) as (items,):
            raise Boom
    assert events == ["open", "thrown Boom"]
    assert await committed_async(async_sqlite_db) == ["a", "from teardown"]


def test_async_provider_in_a_sync_with_block(sqlite_db: uow.Database) -> None:
    with (
        pytest.raises(InjectionError, match="async with provide_services"),
        provide_services(_recording_async_provider([]), database=sqlite_db),
    ):
        pass


# -- services built from services ----------------------------------------------------------------


class Composite:
    """Asks for another service type and a session: both come from the unit."""

    def __init__(self, items: ItemService, db: Session, label: str = "default") -> None:
        self.items = items
        self.db = db
        self.label = label


class Outermost:
    def __init__(self, composite: Composite, items: ItemService) -> None:
        self.composite = composite
        self.items = items


def test_constructor_dependencies_come_from_the_same_unit(sqlite_db: uow.Database) -> None:
    @with_services(ItemService, Composite, Outermost, database=sqlite_db)
    def f(items: ItemService, composite: Composite, outermost: Outermost, session: Session) -> None:
        assert composite.items is items  # one shared instance per unit
        assert outermost.items is items
        assert outermost.composite is composite
        assert composite.db is session
        assert composite.label == "default"

    f()


def test_constructor_dependency_not_listed_is_built_once(sqlite_db: uow.Database) -> None:
    @with_services(Outermost, database=sqlite_db)
    def f(outermost: Outermost) -> None:
        assert outermost.composite.items is outermost.items
        assert outermost.items.session is outermost.composite.db

    f()


async def test_constructor_dependencies_in_an_async_unit(async_sqlite_db: uow.Database) -> None:
    class AsyncComposite:
        def __init__(self, items: AsyncItemService, session: AsyncSession) -> None:
            self.items = items
            self.session = session

    @with_services(AsyncItemService, AsyncComposite, database=async_sqlite_db)
    async def f(items: AsyncItemService, composite: AsyncComposite) -> None:
        assert composite.items is items
        assert composite.session is items.session

    await f()


def test_constructor_parameter_that_cannot_be_built() -> None:
    class NeedsNumber:
        def __init__(self, session: Session, limit: int) -> None:
            pass

    with pytest.raises(InjectionError, match="cannot build .*NeedsNumber.*'limit'"):

        @with_services(NeedsNumber)
        def f(needs_number: NeedsNumber) -> None:
            pass


def test_constructor_with_a_positional_only_parameter() -> None:
    class PositionalOnly:
        def __init__(self, session: Session, /) -> None:
            pass

    with pytest.raises(InjectionError, match="takes 'session' positional-only.*provider function"):

        @with_services(PositionalOnly)
        def f(positional_only: PositionalOnly) -> None:
            pass


def test_constructor_parameters_with_defaults_keep_them(sqlite_db: uow.Database) -> None:
    class WithDefaults:
        def __init__(self, session: Session, limit: int = 10, clock: Clock | None = None) -> None:
            self.session = session
            self.limit = limit
            self.clock = clock

    @with_services(WithDefaults, database=sqlite_db)
    def f(with_defaults: WithDefaults, session: Session) -> None:
        assert with_defaults.session is session
        assert with_defaults.limit == 10
        assert with_defaults.clock is None

    f()


class CycleA:
    def __init__(self, b: CycleB) -> None:
        pass


class CycleB:
    def __init__(self, a: CycleA) -> None:
        pass


def test_constructor_cycle() -> None:
    with pytest.raises(InjectionError, match="cycle: CycleA -> CycleB -> CycleA"):

        @with_services(CycleA)
        def f(cycle_a: CycleA) -> None:
            pass


# -- override ------------------------------------------------------------------------------------


class FakeItemService(ItemService):
    def names(self) -> list[str]:
        return ["fake"]


def test_override_with_a_class(sqlite_db: uow.Database) -> None:
    @with_services(ItemService, Composite, database=sqlite_db)
    def f(items: ItemService, composite: Composite, session: Session) -> list[str]:
        assert items.session is session
        assert composite.items is items  # the override is what dependants get, too
        return items.names()

    with override(ItemService, FakeItemService):
        assert f() == ["fake"]
    assert f() == []


def test_override_with_an_instance(sqlite_db: uow.Database) -> None:
    fake = object()

    @with_services(ItemService, database=sqlite_db)
    def f(items: ItemService) -> object:
        return items

    with override(ItemService, fake):
        assert f() is fake
        with provide_services(ItemService, database=sqlite_db) as (items,):
            assert items is fake
    assert f() is not fake


def test_override_a_provider(sqlite_db: uow.Database) -> None:
    def provide_clock() -> Iterator[Clock]:
        raise AssertionError("the overridden provider must not run")
        yield Clock()

    class FrozenClock(Clock):
        def now(self) -> str:
            return "midnight"

    @with_services(provide_clock, database=sqlite_db)
    def f(clock: Clock) -> str:
        return clock.now()

    with override(Clock, FrozenClock()):
        assert f() == "midnight"


async def test_override_is_per_task(async_sqlite_db: uow.Database) -> None:
    @with_services(AsyncItemService, database=async_sqlite_db)
    async def f(items: AsyncItemService) -> str:
        await asyncio.sleep(0)
        return type(items).__name__

    class FakeAsyncItemService(AsyncItemService):
        pass

    async def overridden() -> str:
        with override(AsyncItemService, FakeAsyncItemService):
            return await f()

    assert sorted(await asyncio.gather(overridden(), f())) == ["AsyncItemService", "FakeAsyncItemService"]


# -- a provider that fails while the unit is being set up --------------------------------------------


def _failing_after(events: list[str]) -> tuple[Any, Any]:
    def provide_items(session: Session) -> Iterator[ItemService]:
        try:
            yield ItemService(session)
        except Boom:
            events.append("items saw Boom")
            raise

    def provide_clock() -> Clock:
        raise Boom

    return provide_items, provide_clock


def test_failing_provider_closes_the_ones_built_before_it(sqlite_db: uow.Database) -> None:
    events: list[str] = []
    provide_items, provide_clock = _failing_after(events)

    @with_services(provide_items, provide_clock, database=sqlite_db)
    def f(items: ItemService, clock: Clock) -> None:
        events.append("function ran")

    with pytest.raises(Boom):
        f()
    assert events == ["items saw Boom"]

    events.clear()
    with pytest.raises(Boom), provide_services(provide_items, provide_clock, database=sqlite_db):
        events.append("block ran")
    assert events == ["items saw Boom"]


async def test_failing_async_provider_closes_the_ones_built_before_it(async_sqlite_db: uow.Database) -> None:
    events: list[str] = []

    async def provide_items(session: AsyncSession) -> AsyncIterator[AsyncItemService]:
        items = AsyncItemService(session)
        await items.add("a")
        try:
            yield items
        except Boom:
            events.append("items saw Boom")
            raise

    async def provide_clock() -> Clock:
        raise Boom

    @with_services(provide_items, provide_clock, database=async_sqlite_db)
    async def f(items: AsyncItemService, clock: Clock) -> None:
        events.append("function ran")

    with pytest.raises(Boom):
        await f()
    with pytest.raises(Boom):
        async with provide_services(provide_items, provide_clock, database=async_sqlite_db):
            events.append("block ran")
    assert events == ["items saw Boom", "items saw Boom"]
    assert await committed_async(async_sqlite_db) == []

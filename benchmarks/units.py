"""Cases 1 and 2: one unit of work (insert a row, commit) on a real database, by hand and through each tool.

Every variant of a case inserts one row and commits it in a session of its own taken
from the same session factory, so they do the same database work and differ only in
how the unit is opened, the service built, and the session committed and closed. The
hand-written variant runs twice under two names: how far apart the two land is the
noise floor of the run, to read the other ratios against.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager

from advanced_alchemy.config import AsyncSessionConfig, SQLAlchemyAsyncConfig, SQLAlchemySyncConfig, SyncSessionConfig
from sqlalchemy import Engine, create_engine
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine

from benchmarks.common import (
    AsyncItems,
    AsyncItemService,
    Base,
    Item,
    Items,
    ItemService,
    aiosqlite_engine,
    async_factory,
    asyncpg_engine,
    clear_async,
    clear_sync,
    postgres_database,
    sqlite_engine,
    sync_factory,
)
from benchmarks.harness import Case, Setup, Variant
from uow import Database, provide_services, with_services


def _sync_variants(engine: Engine) -> Setup:
    factory = sync_factory(engine)
    db = Database(session_factory=factory)
    aa_config = SQLAlchemySyncConfig(engine_instance=engine, session_config=SyncSessionConfig(expire_on_commit=False))

    def hand() -> None:
        with factory() as session:
            items = Items(session)
            items.add("x")
            session.commit()

    @with_services(Items, database=db)
    def decorated(items: Items) -> None:
        items.add("x")

    def provided() -> None:
        with provide_services(Items, database=db) as (items,):
            items.add("x")

    def hand_aa() -> None:
        with factory() as session:
            service = ItemService(session=session)
            service.create(Item(name="x"), auto_refresh=False)
            session.commit()

    @with_services(ItemService, database=db)
    def decorated_aa(service: ItemService) -> None:
        service.create(Item(name="x"), auto_refresh=False)

    def aa_new() -> None:
        with ItemService.new(config=aa_config) as service:
            service.create(Item(name="x"), auto_refresh=False, auto_commit=True)

    return Setup(
        [
            Variant("hand-written", hand, kind="baseline"),
            Variant("hand-written again (A/A control)", hand, kind="control"),
            Variant("@with_services", decorated),
            Variant("provide_services", provided),
            Variant("hand-written, AA service", hand_aa, kind="baseline"),
            Variant("@with_services, AA service", decorated_aa, baseline="hand-written, AA service"),
            Variant("AA Service.new(), AA service", aa_new, baseline="hand-written, AA service", kind="alternative"),
        ],
        reset=lambda: clear_sync(engine),
    )


@contextmanager
def sync_sqlite() -> Iterator[Setup]:
    engine = sqlite_engine()
    try:
        yield _sync_variants(engine)
    finally:
        engine.dispose()


@contextmanager
def sync_psycopg() -> Iterator[Setup]:
    """The sync case on PostgreSQL through psycopg 3, in a database created for the run."""
    with postgres_database() as url:
        engine = create_engine(make_url(url).set(drivername="postgresql+psycopg"), pool_size=2)
        try:
            Base.metadata.create_all(engine)
            yield _sync_variants(engine)
        finally:
            engine.dispose()


def _async_variants(engine: AsyncEngine) -> Setup:
    factory = async_factory(engine)
    db = Database(session_factory=factory)
    aa_config = SQLAlchemyAsyncConfig(engine_instance=engine, session_config=AsyncSessionConfig(expire_on_commit=False))

    async def hand() -> None:
        async with factory() as session:
            items = AsyncItems(session)
            items.add("x")
            await session.commit()

    @with_services(AsyncItems, database=db)
    async def decorated(items: AsyncItems) -> None:
        items.add("x")

    async def provided() -> None:
        async with provide_services(AsyncItems, database=db) as (items,):
            items.add("x")

    async def hand_shielded() -> None:
        # A control: the hand-written unit ending as uow's does, the commit and close in a task of their
        # own awaited through `asyncio.shield`, so a cancellation cannot cut them short (`to_completion`).
        session = factory()
        try:
            AsyncItems(session).add("x")
        except BaseException:
            await session.close()
            raise

        async def end() -> None:
            try:
                await session.commit()
            finally:
                await session.close()

        await asyncio.shield(asyncio.get_running_loop().create_task(end()))

    async def hand_aa() -> None:
        async with factory() as session:
            service = AsyncItemService(session=session)
            await service.create(Item(name="x"), auto_refresh=False)
            await session.commit()

    @with_services(AsyncItemService, database=db)
    async def decorated_aa(service: AsyncItemService) -> None:
        await service.create(Item(name="x"), auto_refresh=False)

    async def aa_new() -> None:
        async with AsyncItemService.new(config=aa_config) as service:
            await service.create(Item(name="x"), auto_refresh=False, auto_commit=True)

    return Setup(
        [
            Variant("hand-written", hand, kind="baseline"),
            Variant("hand-written again (A/A control)", hand, kind="control"),
            Variant("hand-written, ending shielded in a task (control)", hand_shielded, kind="control"),
            Variant("@with_services", decorated),
            Variant("provide_services", provided),
            Variant("hand-written, AA service", hand_aa, kind="baseline"),
            Variant("@with_services, AA service", decorated_aa, baseline="hand-written, AA service"),
            Variant("AA Service.new(), AA service", aa_new, baseline="hand-written, AA service", kind="alternative"),
        ],
        reset=lambda: clear_async(engine),
    )


@asynccontextmanager
async def async_aiosqlite() -> AsyncIterator[Setup]:
    async with aiosqlite_engine() as engine:
        yield _async_variants(engine)


@asynccontextmanager
async def async_asyncpg() -> AsyncIterator[Setup]:
    async with asyncpg_engine() as engine:
        yield _async_variants(engine)


_MEASURES = (
    "one unit of work that inserts a row and commits, in a fresh session from the same factory: "
    "written by hand, with @with_services, with provide_services; then the same with an advanced-alchemy "
    "repository service, by hand, with @with_services and with the service's own Service.new()"
)

CASES = [
    Case("unit-sync-sqlite", "unit of work, sync, in-memory SQLite", _MEASURES, sync_sqlite, False, 40, "unit"),
    Case(
        "unit-async-aiosqlite",
        "unit of work, async, in-memory aiosqlite",
        _MEASURES,
        async_aiosqlite,
        True,
        200,
        "unit",
    ),
    Case("unit-sync-psycopg", "unit of work, sync, PostgreSQL/psycopg", _MEASURES, sync_psycopg, False, 15, "unit"),
    Case("unit-async-asyncpg", "unit of work, async, PostgreSQL/asyncpg", _MEASURES, async_asyncpg, True, 15, "unit"),
]

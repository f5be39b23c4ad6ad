"""`Database`: from a URL, an Engine/AsyncEngine or a (async_)sessionmaker; `configure()`; options.

URLs point at a port nothing listens on: making a Database must decide sync/async from the
dialect alone, without connecting.
"""

from __future__ import annotations

import importlib.util
import sys
import types
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy
from sqlalchemy import Engine, create_engine
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.orm import sessionmaker
from sqlalchemy.orm.exc import DetachedInstanceError

import uow
from tests.conftest import Backend
from tests.helpers import committed, committed_async
from tests.models import AsyncItemService, Item, ItemService
from uow import ConfigurationError, Database, configure, unit_of_work, with_services

NOWHERE = "127.0.0.1:9"  # the discard port: nothing answers there


async def _dispose(database: Database) -> None:
    await database.dispose_async()


@pytest.mark.parametrize(
    ("url", "is_async"),
    [
        ("sqlite://", False),
        ("sqlite+pysqlite:///{tmp}/x.db", False),
        ("sqlite+aiosqlite:///{tmp}/x.db", True),
        (f"postgresql+psycopg://u:p@{NOWHERE}/db", False),
        (f"postgresql+asyncpg://u:p@{NOWHERE}/db", True),
        (f"postgresql+psycopg_async://u:p@{NOWHERE}/db", True),
        (f"mysql+pymysql://u:p@{NOWHERE}/db", False),
        (f"mysql+aiomysql://u:p@{NOWHERE}/db", True),
    ],
)
async def test_url_driver_decides_sync_or_async(url: str, is_async: bool, tmp_path: Path) -> None:
    database = Database(url.format(tmp=tmp_path))
    try:
        assert database.is_async is is_async
        assert isinstance(database.engine, AsyncEngine if is_async else Engine)
        assert isinstance(database.session_factory, async_sessionmaker if is_async else sessionmaker)
    finally:
        await _dispose(database)


async def test_asyncmy_is_async_by_its_dialect_without_the_driver(monkeypatch: pytest.MonkeyPatch) -> None:
    if importlib.util.find_spec("asyncmy") is None:
        # Not installed: stand in for the one constant SQLAlchemy reads from it before connecting.
        constants = types.ModuleType("asyncmy.constants")
        constants.CLIENT = types.SimpleNamespace(FOUND_ROWS=2)  # type: ignore[attr-defined]
        monkeypatch.setitem(sys.modules, "asyncmy", types.ModuleType("asyncmy"))
        monkeypatch.setitem(sys.modules, "asyncmy.constants", constants)
    # A stand-in DBAPI module, so the driver is never imported: the dialect alone decides.
    stand_in = types.SimpleNamespace(paramstyle="format")
    database = Database(f"mysql+asyncmy://u:p@{NOWHERE}/db", engine_options={"module": stand_in})
    try:
        assert database.is_async
        assert isinstance(database.engine, AsyncEngine)
    finally:
        await _dispose(database)


def test_repr_hides_the_password() -> None:
    database = Database(f"postgresql+psycopg://user:secret@{NOWHERE}/db")
    try:
        assert "secret" not in repr(database)
        assert "(sync)" in repr(database)
    finally:
        database.dispose()


def test_needs_exactly_one_source(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite:///{tmp_path / 'x.db'}")
    try:
        with pytest.raises(ConfigurationError, match="exactly one of.*got 0"):
            Database()
        with pytest.raises(ConfigurationError, match="got 2"):
            Database(f"sqlite:///{tmp_path / 'y.db'}", engine=engine)
        with pytest.raises(ConfigurationError, match="got 2"):
            Database(engine=engine, session_factory=sessionmaker(engine))
        with pytest.raises(ConfigurationError, match="got 3"):
            Database("sqlite://", engine=engine, session_factory=sessionmaker(engine))
    finally:
        engine.dispose()


def test_wrong_kinds_of_source() -> None:
    with pytest.raises(ConfigurationError, match="needs a sqlalchemy Engine or AsyncEngine, got str"):
        Database(engine="sqlite://")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="needs a sqlalchemy sessionmaker or async_sessionmaker, got function"):
        Database(session_factory=lambda: None)  # type: ignore[arg-type]


def test_from_engine(sync_db: Database) -> None:
    engine = sync_db.engine
    assert isinstance(engine, Engine)
    database = Database(engine=engine)
    assert database.engine is engine
    assert not database.is_async

    @with_services(ItemService, database=database)
    def add(items: ItemService) -> Item:
        assert items.session.get_bind() is engine
        return items.add("a")

    item = add()
    assert item.name == "a"  # expire_on_commit=False for engines handed in, too
    assert committed(sync_db) == ["a"]


async def test_from_async_engine(async_db: Database) -> None:
    engine = async_db.engine
    assert isinstance(engine, AsyncEngine)
    database = Database(engine=engine)
    assert database.is_async

    @with_services(AsyncItemService, database=database)
    async def add(items: AsyncItemService) -> Item:
        return await items.add("a")

    assert (await add()).name == "a"
    assert await committed_async(async_db) == ["a"]


def test_from_sessionmaker(sync_db: Database) -> None:
    factory = sessionmaker(sync_db.engine, info={"made_by": "the user"})
    database = Database(session_factory=factory)
    assert database.session_factory is factory
    assert database.engine is sync_db.engine
    assert not database.is_async

    with unit_of_work(database=database) as session:
        assert session.info["made_by"] == "the user"
        session.add(Item(name="a"))
    assert committed(sync_db) == ["a"]


async def test_from_async_sessionmaker(async_db: Database) -> None:
    factory = async_sessionmaker(async_db.engine, expire_on_commit=False, info={"made_by": "the user"})  # type: ignore[arg-type]
    database = Database(session_factory=factory)
    assert database.session_factory is factory
    assert database.is_async

    async with unit_of_work(database=database) as session:
        assert isinstance(session, AsyncSession)
        assert session.info["made_by"] == "the user"
        session.add(Item(name="a"))
    assert await committed_async(async_db) == ["a"]


def test_sessionmaker_without_a_bind(tmp_path: Path) -> None:
    database = Database(session_factory=sessionmaker())
    assert database.engine is None
    assert not database.is_async


def test_configure_makes_the_process_default(sync_db: Database) -> None:
    assert configure(sync_db) is sync_db

    @with_services(ItemService)
    def add(items: ItemService) -> None:
        items.add("a")

    add()
    assert committed(sync_db) == ["a"]


def test_configure_refuses_anything_but_a_database(sync_db: Database) -> None:
    with pytest.raises(ConfigurationError, match=r"configure\(\) needs a uow.Database, got Engine"):
        configure(sync_db.engine)  # type: ignore[arg-type]


def test_configure_replaces_the_default(tmp_path: Path, sqlite_db: Database) -> None:
    other = configure(Database(f"sqlite:///{tmp_path / 'other.db'}"))
    try:
        assert uow._database.get_default_database() is other
        configure(sqlite_db)
        assert uow._database.get_default_database() is sqlite_db
    finally:
        other.dispose()


def test_engine_options_pass_through(tmp_path: Path) -> None:
    database = Database(
        f"sqlite:///{tmp_path / 'x.db'}",
        engine_options={"echo": True, "execution_options": {"marker": "set"}, "pool_size": 3},
    )
    try:
        engine = database.engine
        assert isinstance(engine, Engine)
        assert engine.echo is True
        assert engine.get_execution_options()["marker"] == "set"
        assert engine.pool.size() == 3  # type: ignore[attr-defined]
    finally:
        database.dispose()


def test_session_options_pass_through(tmp_path: Path) -> None:
    database = Database(f"sqlite:///{tmp_path / 'x.db'}", session_options={"autoflush": False, "info": {"k": "v"}})
    try:
        with unit_of_work(database=database) as session:
            assert session.autoflush is False
            assert session.info["k"] == "v"
            assert session.expire_on_commit is False  # the default stays unless overridden
    finally:
        database.dispose()


def _make_and_return_item(database: Database) -> Item:
    @with_services(ItemService, database=database)
    def add(items: ItemService) -> Item:
        return items.add("a")

    return add()


def test_expire_on_commit_defaults_to_false(sync_db: Database) -> None:
    with unit_of_work(database=sync_db) as session:
        assert session.expire_on_commit is False
    item = _make_and_return_item(sync_db)
    assert not sqlalchemy.inspect(item).expired
    assert item.name == "a"


async def test_expire_on_commit_defaults_to_false_async(async_db: Database) -> None:
    async with unit_of_work(database=async_db) as session:
        assert session.sync_session.expire_on_commit is False


def test_expire_on_commit_can_be_turned_back_on(backend: Backend, sync_db: Database) -> None:
    database = Database(backend.sync_url, session_options={"expire_on_commit": True})
    try:
        item = _make_and_return_item(database)
        assert sqlalchemy.inspect(item).expired
        with pytest.raises(DetachedInstanceError):
            _ = item.name
        assert committed(sync_db) == ["a"]
    finally:
        database.dispose()


async def test_dispose_of_an_async_database_needs_dispose_async(tmp_path: Path) -> None:
    database = Database(f"sqlite+aiosqlite:///{tmp_path / 'x.db'}")
    with pytest.raises(ConfigurationError, match="dispose_async"):
        database.dispose()
    await database.dispose_async()


def test_sqlite_savepoints_do_not_commit_the_outer_work(sqlite_db: Database) -> None:
    # Left to pysqlite's own transaction handling, releasing a SAVEPOINT could commit everything.
    with pytest.raises(ZeroDivisionError), unit_of_work(database=sqlite_db) as session:
        session.add(Item(name="outer"))
        with unit_of_work(database=sqlite_db, propagation="nested") as inner:
            inner.add(Item(name="inner"))
        assert committed(sqlite_db) == []
        _ = 1 / 0
    assert committed(sqlite_db) == []


def test_database_from_an_engine_made_elsewhere_keeps_user_events(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite:///{tmp_path / 'x.db'}")
    seen: list[Any] = []
    sqlalchemy.event.listen(engine, "connect", lambda *args: seen.append(args))
    try:
        database = Database(engine=engine)
        with unit_of_work(database=database) as session:
            session.execute(sqlalchemy.text("SELECT 1"))
        assert len(seen) == 1
    finally:
        engine.dispose()


async def test_async_engine_made_elsewhere(tmp_path: Path) -> None:
    engine = create_async_engine(f"sqlite+aiosqlite:///{tmp_path / 'x.db'}")
    try:
        database = Database(engine=engine)
        async with unit_of_work(database=database) as session:
            assert (await session.execute(sqlalchemy.text("SELECT 1"))).scalar() == 1
    finally:
        await engine.dispose()


def test_database_is_exported() -> None:
    assert uow.Database is Database
    assert uow.configure is configure

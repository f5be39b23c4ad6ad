"""`Database(url)`: an async engine for an async driver, a sync one otherwise; options pass through.

Every SQLite Database, whatever it was built from, runs real transactions so savepoints work.
"""

from __future__ import annotations

import os
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, create_engine, event, insert, select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.orm import Session, sessionmaker

import uow
from tests.models import Base, Item

pytest_plugins = ["pytester"]

SRC = Path(__file__).resolve().parents[1] / "src"
# Plugins the inner suite never uses; loading them costs seconds per run.
UNUSED_PLUGINS = ["-p", "no:cacheprovider", "-p", "no:hypothesispytest", "-p", "no:faker", "-p", "no:anyio"]

SYNC_URLS = [
    "sqlite:///:memory:",
    "postgresql+psycopg://u@127.0.0.1/db",
    "postgresql+psycopg2://u@127.0.0.1/db",
    "mysql+pymysql://u@127.0.0.1/db",
]
ASYNC_URLS = [
    "sqlite+aiosqlite:///:memory:",
    "postgresql+asyncpg://u@127.0.0.1/db",
    "postgresql+psycopg_async://u@127.0.0.1/db",
    "mysql+aiomysql://u@127.0.0.1/db",
    "mysql+asyncmy://u@127.0.0.1/db",
]


@pytest.mark.parametrize("url", SYNC_URLS)
def test_a_sync_driver_makes_a_sync_database(url: str) -> None:
    database = uow.Database(url)
    try:
        assert not database.is_async
        assert isinstance(database.engine, Engine)
        assert isinstance(database.session_factory(), Session)
    finally:
        database.dispose()


@pytest.mark.parametrize("url", ASYNC_URLS)
async def test_an_async_driver_makes_an_async_database(url: str) -> None:
    database = uow.Database(url)
    try:
        assert database.is_async
        assert isinstance(database.engine, AsyncEngine)
        assert isinstance(database.session_factory(), AsyncSession)
    finally:
        await database.dispose_async()


def test_engine_and_session_options_pass_through_to_primary_and_replicas() -> None:
    database = uow.Database(
        "postgresql+psycopg://u@127.0.0.1/primary",
        replicas=["postgresql+psycopg://u@127.0.0.1/replica"],
        engine_options={"pool_size": 3, "max_overflow": 1},
        session_options={"autoflush": False},
    )
    try:
        for factory in [database.session_factory, *database.replica_factories]:
            engine = factory.kw["bind"]
            assert (engine.pool.size(), engine.pool._max_overflow) == (3, 1)
            session = factory()
            assert session.autoflush is False
            assert session.expire_on_commit is False, "uow's default stays unless overridden"
    finally:
        database.dispose()


def test_session_options_can_override_the_expire_on_commit_default() -> None:
    database = uow.Database("sqlite:///:memory:", session_options={"expire_on_commit": True})
    try:
        assert database.session_factory().expire_on_commit is True
    finally:
        database.dispose()


async def test_a_replica_must_use_the_same_kind_of_driver_as_the_primary() -> None:
    with pytest.raises(uow.ConfigurationError, match="async but the primary is sync"):
        uow.Database("sqlite:///:memory:", replicas=["sqlite+aiosqlite:///:memory:"])


# -- SQLite engines the application built behave as URL-built ones (issue 10, section 4) -------------
#
# The outer unit's first statement is the nested unit's SAVEPOINT: left to the sqlite3 module, that
# SAVEPOINT opens the transaction itself and its RELEASE commits it, so the nested unit's row would
# outlive the enclosing unit's rollback.


def _sync_sources(path: Path) -> dict[str, Callable[[], tuple[uow.Database, Engine]]]:
    def engine_only() -> tuple[uow.Database, Engine]:
        engine = create_engine(f"sqlite:///{path}")
        return uow.Database(engine=engine), engine

    def factory() -> tuple[uow.Database, Engine]:
        engine = create_engine(f"sqlite:///{path}")
        return uow.Database(session_factory=sessionmaker(engine)), engine

    def url() -> tuple[uow.Database, Engine]:
        database = uow.Database(f"sqlite:///{path}")
        assert isinstance(database.engine, Engine)
        return database, database.engine

    return {"engine": engine_only, "session_factory": factory, "url": url}


class BeginCounter:
    """How many BEGINs the engine sent (a real listener on the real engine)."""

    def __init__(self, engine: Engine) -> None:
        self.begins = 0
        event.listen(engine, "before_cursor_execute", self._seen)

    def _seen(self, _conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        self.begins += statement.strip().upper() == "BEGIN"


def _names(engine: Engine) -> list[str]:
    with engine.connect() as connection:
        return list(connection.scalars(select(Item.name).order_by(Item.name)))


@pytest.mark.parametrize("source", ["engine", "session_factory", "url"])
def test_a_nested_unit_is_rolled_back_with_its_enclosing_unit_on_any_sqlite_database(
    tmp_path: Path, source: str
) -> None:
    database, engine = _sync_sources(tmp_path / "app.db")[source]()
    Base.metadata.create_all(engine)
    begins = BeginCounter(engine)

    @uow.unit_of_work(database=database, propagation="nested")
    def nested() -> None:
        uow.current_session(database).add(Item(name="nested"))

    @uow.unit_of_work(database=database)
    def outer() -> None:
        nested()
        raise RuntimeError("the enclosing unit fails")

    try:
        with pytest.raises(RuntimeError):
            outer()
        assert begins.begins == 1
        assert _names(engine) == [], "the nested unit's row outlived the rollback of its enclosing unit"
    finally:
        engine.dispose()


@pytest.mark.parametrize("source", ["engine", "session_factory", "url"])
async def test_a_nested_unit_is_rolled_back_with_its_enclosing_unit_on_any_aiosqlite_database(
    tmp_path: Path, source: str
) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'app.db'}"
    if source == "url":
        database = uow.Database(url)
        engine = database.engine
        assert isinstance(engine, AsyncEngine)
    else:
        engine = create_async_engine(url)
        database = (
            uow.Database(engine=engine)
            if source == "engine"
            else uow.Database(session_factory=async_sessionmaker(engine))
        )
    async with engine.begin() as connection:
        await connection.run_sync(Base.metadata.create_all)

    @uow.unit_of_work(database=database, propagation="nested")
    async def nested() -> None:
        uow.current_session(database).add(Item(name="nested"))

    @uow.unit_of_work(database=database)
    async def outer() -> None:
        await nested()
        raise RuntimeError("the enclosing unit fails")

    try:
        with pytest.raises(RuntimeError):
            await outer()
        async with engine.connect() as connection:
            assert list(await connection.scalars(select(Item.name))) == []
    finally:
        await engine.dispose()


def test_the_recipe_is_applied_once_per_engine_and_to_connections_pooled_before(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite:///{tmp_path / 'app.db'}", pool_size=1, max_overflow=0)
    Base.metadata.create_all(engine)  # this pooled connection predates uow: sqlite3 still runs its transactions
    first, second = uow.Database(engine=engine), uow.Database(engine=engine)
    begins = BeginCounter(engine)
    try:
        for database in (first, second):
            with pytest.raises(RuntimeError), uow.unit_of_work(database=database):
                with uow.unit_of_work(database=database, propagation="nested") as inner:
                    inner.add(Item(name="nested"))
                raise RuntimeError
        assert begins.begins == 2, "one BEGIN per unit, however many Databases share the engine"
        assert _names(engine) == []
    finally:
        engine.dispose()


def test_an_application_that_installed_the_recipe_itself_gets_one_begin(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite:///{tmp_path / 'app.db'}")

    @event.listens_for(engine, "connect")
    def no_pysqlite_transactions(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None

    @event.listens_for(engine, "begin")
    def begin(connection: Any) -> None:
        connection.exec_driver_sql("BEGIN")

    Base.metadata.create_all(engine)
    database = uow.Database(engine=engine)
    begins = BeginCounter(engine)
    try:
        with uow.unit_of_work(database=database) as session:
            with uow.unit_of_work(database=database, propagation="nested") as inner:
                inner.add(Item(name="nested"))
            session.add(Item(name="outer"))
        assert begins.begins == 1
        assert _names(engine) == ["nested", "outer"]
    finally:
        engine.dispose()


# -- the test plugin passes a test only if it passes in production ----------------------------------

ENGINE_APP = """
    import os

    from sqlalchemy import String, create_engine
    from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, sessionmaker

    import uow


    class Base(DeclarativeBase):
        pass


    class Note(Base):
        __tablename__ = "notes"
        id: Mapped[int] = mapped_column(primary_key=True)
        text: Mapped[str] = mapped_column(String(50))


    engine = create_engine(os.environ["UOW_INNER_SQLITE_URL"])
    Base.metadata.create_all(engine)
    source = os.environ["UOW_INNER_SOURCE"]
    database = uow.Database(engine=engine) if source == "engine" else uow.Database(session_factory=sessionmaker(engine))


    @uow.unit_of_work(database=database, propagation="nested")
    def remember(text):
        uow.current_session(database).add(Note(text=text))


    @uow.unit_of_work(database=database)
    def remember_then_fail(text):
        remember(text)
        raise RuntimeError("the request fails")
"""

ENGINE_APP_TESTS = """
    import pytest
    from sqlalchemy import select

    import engine_app


    def notes():
        with engine_app.engine.connect() as connection:
            return list(connection.scalars(select(engine_app.Note.text)))


    @pytest.fixture
    def uow_database():
        return engine_app.database


    @pytest.mark.uow_commit
    def test_in_production(uow_transaction):
        with pytest.raises(RuntimeError):
            engine_app.remember_then_fail("production")
        assert "production" not in notes()


    def test_under_the_rollback_fixture(uow_transaction):
        with pytest.raises(RuntimeError):
            engine_app.remember_then_fail("under the plugin")
        with uow.unit_of_work(database=engine_app.database) as session:
            assert "under the plugin" not in list(session.scalars(select(engine_app.Note.text)))
"""


@pytest.mark.parametrize("source", ["engine", "session_factory"])
def test_the_test_plugin_agrees_with_production_on_an_application_engine(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, source: str
) -> None:
    # Before uow applied its SQLite recipe to engines it did not build, the first test failed (the
    # nested row stayed) while the second passed: the plugin hid what production did.
    (pytester.path / "engine_app.py").write_text(textwrap.dedent(ENGINE_APP).lstrip())
    (pytester.path / "test_engine_app.py").write_text("import uow\n" + textwrap.dedent(ENGINE_APP_TESTS).lstrip())
    pytester.makeini("[pytest]\nasyncio_default_fixture_loop_scope = function\n")
    monkeypatch.setenv("UOW_INNER_SQLITE_URL", f"sqlite:///{tmp_path / 'inner.db'}")
    monkeypatch.setenv("UOW_INNER_SOURCE", source)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(SRC), str(pytester.path), os.environ.get("PYTHONPATH", "")]))
    result = pytester.runpytest_subprocess(*UNUSED_PLUGINS, "-p", "uow.testing", "-v", timeout=120)
    result.assert_outcomes(passed=2)


@pytest.mark.parametrize("how", ["create_engine", "execution_options", "url"])
def test_an_autocommit_sqlite_engine_keeps_autocommitting(tmp_path: Path, how: str) -> None:
    # The recipe's BEGIN on an AUTOCOMMIT connection would never be committed: the writes would be lost.
    url = f"sqlite:///{tmp_path / 'app.db'}"
    if how == "create_engine":
        engine = create_engine(url, isolation_level="AUTOCOMMIT")
        database = uow.Database(engine=engine)
    elif how == "execution_options":
        engine = create_engine(url).execution_options(isolation_level="AUTOCOMMIT")
        database = uow.Database(engine=engine)
    else:
        database = uow.Database(url, engine_options={"isolation_level": "AUTOCOMMIT"})
        assert isinstance(database.engine, Engine)
        engine = database.engine
    Base.metadata.create_all(engine)
    try:
        with uow.unit_of_work(database=database) as session:
            session.add(Item(name="by a unit"))
        with engine.connect() as connection:  # the application's own code, relying on AUTOCOMMIT
            connection.execute(insert(Item).values(name="by the application"))
        reader = create_engine(url)
        try:
            assert _names(reader) == ["by a unit", "by the application"]
        finally:
            reader.dispose()
    finally:
        engine.dispose()

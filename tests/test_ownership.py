"""Nobody commits behind the unit's back: user code's commit, rollback and close inside a unit uow owns.

A commit is refused (`OwnershipError`) before anything is written; a rollback or close is reported
right after it happened. Either way the unit ends in a rollback, also when the code catches the
error and carries on (`RollbackOnlyError`). Savepoints the user begins stay the user's, and a
session passed with ``session=`` is never guarded. Sync on SQLite and psycopg, async on aiosqlite
and asyncpg, for Databases built from a URL, an Engine and a sessionmaker.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from flask import Flask
from sqlalchemy import Engine, create_engine, select
from sqlalchemy.exc import InvalidRequestError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.orm import Session, sessionmaker
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.testclient import TestClient

import uow
from tests import drivers
from tests.drivers import Target
from tests.models import Base, Item
from uow.integrations.flask import UnitOfWork
from uow.integrations.starlette import UnitOfWorkMiddleware
from uow.testing import bound_to_transaction

if TYPE_CHECKING:
    from tests.integrations.web import Web

pytest_plugins = ["tests.integrations.web"]

SYNC = ["sqlite", "postgresql+psycopg"]
ASYNC = ["sqlite+aiosqlite", "postgresql+asyncpg"]
KINDS = ["url", "engine", "session_factory"]
REFUSED = r"session\.commit\(\).* is refused"
ENDED = r"rolled back or closed"


# -- databases of every kind -------------------------------------------------------------------


@pytest.fixture(params=SYNC)
def sync_target(request: pytest.FixtureRequest, tmp_path: Path) -> Target:
    return drivers.target(request, request.param, tmp_path)


@pytest.fixture(params=ASYNC)
def async_target(request: pytest.FixtureRequest, tmp_path: Path) -> Target:
    return drivers.target(request, request.param, tmp_path)


@pytest.fixture
def db(sync_target: Target) -> Iterator[uow.Database]:
    database = drivers.open_sync(sync_target)
    yield database
    drivers.close_sync(database, sync_target)


@pytest.fixture
async def adb(async_target: Target) -> AsyncIterator[uow.Database]:
    database = await drivers.open_async(async_target)
    yield database
    await drivers.close_async(database, async_target)


@pytest.fixture(params=KINDS)
def any_db(request: pytest.FixtureRequest, sync_target: Target) -> Iterator[uow.Database]:
    """A sync Database built from a URL, from an Engine, or from a sessionmaker."""
    if request.param == "url":
        database = drivers.open_sync(sync_target)
        yield database
        drivers.close_sync(database, sync_target)
        return
    engine = create_engine(sync_target.url)
    Base.metadata.drop_all(engine)
    Base.metadata.create_all(engine)
    database = (
        uow.Database(engine=engine)
        if request.param == "engine"
        else uow.Database(session_factory=sessionmaker(engine, expire_on_commit=False))
    )
    try:
        yield database
        drivers.assert_clean(database, sync_target.server)
    finally:
        Base.metadata.drop_all(engine)
        engine.dispose()


@pytest.fixture(params=KINDS)
async def any_adb(request: pytest.FixtureRequest, async_target: Target) -> AsyncIterator[uow.Database]:
    """An async Database built from a URL, from an AsyncEngine, or from an async_sessionmaker."""
    if request.param == "url":
        database = await drivers.open_async(async_target)
        yield database
        await drivers.close_async(database, async_target)
        return
    engine = create_async_engine(async_target.url)
    async with engine.begin() as connection:
        await connection.run_sync(Base.metadata.drop_all)
        await connection.run_sync(Base.metadata.create_all)
    database = (
        uow.Database(engine=engine)
        if request.param == "engine"
        else uow.Database(session_factory=async_sessionmaker(engine, expire_on_commit=False))
    )
    try:
        yield database
        drivers.assert_clean(database, async_target.server)
    finally:
        async with engine.begin() as connection:
            await connection.run_sync(Base.metadata.drop_all)
        await engine.dispose()


def committed(database: uow.Database) -> list[str]:
    engine = database.session_factory.kw["bind"]
    assert isinstance(engine, Engine)
    with engine.connect() as connection:
        return list(connection.scalars(select(Item.name).order_by(Item.name)))


async def committed_async(database: uow.Database) -> list[str]:
    engine = database.session_factory.kw["bind"]
    assert isinstance(engine, AsyncEngine)
    async with engine.connect() as connection:
        return list(await connection.scalars(select(Item.name).order_by(Item.name)))


# -- commit ------------------------------------------------------------------------------------


def test_commit_inside_a_unit_is_refused_and_nothing_is_kept(any_db: uow.Database) -> None:
    @uow.unit_of_work(database=any_db)
    def save_then_fail(session: Session) -> None:
        session.add(Item(name="first"))
        session.commit()
        session.add(Item(name="never reached"))

    with pytest.raises(uow.OwnershipError, match=REFUSED) as refused:
        save_then_fail()
    message = str(refused.value)
    assert "save_then_fail()" in message
    assert "session.flush()" in message
    assert committed(any_db) == []


async def test_async_commit_inside_a_unit_is_refused_and_nothing_is_kept(any_adb: uow.Database) -> None:
    @uow.unit_of_work(database=any_adb)
    async def save_then_fail(session: AsyncSession) -> None:
        session.add(Item(name="first"))
        await session.commit()

    with pytest.raises(uow.OwnershipError, match=REFUSED) as refused:
        await save_then_fail()
    assert "save_then_fail()" in str(refused.value)
    assert "session.flush()" in str(refused.value)
    assert await committed_async(any_adb) == []


def test_flush_is_the_way_and_the_unit_commits(db: uow.Database) -> None:
    @uow.unit_of_work(database=db)
    def save(session: Session) -> int:
        item = Item(name="flushed")
        session.add(item)
        session.flush()
        return item.id

    assert save() > 0
    assert committed(db) == ["flushed"]


def test_a_joined_unit_that_commits_is_refused_naming_the_owner(db: uow.Database) -> None:
    @uow.unit_of_work()
    def repository_save(session: Session) -> None:
        session.add(Item(name="inner"))
        session.commit()

    @uow.unit_of_work(database=db)
    def owner(session: Session) -> None:
        session.add(Item(name="outer"))
        repository_save()

    uow.configure(db)
    with pytest.raises(uow.OwnershipError, match=r"owner\(\)"):
        owner()
    assert committed(db) == []


def test_a_caught_refusal_still_ends_in_a_rollback(db: uow.Database) -> None:
    @uow.unit_of_work(database=db)
    def swallow(session: Session) -> None:
        session.add(Item(name="a"))
        try:
            session.commit()
        except uow.OwnershipError:
            pass
        session.add(Item(name="b"))

    with pytest.raises(uow.RollbackOnlyError, match="caught this error and carried on") as doomed:
        swallow()
    assert "session.commit()" in str(doomed.value)
    assert committed(db) == []


async def test_async_caught_refusal_still_ends_in_a_rollback(adb: uow.Database) -> None:
    @uow.unit_of_work(database=adb)
    async def swallow(session: AsyncSession) -> None:
        session.add(Item(name="a"))
        try:
            await session.commit()
        except uow.OwnershipError:
            pass

    with pytest.raises(uow.RollbackOnlyError, match="caught this error"):
        await swallow()
    assert await committed_async(adb) == []


def test_the_legacy_commit_or_rollback_pattern_raises_the_commit_refusal(db: uow.Database) -> None:
    # Repositories often write 'try: commit() except: rollback(); raise': the rollback must not
    # replace the refusal with a second error.
    @uow.unit_of_work(database=db)
    def legacy(session: Session) -> None:
        session.add(Item(name="a"))
        try:
            session.commit()
        except Exception:
            session.rollback()
            raise

    with pytest.raises(uow.OwnershipError, match=REFUSED) as refused:
        legacy()
    assert refused.value.__context__ is None
    assert committed(db) == []


async def test_async_legacy_commit_or_rollback_pattern_ends_in_ownership_error(adb: uow.Database) -> None:
    # Across SQLAlchemy's asyncio bridge the refusal being handled is not visible to the rollback's
    # listener, so the rollback is reported as well: still an OwnershipError, still nothing kept.
    @uow.unit_of_work(database=adb)
    async def legacy(session: AsyncSession) -> None:
        session.add(Item(name="a"))
        try:
            await session.commit()
        except Exception:
            await session.rollback()
            raise

    with pytest.raises(uow.OwnershipError):
        await legacy()
    assert await committed_async(adb) == []


def test_a_with_session_begin_block_is_refused_when_it_would_commit(db: uow.Database) -> None:
    @uow.unit_of_work(database=db)
    def begins(session: Session) -> None:
        with session.begin():
            session.add(Item(name="a"))

    with pytest.raises(uow.OwnershipError, match=REFUSED) as refused:
        begins()
    assert refused.value.__context__ is None
    assert committed(db) == []


def test_begin_on_a_session_already_in_its_transaction_is_sqlalchemys_error(db: uow.Database) -> None:
    @uow.unit_of_work(database=db)
    def begins_twice(session: Session) -> None:
        session.add(Item(name="a"))
        session.begin()

    with pytest.raises(InvalidRequestError, match="already begun"):
        begins_twice()
    assert committed(db) == []


def test_requires_new_units_are_guarded_too(db: uow.Database) -> None:
    @uow.unit_of_work(database=db, propagation="requires_new")
    def audit(session: Session) -> None:
        session.add(Item(name="audit"))
        session.commit()

    @uow.unit_of_work(database=db)
    def outer(session: Session) -> None:
        session.add(Item(name="outer"))
        with pytest.raises(uow.OwnershipError, match=r"audit\(\)"):
            audit()

    outer()
    assert committed(db) == ["outer"]


# -- rollback and close ------------------------------------------------------------------------


def test_rollback_inside_a_unit_is_reported_and_nothing_after_it_commits(any_db: uow.Database) -> None:
    @uow.unit_of_work(database=any_db)
    def roll_back_halfway(session: Session) -> None:
        session.add(Item(name="before"))
        session.flush()
        session.rollback()

    @uow.unit_of_work(database=any_db)
    def carry_on_after_rollback(session: Session) -> None:
        session.add(Item(name="before"))
        session.flush()
        with pytest.raises(uow.OwnershipError, match=ENDED):
            session.rollback()
        session.add(Item(name="after"))

    with pytest.raises(uow.OwnershipError, match=ENDED) as reported:
        roll_back_halfway()
    assert "roll_back_halfway()" in str(reported.value)
    with pytest.raises(uow.RollbackOnlyError, match=ENDED):
        carry_on_after_rollback()
    assert committed(any_db) == []


async def test_async_rollback_inside_a_unit_is_reported(any_adb: uow.Database) -> None:
    @uow.unit_of_work(database=any_adb)
    async def carry_on_after_rollback(session: AsyncSession) -> None:
        session.add(Item(name="before"))
        await session.flush()
        with pytest.raises(uow.OwnershipError, match=ENDED):
            await session.rollback()
        session.add(Item(name="after"))

    with pytest.raises(uow.RollbackOnlyError, match=ENDED):
        await carry_on_after_rollback()
    assert await committed_async(any_adb) == []


def test_close_inside_a_unit_is_reported(db: uow.Database) -> None:
    @uow.unit_of_work(database=db)
    def closes(session: Session) -> None:
        session.add(Item(name="pending, never flushed"))
        session.close()

    with pytest.raises(uow.OwnershipError, match=ENDED):
        closes()
    assert committed(db) == []


async def test_async_close_inside_a_unit_is_reported(adb: uow.Database) -> None:
    @uow.unit_of_work(database=adb)
    async def closes(session: AsyncSession) -> None:
        session.add(Item(name="a"))
        await session.flush()
        await session.close()
        session.add(Item(name="after the close"))

    with pytest.raises(uow.OwnershipError, match=ENDED):
        await closes()
    assert await committed_async(adb) == []


# -- savepoints ----------------------------------------------------------------------------------


def test_savepoints_the_user_begins_release_and_roll_back(db: uow.Database) -> None:
    @uow.unit_of_work(database=db)
    def work(session: Session) -> None:
        session.add(Item(name="outer"))
        with session.begin_nested():
            session.add(Item(name="released"))
        savepoint = session.begin_nested()
        session.add(Item(name="rolled back"))
        session.flush()
        savepoint.rollback()
        savepoint = session.begin_nested()
        session.add(Item(name="committed savepoint"))
        savepoint.commit()

    work()
    assert committed(db) == ["committed savepoint", "outer", "released"]


async def test_async_savepoints_the_user_begins_release_and_roll_back(adb: uow.Database) -> None:
    @uow.unit_of_work(database=adb)
    async def work(session: AsyncSession) -> None:
        session.add(Item(name="outer"))
        async with session.begin_nested():
            session.add(Item(name="released"))
        savepoint = await session.begin_nested()
        session.add(Item(name="rolled back"))
        await session.flush()
        await savepoint.rollback()

    await work()
    assert await committed_async(adb) == ["outer", "released"]


def test_a_commit_inside_a_nested_unit_is_refused_before_its_savepoint_is_released(db: uow.Database) -> None:
    @uow.unit_of_work(database=db, propagation="nested")
    def inner(session: Session) -> None:
        session.add(Item(name="inner"))
        session.commit()

    @uow.unit_of_work(database=db)
    def outer(session: Session) -> None:
        session.add(Item(name="outer"))
        with pytest.raises(uow.OwnershipError, match=r"outer\(\)"):
            inner()
        # The savepoint was rolled back, not released by the refused commit: the outer unit goes on.
        assert session.in_transaction()
        session.add(Item(name="after"))

    outer()
    assert committed(db) == ["after", "outer"]


async def test_async_commit_inside_a_nested_unit_is_refused(adb: uow.Database) -> None:
    @uow.unit_of_work(database=adb, propagation="nested")
    async def inner(session: AsyncSession) -> None:
        session.add(Item(name="inner"))
        async with session.begin_nested():  # the user's own savepoint inside the unit's
            session.add(Item(name="inner, user savepoint"))
            await session.commit()

    @uow.unit_of_work(database=adb)
    async def outer(session: AsyncSession) -> None:
        session.add(Item(name="outer"))
        with pytest.raises(uow.OwnershipError):
            await inner()

    await outer()
    assert await committed_async(adb) == ["outer"]


def test_a_caught_refusal_inside_a_nested_unit_rolls_back_its_savepoint(db: uow.Database) -> None:
    @uow.unit_of_work(database=db, propagation="nested")
    def inner(session: Session) -> None:
        session.add(Item(name="inner"))
        try:
            session.commit()
        except uow.OwnershipError:
            pass

    @uow.unit_of_work(database=db)
    def outer(session: Session) -> None:
        session.add(Item(name="outer"))
        with pytest.raises(uow.RollbackOnlyError, match="savepoint"):
            inner()

    outer()
    assert committed(db) == ["outer"]


# -- sessions that are not guarded ------------------------------------------------------------


def test_a_session_the_caller_passed_stays_the_callers(db: uow.Database) -> None:
    @uow.unit_of_work(database=db)
    def commits_itself(session: Session, name: str) -> None:
        session.add(Item(name=name))
        session.commit()

    factory = db.session_factory
    with factory() as session:
        assert isinstance(session, Session)
        commits_itself("kept", session=session)  # type: ignore[call-arg]
        commits_itself("rolled back", session=session)  # type: ignore[call-arg]
        session.rollback()
    assert committed(db) == ["kept", "rolled back"]


async def test_async_session_the_caller_passed_stays_the_callers(adb: uow.Database) -> None:
    @uow.unit_of_work(database=adb)
    async def commits_itself(session: AsyncSession) -> None:
        session.add(Item(name="kept"))
        await session.commit()
        await session.rollback()
        await session.close()

    factory = adb.session_factory
    async with factory() as session:
        assert isinstance(session, AsyncSession)
        await commits_itself(session=session)  # type: ignore[call-arg]
    assert await committed_async(adb) == ["kept"]


def test_the_session_stays_closed_once_its_unit_has_ended(db: uow.Database) -> None:
    """Issue 10: a session uow closed never begins again; a kept session is refused, not silently reused."""
    with uow.unit_of_work(database=db) as session:
        session.add(Item(name="a"))
    with pytest.raises(uow.NoActiveUnitOfWork, match="has ended and closed it"):
        session.add(Item(name="b"))
    assert committed(db) == ["a"]


# -- under uow.testing and in request units ---------------------------------------------------


def test_bound_test_sessions_refuse_the_commit_as_production_does(db: uow.Database) -> None:
    @uow.unit_of_work(database=db)
    def commits(session: Session) -> None:
        session.add(Item(name="a"))
        session.commit()

    with bound_to_transaction(db):
        with pytest.raises(uow.OwnershipError, match=REFUSED):
            commits()
        with uow.unit_of_work(database=db) as session:
            assert list(session.scalars(select(Item.name))) == []


async def test_async_bound_test_sessions_refuse_the_commit(adb: uow.Database) -> None:
    @uow.unit_of_work(database=adb)
    async def commits(session: AsyncSession) -> None:
        session.add(Item(name="a"))
        await session.commit()

    async with bound_to_transaction(adb):
        with pytest.raises(uow.OwnershipError, match=REFUSED):
            await commits()


def test_a_unit_left_open_in_a_binding_is_closed_without_a_refusal(
    db: uow.Database, caplog: pytest.LogCaptureFixture
) -> None:
    unit = uow.unit_of_work(database=db)
    with pytest.raises(Exception, match="left 1 unit"), bound_to_transaction(db):
        session = unit.__enter__()
        session.add(Item(name="left open"))
        session.flush()
    assert "OwnershipError" not in caplog.text
    assert committed(db) == []


@uow.unit_of_work()
def commit_in_request(session: Session, request: Request) -> Response:
    session.add(Item(name=request.path_params["name"]))
    session.commit()
    return JSONResponse({"saved": True})


@uow.unit_of_work()
async def commit_in_async_request(session: AsyncSession, request: Request) -> Response:
    session.add(Item(name=request.path_params["name"]))
    await session.commit()
    return JSONResponse({"saved": True})


@pytest.mark.parametrize("fixture", ["web_sqlite", "web_postgres"])
def test_a_request_unit_refuses_the_endpoints_commit(request: pytest.FixtureRequest, fixture: str) -> None:
    web: Web = request.getfixturevalue(fixture)
    app = Starlette(
        routes=[Route("/items/{name}", commit_in_request, methods=["POST"])],
        middleware=[Middleware(UnitOfWorkMiddleware, database=web.db)],
    )
    with TestClient(app) as client, pytest.raises(uow.OwnershipError, match="request's unit of work"):
        client.post("/items/a")
    with TestClient(app, raise_server_exceptions=False) as client:
        assert client.post("/items/b").status_code == 500
    assert web.names() == []


@pytest.mark.parametrize("fixture", ["web_async_sqlite", "web_async_postgres"])
def test_an_async_request_unit_refuses_the_endpoints_commit(request: pytest.FixtureRequest, fixture: str) -> None:
    web: Web = request.getfixturevalue(fixture)
    app = Starlette(
        routes=[Route("/items/{name}", commit_in_async_request, methods=["POST"])],
        middleware=[Middleware(UnitOfWorkMiddleware, database=web.db)],
    )
    with TestClient(app, raise_server_exceptions=False) as client:
        assert client.post("/items/a").status_code == 500
    assert web.names() == []


def test_a_flask_request_unit_refuses_the_views_commit(web_sqlite: Web) -> None:
    app = Flask(__name__)
    app.config["PROPAGATE_EXCEPTIONS"] = False
    UnitOfWork(app, web_sqlite.db)

    @app.post("/items/<name>")
    @uow.unit_of_work()
    def create(session: Session, name: str) -> Any:
        session.add(Item(name=name))
        session.commit()
        return {"saved": True}

    with app.test_client() as client:
        assert client.post("/items/a").status_code == 500
    assert web_sqlite.names() == []
    assert web_sqlite.checked_out == 0


# -- the uow_transaction fixture of the uow.testing plugin -------------------------------------


@pytest.fixture
def uow_database(db: uow.Database) -> uow.Database:
    return db


def test_the_uow_transaction_fixture_refuses_the_commit_as_production_does(uow_transaction: uow.Database) -> None:
    @uow.unit_of_work(database=uow_transaction)
    def commits(session: Session) -> None:
        session.add(Item(name="a"))
        session.commit()

    with pytest.raises(uow.OwnershipError, match=REFUSED):
        commits()
    with uow.unit_of_work(database=uow_transaction) as session:
        assert list(session.scalars(select(Item.name))) == []

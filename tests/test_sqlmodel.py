"""SQLModel end to end: its Session and AsyncSession as the unit's session, `.exec()`, `select()`, models as tables.

SQLModel's sessions are SQLAlchemy Session / AsyncSession subclasses that add ``exec``; a
Database makes them with ``session_options={"class_": sqlmodel.Session}`` (or a sessionmaker
given ``class_=``). Run on SQLite, PostgreSQL and MariaDB.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Optional

import pytest
import sqlmodel
from sqlalchemy import Engine, delete
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.orm import sessionmaker
from sqlmodel import Field, SQLModel, col, select
from sqlmodel.ext.asyncio.session import AsyncSession

import uow
from tests.conftest import Backend, _assert_clean


class Hero(SQLModel, table=True):
    __tablename__ = "uow_sqlmodel_hero"

    id: Optional[int] = Field(default=None, primary_key=True)  # noqa: UP045 - SQLModel evaluates it on 3.10 too
    name: str = Field(unique=True, max_length=64)
    power: int = 0


class HeroService:
    """A service written for SQLModel: it calls `session.exec`, which a plain SQLAlchemy Session lacks."""

    def __init__(self, session: sqlmodel.Session) -> None:
        self.session = session

    def add(self, name: str, power: int = 0) -> Hero:
        hero = Hero(name=name, power=power)
        self.session.add(hero)
        self.session.flush()
        return hero

    def names(self) -> list[str]:
        return list(self.session.exec(select(Hero.name).order_by(col(Hero.name))).all())

    def strongest(self) -> Hero | None:
        return self.session.exec(select(Hero).order_by(col(Hero.power).desc())).first()


class AsyncHeroService:
    """The async twin: SQLModel's AsyncSession, whose `exec` is awaited."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def add(self, name: str, power: int = 0) -> Hero:
        hero = Hero(name=name, power=power)
        self.session.add(hero)
        await self.session.flush()
        return hero

    async def names(self) -> list[str]:
        return list((await self.session.exec(select(Hero.name).order_by(col(Hero.name)))).all())


def committed(engine: Engine) -> list[str]:
    with sqlmodel.Session(engine) as session:
        return list(session.exec(select(Hero.name).order_by(col(Hero.name))).all())


@pytest.fixture
def heroes_db(backend: Backend) -> Iterator[uow.Database]:
    database = uow.Database(backend.sync_url, session_options={"class_": sqlmodel.Session})
    assert isinstance(database.engine, Engine)
    SQLModel.metadata.create_all(database.engine, tables=[Hero.__table__])  # type: ignore[list-item]
    try:
        yield database
        _assert_clean(database, backend)
    finally:
        with database.engine.begin() as connection:
            connection.execute(delete(Hero))
        database.dispose()


@pytest.fixture
async def async_heroes_db(backend: Backend, heroes_db: uow.Database) -> AsyncIterator[uow.Database]:
    # heroes_db made the table and empties it afterwards; this Database reads what it commits.
    database = uow.Database(backend.async_url, session_options={"class_": AsyncSession})
    assert isinstance(database.engine, AsyncEngine)
    try:
        yield database
        _assert_clean(database, backend)
    finally:
        await database.dispose_async()


def test_a_unit_with_sqlmodel_models_commits_on_return(heroes_db: uow.Database) -> None:
    @uow.with_services(HeroService, database=heroes_db)
    def recruit(heroes: HeroService, session: sqlmodel.Session, name: str, power: int) -> Hero:
        assert isinstance(session, sqlmodel.Session) and session is heroes.session
        return heroes.add(name, power)

    hero = recruit(name="Deadpond", power=3)
    assert (hero.id, hero.name) == (1, "Deadpond")  # still readable: expire_on_commit=False
    recruit(name="Spider-Boy", power=7)
    assert committed(heroes_db.engine) == ["Deadpond", "Spider-Boy"]  # type: ignore[arg-type]

    @uow.with_services(HeroService, database=heroes_db, read_only=True)
    def strongest(heroes: HeroService) -> str | None:
        found = heroes.strongest()
        return found.name if found else None

    assert strongest() == "Spider-Boy"


def test_a_failing_unit_rolls_back_everything(heroes_db: uow.Database) -> None:
    @uow.with_services(HeroService, database=heroes_db)
    def recruit(heroes: HeroService, names: list[str]) -> None:
        for name in names:
            heroes.add(name)

    recruit(names=["Tarantula", "Deadpond"])
    with pytest.raises(IntegrityError):
        recruit(names=["Rusty-Man", "Tarantula"])  # Rusty-Man is flushed, then Tarantula's flush fails
    assert committed(heroes_db.engine) == ["Deadpond", "Tarantula"]  # type: ignore[arg-type]  # no Rusty-Man


def test_a_savepoint_recovers_from_a_failed_flush(heroes_db: uow.Database) -> None:
    @uow.with_services(HeroService, database=heroes_db, propagation="nested")
    def try_recruit(heroes: HeroService, name: str) -> bool:
        heroes.add(name)
        return True

    @uow.with_services(HeroService, database=heroes_db)
    def recruit_all(heroes: HeroService, names: list[str]) -> list[str]:
        for name in names:
            try:
                try_recruit(name=name)
            except IntegrityError:
                pass
        return heroes.names()

    assert recruit_all(names=["Black Lion", "Black Lion", "Princess Sure-E"]) == ["Black Lion", "Princess Sure-E"]
    assert committed(heroes_db.engine) == ["Black Lion", "Princess Sure-E"]  # type: ignore[arg-type]


def test_a_sessionmaker_of_sqlmodel_sessions(heroes_db: uow.Database) -> None:
    factory = sessionmaker(heroes_db.engine, class_=sqlmodel.Session, expire_on_commit=False)  # type: ignore[arg-type]
    database = uow.Database(session_factory=factory)

    with uow.provide_services(HeroService, database=database) as (heroes,):
        assert isinstance(heroes.session, sqlmodel.Session)
        heroes.add("Captain North America")
    assert committed(heroes_db.engine) == ["Captain North America"]  # type: ignore[arg-type]


def test_a_plain_database_refuses_a_sqlmodel_session_at_decoration(backend: Backend) -> None:
    database = uow.Database(backend.sync_url)
    try:
        with pytest.raises(uow.ConfigurationError, match=r"session_options=\{\"class_\": sqlmodel.Session\}"):

            @uow.with_services(HeroService, database=database)
            def recruit(heroes: HeroService) -> None: ...

    finally:
        database.dispose()


async def test_an_async_unit_with_sqlmodels_async_session(
    async_heroes_db: uow.Database, heroes_db: uow.Database
) -> None:
    @uow.with_services(AsyncHeroService, database=async_heroes_db)
    async def recruit(heroes: AsyncHeroService, session: AsyncSession, name: str) -> Hero:
        assert isinstance(session, AsyncSession) and session is heroes.session
        return await heroes.add(name)

    @uow.with_services(AsyncHeroService, database=async_heroes_db)
    async def recruit_then_fail(heroes: AsyncHeroService, name: str) -> None:
        await heroes.add(name)
        raise RuntimeError("after the flush")

    hero = await recruit(name="Dr. Weird")
    assert hero.name == "Dr. Weird"
    with pytest.raises(RuntimeError):
        await recruit_then_fail(name="Mr. Nobody")

    @uow.with_services(AsyncHeroService, database=async_heroes_db, read_only=True)
    async def names(heroes: AsyncHeroService) -> list[str]:
        return await heroes.names()

    assert await names() == ["Dr. Weird"]
    assert committed(heroes_db.engine) == ["Dr. Weird"]  # type: ignore[arg-type]

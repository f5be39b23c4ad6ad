"""What every case shares: the table, the services, and the engines the variants run on."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager

from advanced_alchemy.repository import SQLAlchemyAsyncRepository, SQLAlchemySyncRepository
from advanced_alchemy.service import SQLAlchemyAsyncRepositoryService, SQLAlchemySyncRepositoryService
from sqlalchemy import Engine, String, create_engine, delete, text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker
from sqlalchemy.pool import StaticPool

POSTGRES_ADMIN_URL = os.environ.get(
    "UOW_BENCH_POSTGRES_URL",
    os.environ.get("UOW_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"),
)


class Unavailable(Exception):
    """A case cannot run here (a server is unreachable); the runner reports it as skipped with this reason."""


class Base(DeclarativeBase):
    pass


class Item(Base):
    __tablename__ = "bench_items"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(50))


class Items:
    """The smallest realistic service: it adds a row to the session it was given."""

    def __init__(self, session: Session) -> None:
        self.session = session

    def add(self, name: str) -> Item:
        item = Item(name=name)
        self.session.add(item)
        return item


class AsyncItems:
    """`Items` for an AsyncSession."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    def add(self, name: str) -> Item:
        item = Item(name=name)
        self.session.add(item)
        return item


class ItemRepository(SQLAlchemySyncRepository[Item]):
    model_type = Item


class ItemService(SQLAlchemySyncRepositoryService[Item, ItemRepository]):
    """An advanced-alchemy service, used by every variant that compares with advanced-alchemy."""

    repository_type = ItemRepository


class AsyncItemRepository(SQLAlchemyAsyncRepository[Item]):
    model_type = Item


class AsyncItemService(SQLAlchemyAsyncRepositoryService[Item, AsyncItemRepository]):
    repository_type = AsyncItemRepository


def sqlite_engine() -> Engine:
    """An in-memory SQLite database on one shared connection (StaticPool), with the bench table."""
    engine = create_engine("sqlite://", poolclass=StaticPool, connect_args={"check_same_thread": False})
    Base.metadata.create_all(engine)
    return engine


def sync_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


def async_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False)


def clear_sync(engine: Engine) -> None:
    with engine.begin() as connection:
        connection.execute(delete(Item))


async def clear_async(engine: AsyncEngine) -> None:
    async with engine.begin() as connection:
        await connection.execute(delete(Item))


@asynccontextmanager
async def aiosqlite_engine() -> AsyncIterator[AsyncEngine]:
    """An in-memory aiosqlite database on one shared connection (StaticPool), with the bench table."""
    engine = create_async_engine("sqlite+aiosqlite://", poolclass=StaticPool)
    try:
        async with engine.begin() as connection:
            await connection.run_sync(Base.metadata.create_all)
        yield engine
    finally:
        await engine.dispose()


@contextmanager
def postgres_database() -> Iterator[str]:
    """A database of our own on the PostgreSQL server (dropped afterwards); yields its asyncpg URL."""
    admin_url = make_url(POSTGRES_ADMIN_URL)
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT", connect_args={"connect_timeout": 3})
    name = f"uow_bench_{uuid.uuid4().hex[:12]}"
    try:
        with admin.connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{name}"'))
    except Exception as error:
        admin.dispose()
        first_line = str(error).splitlines()[0] if str(error) else ""
        raise Unavailable(
            f"PostgreSQL at {admin_url.render_as_string(hide_password=True)} not reachable: {first_line}"
        ) from error
    try:
        yield admin_url.set(drivername="postgresql+asyncpg", database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@asynccontextmanager
async def asyncpg_engine() -> AsyncIterator[AsyncEngine]:
    """An asyncpg engine on a fresh PostgreSQL database with the bench table; `Unavailable` if unreachable."""
    with postgres_database() as url:
        engine = create_async_engine(url, pool_size=2)
        try:
            async with engine.begin() as connection:
                await connection.run_sync(Base.metadata.create_all)
            yield engine
        finally:
            await engine.dispose()

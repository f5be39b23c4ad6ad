"""Leak checks shared by the reliability tests."""

from __future__ import annotations

from sqlalchemy import Engine, func, select
from sqlalchemy.ext.asyncio import AsyncEngine

import uow
from tests import servers
from tests.conftest import Backend
from tests.models import Item


def assert_no_leak(database: uow.Database, backend: Backend, context: str = "") -> None:
    """No connection checked out of `database`'s pool, no server session idle in a transaction."""
    engine = database.engine
    assert isinstance(engine, (Engine, AsyncEngine))
    checked_out = engine.pool.checkedout()  # type: ignore[attr-defined]
    assert checked_out == 0, f"{context}{checked_out} connection(s) still checked out of {database!r}"
    if backend.server is not None:
        leaked = servers.open_transactions(backend.server)
        assert not leaked, f"{context}server sessions left idle in a transaction: {leaked}"


def item_names_sync(database: uow.Database) -> set[str]:
    """What is committed, read on a connection of its own."""
    engine = database.engine
    assert isinstance(engine, Engine)
    with engine.connect() as connection:
        return set(connection.scalars(select(Item.name)))


async def item_names_async(database: uow.Database) -> set[str]:
    engine = database.engine
    assert isinstance(engine, AsyncEngine)
    async with engine.connect() as connection:
        return set((await connection.scalars(select(Item.name))).all())


def clear_items_sync(database: uow.Database) -> None:
    engine = database.engine
    assert isinstance(engine, Engine)
    with engine.begin() as connection:
        connection.execute(Item.__table__.delete())


async def clear_items_async(database: uow.Database) -> None:
    engine = database.engine
    assert isinstance(engine, AsyncEngine)
    async with engine.begin() as connection:
        await connection.execute(Item.__table__.delete())


def count_items_sync(database: uow.Database) -> int:
    engine = database.engine
    assert isinstance(engine, Engine)
    with engine.connect() as connection:
        return int(connection.scalar(select(func.count()).select_from(Item)) or 0)

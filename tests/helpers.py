"""What the core tests read back: committed rows seen from a fresh connection, and the pool's state.

These go to the engine directly, never through uow, so a bug in a unit cannot hide itself.
"""

from __future__ import annotations

from sqlalchemy import Engine, select
from sqlalchemy.ext.asyncio import AsyncEngine

import uow
from tests.models import Item


def sync_engine(database: uow.Database) -> Engine:
    engine = database.engine
    assert isinstance(engine, Engine)
    return engine


def async_engine(database: uow.Database) -> AsyncEngine:
    engine = database.engine
    assert isinstance(engine, AsyncEngine)
    return engine


def committed(database: uow.Database) -> list[str]:
    """Item names committed in `database`, read on a connection of its own."""
    with sync_engine(database).connect() as connection:
        return list(connection.scalars(select(Item.name).order_by(Item.name)))


async def committed_async(database: uow.Database) -> list[str]:
    """Item names committed in the async `database`, read on a connection of its own."""
    async with async_engine(database).connect() as connection:
        return list(await connection.scalars(select(Item.name).order_by(Item.name)))


def checked_out(database: uow.Database) -> int:
    """Connections of `database`'s engine that are not back in the pool."""
    engine = database.engine
    assert engine is not None
    return int(engine.pool.checkedout())  # type: ignore[attr-defined]

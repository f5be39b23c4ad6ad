"""Leak checks shared by the reliability tests."""

from __future__ import annotations

import atexit
import functools
import time

from sqlalchemy import Engine, func, select, text
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
        leaked = _settled(backend.server)
        assert not leaked, f"{context}server sessions left idle in a transaction: {leaked}"


def _settled(server: servers.Server) -> list[str]:
    """Sessions idle in a transaction that stay so.

    A connection the client closed (an invalidated asyncpg connection, say) still shows as
    idle in transaction until its server process reads the end of the socket, a moment later;
    a leaked one stays. So look again a few times before calling it a leak.
    """
    leaked = idle_in_transaction(server)
    for _ in range(40):
        if not leaked:
            break
        time.sleep(0.025)
        leaked = idle_in_transaction(server)
    return leaked


_IDLE_IN_TRANSACTION = text(
    "SELECT pid::text || ' ' || coalesce(query, '') FROM pg_stat_activity "
    "WHERE datname = :db AND state LIKE 'idle in transaction%' AND pid <> pg_backend_pid()"
)


@functools.lru_cache(maxsize=1)
def _admin() -> Engine:
    # One admin connection for the whole run: the suite checks after every scenario, hundreds of times.
    engine = servers._admin_engine(servers.POSTGRES_ADMIN_URL)
    atexit.register(engine.dispose)
    return engine


def idle_in_transaction(server: servers.Server) -> list[str]:
    """`servers.open_transactions`, on a connection kept open between checks (PostgreSQL)."""
    if server.name != "postgresql":
        return servers.open_transactions(server)
    with _admin().connect() as connection:
        return [row[0] for row in connection.execute(_IDLE_IN_TRANSACTION, {"db": server.database})]


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

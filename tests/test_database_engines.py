"""`Database(url)`: an async engine for an async driver, a sync one otherwise; options pass through."""

from __future__ import annotations

import pytest
from sqlalchemy import Engine
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession
from sqlalchemy.orm import Session

import uow

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

"""Fixtures for the framework integrations: the Redis server the job runners use, and databases
for tests whose framework runs event loops of its own."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from sqlalchemy import Engine

import uow
from tests import redis_server
from tests.conftest import Backend, _assert_clean
from tests.models import Base


@pytest.fixture(scope="session")
def redis_url() -> str:
    """The Redis server's URL; skips (or, under UOW_REQUIRE_SERVERS=1, fails) when it cannot be reached."""
    return redis_server.require_redis()


@pytest.fixture
def redis_prefix(redis_url: str) -> Iterator[str]:
    """A key prefix of this test's own; every key containing it is deleted afterwards."""
    prefix = redis_server.new_prefix()
    yield prefix
    redis_server.delete_keys(prefix)


@pytest.fixture
def runner_async_db(backend: Backend) -> Iterator[uow.Database]:
    """An async Database for sync tests whose framework runs its own event loops (asyncio.run per command).

    The tables are made with the sync driver so no connection of the async pool is bound to
    a loop of the test's; leak-checked and dropped afterwards like the other fixtures.
    """
    tables = uow.Database(backend.sync_url)
    assert isinstance(tables.engine, Engine)
    Base.metadata.drop_all(tables.engine)
    Base.metadata.create_all(tables.engine)
    database = uow.Database(backend.async_url)
    try:
        yield database
        _assert_clean(database, backend)
    finally:
        asyncio.run(database.dispose_async())
        Base.metadata.drop_all(tables.engine)
        tables.dispose()

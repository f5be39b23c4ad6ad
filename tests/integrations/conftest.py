"""Fixtures for the framework integrations: the Redis server the job runners use, and databases
for tests whose framework runs event loops of its own."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Iterator

import pytest
import redis

import uow
from tests import servers
from tests.conftest import Backend, _assert_clean
from tests.models import Base

REDIS_URL = os.environ.get("UOW_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


@pytest.fixture(scope="session")
def redis_url() -> str:
    """The Redis server's URL; skips (or, under UOW_REQUIRE_SERVERS=1, fails) when it cannot be reached."""
    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2, socket_timeout=2)
    try:
        client.ping()
    except redis.RedisError as error:
        reason = f"Redis not reachable at {REDIS_URL} ({type(error).__name__}: {error})"
        if servers.REQUIRE_SERVERS:
            pytest.fail(f"{reason}; UOW_REQUIRE_SERVERS=1 requires it", pytrace=False)
        pytest.skip(f"{reason}; set UOW_TEST_REDIS_URL or start the server")
    finally:
        client.close()
    return REDIS_URL


@pytest.fixture
def redis_prefix(redis_url: str) -> Iterator[str]:
    """A key prefix of this test's own; every key containing it is deleted afterwards."""
    prefix = f"uow-test-{uuid.uuid4().hex[:12]}"
    yield prefix
    client = redis.Redis.from_url(redis_url)
    try:
        keys = list(client.scan_iter(match=f"*{prefix}*", count=1000))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


@pytest.fixture
def runner_async_db(backend: Backend) -> Iterator[uow.Database]:
    """An async Database for sync tests whose framework runs its own event loops (asyncio.run per command).

    The tables are made with the sync driver so no connection of the async pool is bound to
    a loop of the test's; leak-checked and dropped afterwards like the other fixtures.
    """
    tables = uow.Database(backend.sync_url)
    assert tables.engine is not None
    Base.metadata.drop_all(tables.engine)  # type: ignore[arg-type]
    Base.metadata.create_all(tables.engine)  # type: ignore[arg-type]
    database = uow.Database(backend.async_url)
    try:
        yield database
        _assert_clean(database, backend)
    finally:
        asyncio.run(database.dispose_async())
        Base.metadata.drop_all(tables.engine)  # type: ignore[arg-type]
        tables.dispose()

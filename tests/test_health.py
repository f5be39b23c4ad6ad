"""`Database.ping()` / `ping_async()` on SQLite, PostgreSQL and MariaDB, and on servers that are not there.

An unreachable port (nothing listens: refused at once) must fail fast; a silent server (a socket that
accepts connections into its backlog and never answers) must fail when the timeout is up, not when the
driver gives up.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select, text
from sqlalchemy.orm import Session

import uow
from tests import drivers
from tests.drivers import Target
from tests.models import Item

SYNC = ["sqlite", "postgresql+psycopg", "mysql+pymysql"]
ASYNC = ["sqlite+aiosqlite", "postgresql+asyncpg", "mysql+aiomysql"]
SERVER_DRIVERS = ["postgresql+psycopg", "postgresql+asyncpg", "mysql+pymysql", "mysql+aiomysql"]
ASYNC_DRIVERS = {"postgresql+asyncpg", "mysql+aiomysql"}


@pytest.fixture(params=SYNC)
def sync_target(request: pytest.FixtureRequest, tmp_path: Path) -> Target:
    return drivers.target(request, request.param, tmp_path)


@pytest.fixture(params=ASYNC)
def async_target(request: pytest.FixtureRequest, tmp_path: Path) -> Target:
    return drivers.target(request, request.param, tmp_path)


def closed_port() -> int:
    """A loopback port nothing listens on (it was bound a moment ago, then released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A loopback port that takes connections and never says a word (a hung server)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    try:
        yield listener.getsockname()[1]
    finally:
        listener.close()  # the pings' threads still waiting get a reset and end


def ping_any(database: uow.Database, timeout: float) -> float:
    if database.is_async:
        return asyncio.run(database.ping_async(timeout=timeout))
    return database.ping(timeout=timeout)


def test_a_sync_ping_returns_the_latency(sync_target: Target) -> None:
    database = drivers.open_sync(sync_target)
    try:
        latency = database.ping(timeout=2)
        assert 0 < latency < 2
        assert database.engine is not None
        assert database.engine.pool.checkedout() == 0
    finally:
        drivers.close_sync(database, sync_target)


async def test_an_async_ping_returns_the_latency(async_target: Target) -> None:
    database = await drivers.open_async(async_target)
    try:
        latency = await database.ping_async(timeout=2)
        assert 0 < latency < 2
    finally:
        await drivers.close_async(database, async_target)


def test_a_ping_inside_a_unit_neither_joins_nor_disturbs_it(sync_target: Target) -> None:
    database = drivers.open_sync(sync_target)
    try:

        @uow.unit_of_work(database=database)
        def work(session: Session) -> float:
            session.add(Item(name="a"))
            session.flush()
            latency = database.ping(timeout=2)  # on a connection of its own
            assert session.scalars(select(Item.name)).all() == ["a"]
            return latency

        assert work() > 0

        @uow.unit_of_work(database=database)
        def read(session: Session) -> list[str]:
            return list(session.scalars(select(Item.name)))

        assert read() == ["a"]
    finally:
        drivers.close_sync(database, sync_target)


async def test_a_sync_database_can_be_pinged_from_async_code(tmp_path: Path) -> None:
    database = uow.Database(f"sqlite:///{tmp_path / 'app.db'}")
    try:
        assert 0 < await database.ping_async(timeout=2) < 2
    finally:
        database.dispose()


@pytest.mark.parametrize("driver", SERVER_DRIVERS)
def test_an_unreachable_server_fails_fast_and_names_the_database_without_credentials(driver: str) -> None:
    port = closed_port()
    database = uow.Database(f"{driver}://alice:s3cret@127.0.0.1:{port}/orders")
    try:
        started = time.monotonic()
        with pytest.raises(uow.DatabaseUnavailable) as caught:
            ping_any(database, timeout=3)
        assert time.monotonic() - started < 1.5  # refused at once: no waiting for the timeout
        message = str(caught.value)
        assert f"127.0.0.1:{port}/orders is unavailable" in message
        assert "s3cret" not in message and "alice" not in message
        assert caught.value.database == f"{driver}://127.0.0.1:{port}/orders"
        assert caught.value.timeout == 3
    finally:
        if database.is_async:
            asyncio.run(database.dispose_async())
        else:
            database.dispose()


@pytest.mark.parametrize("driver", SERVER_DRIVERS)
def test_a_silent_server_fails_when_the_timeout_is_up(driver: str, silent_port: int) -> None:
    database = uow.Database(f"{driver}://u:p@127.0.0.1:{silent_port}/orders", name="orders-primary")
    try:
        started = time.monotonic()
        with pytest.raises(
            uow.DatabaseUnavailable, match=r"database orders-primary is unavailable: no answer within 0.3s"
        ):
            ping_any(database, timeout=0.3)
        assert 0.3 <= time.monotonic() - started < 1.5
    finally:
        if database.is_async:
            asyncio.run(database.dispose_async())
        else:
            database.dispose()


def test_a_pooled_connection_the_server_dropped_does_not_fail_the_ping(
    request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    target = drivers.target(request, "postgresql+psycopg", tmp_path)
    assert target.server is not None
    database = drivers.open_sync(target)
    try:
        assert database.engine is not None
        with database.engine.connect() as connection:
            backend = int(connection.execute(text("SELECT pg_backend_pid()")).scalar_one())
        drivers.kill(target.server, backend)  # the pooled connection is dead now
        assert database.ping(timeout=2) > 0
    finally:
        drivers.close_sync(database, target)


@pytest.mark.parametrize("bad", [0, -1, float("nan"), "1", True])
def test_a_bad_ping_timeout_is_refused(bad: object) -> None:
    database = uow.Database("sqlite://")
    with pytest.raises(uow.ConfigurationError, match="timeout="):
        database.ping(timeout=bad)  # type: ignore[arg-type]


async def test_a_sync_ping_of_an_async_database_says_what_to_call(tmp_path: Path) -> None:
    database = uow.Database(f"sqlite+aiosqlite:///{tmp_path / 'app.db'}")
    try:
        with pytest.raises(uow.ConfigurationError, match=r"await database.ping_async\(\)"):
            database.ping()
    finally:
        await database.dispose_async()

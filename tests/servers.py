"""The real database servers the suite runs against, each test run in a database of its own.

PostgreSQL and MariaDB are found through UOW_TEST_POSTGRES_URL / UOW_TEST_MYSQL_URL
(defaults: the servers on 127.0.0.1). When one cannot be reached its tests are skipped
with the reason, unless UOW_REQUIRE_SERVERS=1 (set by .ci/run): then they fail.
A run creates its own database on each server (``uow_<random>``) and drops it at the
end, so parallel runs and other suites sharing the servers never collide.
"""

from __future__ import annotations

import os
import time
import uuid
from dataclasses import dataclass
from typing import Any

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import URL, make_url

REQUIRE_SERVERS = os.environ.get("UOW_REQUIRE_SERVERS") == "1"
POSTGRES_ADMIN_URL = os.environ.get("UOW_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
MYSQL_ADMIN_URL = os.environ.get("UOW_TEST_MYSQL_URL", "mysql+pymysql://root@127.0.0.1:3306/test")


@dataclass(frozen=True)
class Server:
    """A database of our own on a real server: URLs for the sync and the async driver."""

    name: str  # "postgresql" or "mariadb"
    sync_url: URL
    async_url: URL
    database: str

    def url(self, *, is_async: bool, database: str | None = None) -> URL:
        url = self.async_url if is_async else self.sync_url
        return url.set(database=database) if database else url


def unavailable(what: str, error: BaseException) -> None:
    """Skip (or, under UOW_REQUIRE_SERVERS=1, fail) because `what` cannot be reached."""
    reason = f"{what} not reachable ({type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''})"
    if REQUIRE_SERVERS:
        pytest.fail(f"{reason}; UOW_REQUIRE_SERVERS=1 requires it", pytrace=False)
    pytest.skip(f"{reason}; set UOW_TEST_POSTGRES_URL / UOW_TEST_MYSQL_URL or start the server")


def _admin_engine(url: str) -> Any:
    return create_engine(url, isolation_level="AUTOCOMMIT", pool_pre_ping=True, connect_args=_timeout_args(url))


def _timeout_args(url: str) -> dict[str, Any]:
    backend = make_url(url).get_backend_name()
    return {"connect_timeout": 3} if backend in ("postgresql", "mysql", "mariadb") else {}


def create_postgres_database(name: str | None = None) -> Server:
    admin = _admin_engine(POSTGRES_ADMIN_URL)
    database = name or f"uow_{uuid.uuid4().hex[:12]}"
    try:
        with admin.connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{database}"'))
    finally:
        admin.dispose()
    base = make_url(POSTGRES_ADMIN_URL).set(database=database)
    return Server(
        "postgresql",
        base.set(drivername="postgresql+psycopg"),
        base.set(drivername="postgresql+asyncpg"),
        database,
    )


def drop_postgres_database(database: str) -> None:
    admin = _admin_engine(POSTGRES_ADMIN_URL)
    try:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)'))
    finally:
        admin.dispose()


def create_mysql_database(name: str | None = None) -> Server:
    admin = _admin_engine(MYSQL_ADMIN_URL)
    database = name or f"uow_{uuid.uuid4().hex[:12]}"
    try:
        with admin.connect() as connection:
            connection.execute(text(f"CREATE DATABASE `{database}`"))
    finally:
        admin.dispose()
    base = make_url(MYSQL_ADMIN_URL).set(database=database)
    return Server(
        "mariadb",
        base.set(drivername="mysql+pymysql"),
        base.set(drivername="mysql+aiomysql"),
        database,
    )


def drop_mysql_database(database: str) -> None:
    admin = _admin_engine(MYSQL_ADMIN_URL)
    try:
        with admin.connect() as connection:
            connection.execute(text(f"DROP DATABASE IF EXISTS `{database}`"))
    finally:
        admin.dispose()


def open_transactions(server: Server) -> list[str]:
    """Sessions of `server`'s database that sit idle inside a transaction (leaks)."""
    if server.name == "postgresql":
        admin = _admin_engine(POSTGRES_ADMIN_URL)
        query = text(
            "SELECT pid::text || ' ' || coalesce(query, '') FROM pg_stat_activity "
            "WHERE datname = :db AND state LIKE 'idle in transaction%' AND pid <> pg_backend_pid()"
        )
    else:
        admin = _admin_engine(MYSQL_ADMIN_URL)
        query = text(
            "SELECT CONCAT(p.ID, ' ', COALESCE(p.INFO, '')) FROM information_schema.INNODB_TRX t "
            "JOIN information_schema.PROCESSLIST p ON p.ID = t.trx_mysql_thread_id "
            "WHERE p.DB = :db AND p.COMMAND = 'Sleep'"
        )
    try:
        with admin.connect() as connection:
            leaked = {row[0] for row in connection.execute(query, {"db": server.database})}
            # InnoDB serves INNODB_TRX from a cache refreshed at most every 0.1 s, later on a loaded
            # machine: a transaction that ended just now can still be listed. A leak stays listed, so
            # only what is still there after up to 2 s is one (a clean check does not wait at all).
            for _ in range(10 if server.name != "postgresql" else 0):
                if not leaked:
                    break
                time.sleep(0.2)
                leaked &= {row[0] for row in connection.execute(query, {"db": server.database})}
            return sorted(leaked)
    finally:
        admin.dispose()

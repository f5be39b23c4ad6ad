"""What the web integration tests share: a table whose commit can be made to fail, and small helpers.

``web_notes.parent_id`` is a foreign key checked only at COMMIT (DEFERRABLE INITIALLY DEFERRED),
so a note pointing at no parent flushes fine and makes the request's commit fail: the way
to prove a failed commit never reaches the client as a 2xx.

The fixtures (``web_sqlite``, ``web_async_sqlite``, ``web_postgres``, ``web_async_postgres``)
build the tables with a sync engine of their own and hand the app a fresh `uow.Database`
with an empty pool, so the framework's test client (which runs the app on an event loop of
its own) makes every connection it uses. Afterwards each checks that no connection is
still checked out and no server session sits idle in a transaction. Async PostgreSQL uses
NullPool: asyncpg connections cannot move between event loops. Test modules load them with
``pytest_plugins = ["tests.integrations.web"]``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import anyio
import pytest
from sqlalchemy import Engine, ForeignKey, String, create_engine, event, func, select
from sqlalchemy.engine import URL
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column
from sqlalchemy.pool import NullPool

import uow
from tests import servers
from tests.conftest import Backend
from tests.models import Base, Item

MISSING_PARENT = 999_999


class WebBase(DeclarativeBase):
    pass


class Note(WebBase):
    __tablename__ = "uow_web_notes"

    id: Mapped[int] = mapped_column(primary_key=True)
    parent_id: Mapped[int | None] = mapped_column(
        ForeignKey("uow_web_notes.id", deferrable=True, initially="DEFERRED"), nullable=True
    )
    text: Mapped[str] = mapped_column(String(100))


class NoteService:
    def __init__(self, session: Session) -> None:
        self.session = session

    def add_orphan(self, text: str) -> None:
        """A note whose parent does not exist: the flush passes, the commit fails."""
        self.session.add(Note(parent_id=MISSING_PARENT, text=text))
        self.session.flush()


class AsyncNoteService:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def add_orphan(self, text: str) -> None:
        self.session.add(Note(parent_id=MISSING_PARENT, text=text))
        await self.session.flush()


def sync_engine_of(database: uow.Database) -> Engine:
    engine = database.engine
    assert engine is not None
    return engine.sync_engine if isinstance(engine, AsyncEngine) else engine


def enable_sqlite_foreign_keys(engine: Engine) -> None:
    """SQLite checks foreign keys only when asked, per connection."""
    if engine.dialect.name != "sqlite":
        return

    @event.listens_for(engine, "connect")
    def _foreign_keys_on(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA foreign_keys = ON")
        cursor.close()


class Web:
    """A test's database: the `uow.Database` the app uses, and a sync engine of our own to read what was committed.

    It counts the connections the app takes from its pool and gives back, so a test can
    prove a request never touched the database, and that none is left checked out, and the
    COMMITs that reach the database, so a test can prove a request committed exactly once.
    """

    def __init__(self, db: uow.Database, check: Engine) -> None:
        self.db = db
        self.check = check
        self.checkouts = 0
        self.checkins = 0
        self.commits = 0
        engine = sync_engine_of(db)
        event.listen(engine, "checkout", self._on_checkout)
        event.listen(engine, "checkin", self._on_checkin)
        event.listen(engine, "commit", self._on_commit)
        enable_sqlite_foreign_keys(engine)

    def _on_checkout(self, *_: Any) -> None:
        self.checkouts += 1

    def _on_checkin(self, *_: Any) -> None:
        self.checkins += 1

    def _on_commit(self, *_: Any) -> None:
        self.commits += 1

    @property
    def checked_out(self) -> int:
        """Connections the app holds now (pool.checkedout() where the pool keeps count, else checkouts - checkins)."""
        pool = sync_engine_of(self.db).pool
        counted = getattr(pool, "checkedout", None)
        return int(counted()) if counted is not None else self.checkouts - self.checkins

    def names(self) -> list[str]:
        """The committed item names."""
        with self.check.connect() as connection:
            return list(connection.scalars(select(Item.name).order_by(Item.name)))

    def notes(self) -> int:
        with self.check.connect() as connection:
            return int(connection.scalar(select(func.count()).select_from(Note)) or 0)


def http_scope(path: str) -> dict[str, Any]:
    """The ASGI scope of a plain GET, for driving an app by hand (to cancel it mid-request)."""
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.4"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"testserver")],
        "client": ("127.0.0.1", 1234),
        "server": ("testserver", 80),
        "state": {},
    }


async def receive_nothing() -> dict[str, Any]:
    """An ASGI receive whose client never sends anything more."""
    await anyio.sleep_forever()
    raise AssertionError("not reached")


class Sent(list[Any]):
    """An ASGI send that records the messages."""

    async def __call__(self, message: Any) -> None:
        self.append(message)


def _web(backend: Backend, *, is_async: bool) -> Iterator[Web]:
    check = create_engine(backend.sync_url)
    enable_sqlite_foreign_keys(check)
    for metadata in (WebBase.metadata, Base.metadata):
        metadata.drop_all(check)
    Base.metadata.create_all(check)
    WebBase.metadata.create_all(check)
    url: URL = backend.url(is_async=is_async)
    options = {"poolclass": NullPool} if is_async and backend.server is not None else {}
    web = Web(uow.Database(url, engine_options=options), check)
    try:
        yield web
        assert web.checked_out == 0, f"{web.checked_out} connection(s) still checked out"
        if backend.server is not None:
            leaked = servers.open_transactions(backend.server)
            assert not leaked, f"server sessions left idle in a transaction: {leaked}"
    finally:
        asyncio.run(web.db.dispose_async())
        WebBase.metadata.drop_all(check)
        Base.metadata.drop_all(check)
        check.dispose()


@pytest.fixture
def web_sqlite(sqlite_backend: Backend) -> Iterator[Web]:
    """A sync Database on an SQLite file."""
    yield from _web(sqlite_backend, is_async=False)


@pytest.fixture
def web_async_sqlite(sqlite_backend: Backend) -> Iterator[Web]:
    """An async (aiosqlite) Database on an SQLite file."""
    yield from _web(sqlite_backend, is_async=True)


def _postgres(request: pytest.FixtureRequest) -> Backend:
    server: servers.Server = request.getfixturevalue("postgres_server")
    return Backend("postgresql", server.sync_url, server.async_url, server)


@pytest.fixture
def web_postgres(request: pytest.FixtureRequest) -> Iterator[Web]:
    """A sync (psycopg) Database on PostgreSQL."""
    yield from _web(_postgres(request), is_async=False)


@pytest.fixture
def web_async_postgres(request: pytest.FixtureRequest) -> Iterator[Web]:
    """An async (asyncpg, NullPool) Database on PostgreSQL."""
    yield from _web(_postgres(request), is_async=True)

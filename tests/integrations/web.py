"""What the web integration tests share: a table whose commit can be made to fail, and small helpers.

``web_notes.parent_id`` is a foreign key checked only at COMMIT (DEFERRABLE INITIALLY DEFERRED),
so a note pointing at no parent flushes fine and makes the request's commit fail: the way
to prove a failed commit never reaches the client as a 2xx.
"""

from __future__ import annotations

from typing import Any

import anyio
from sqlalchemy import Engine, ForeignKey, String, event, func, select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

import uow
from tests.models import Item

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
    prove a request never touched the database, and that none is left checked out.
    """

    def __init__(self, db: uow.Database, check: Engine) -> None:
        self.db = db
        self.check = check
        self.checkouts = 0
        self.checkins = 0
        engine = sync_engine_of(db)
        event.listen(engine, "checkout", self._on_checkout)
        event.listen(engine, "checkin", self._on_checkin)
        enable_sqlite_foreign_keys(engine)

    def _on_checkout(self, *_: Any) -> None:
        self.checkouts += 1

    def _on_checkin(self, *_: Any) -> None:
        self.checkins += 1

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

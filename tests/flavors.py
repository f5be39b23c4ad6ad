"""One scenario, four drivers: the Django-translated tests run each scenario on pysqlite, psycopg, aiosqlite and asyncpg.

A scenario is written once, as an ``async def`` taking a `Flavor`, and reaches the database only
through it: ``async with flavor.unit(propagation="nested") as session:``, ``await flavor.add(session,
"a")``, ``await flavor.names()``. On an async driver that is uow's async API as a user writes it.
On a sync driver every step is uow's sync API (``with unit_of_work()``, ``Session.flush()``) wrapped
in a coroutine that never suspends, so the scenario runs sync units exactly as sync code would;
`run_now` drives such a coroutine to its end without an event loop where sync code needs it (a sync
decorated function, a sync ``on_commit`` hook).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

import pytest
from sqlalchemy import select, text, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

import uow
from tests import drivers
from tests.drivers import Target
from tests.models import Item
from uow._decorators import UnitOfWork
from uow.testing import bound_to_transaction

DRIVERS = ["sqlite", "sqlite+aiosqlite", "postgresql+psycopg", "postgresql+asyncpg"]

T = TypeVar("T")
AnySession = Any  # Session on a sync driver, AsyncSession on an async one


def run_now(step: Coroutine[Any, Any, T]) -> T:
    """The result of a sync flavor's coroutine, which never suspends; a suspension is a bug in the test."""
    try:
        step.send(None)
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]
    step.close()
    raise RuntimeError("a step of a sync scenario awaited something that suspends")


class Unit:
    """``unit_of_work(...)`` entered with ``async with`` on an async driver, ``with`` on a sync one."""

    def __init__(self, unit: UnitOfWork, is_async: bool) -> None:
        self._unit = unit
        self._is_async = is_async

    async def __aenter__(self) -> AnySession:
        if self._is_async:
            return await self._unit.__aenter__()
        return self._unit.__enter__()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._is_async:
            await self._unit.__aexit__(exc_type, exc, tb)
        else:
            self._unit.__exit__(exc_type, exc, tb)


class Flavor:
    """A Database on one driver, and the steps the scenarios take on it."""

    def __init__(self, target: Target, db: uow.Database) -> None:
        self.target = target
        self.db = db
        self.is_async = target.is_async

    def __repr__(self) -> str:
        return f"<Flavor {self.target.driver}>"

    # -- units -----------------------------------------------------------------------------------

    def unit(self, **options: Any) -> Unit:
        """``unit_of_work(database=..., **options)`` as an async context manager yielding the session."""
        return Unit(uow.unit_of_work(database=self.db, **options), self.is_async)

    def decorated(
        self, body: Callable[[AnySession], Awaitable[T]], **options: Any
    ) -> Callable[[], Coroutine[Any, Any, T]]:
        """`body` as a function decorated with ``@unit_of_work(...)`` (a ``def`` on a sync driver)."""
        if self.is_async:

            @uow.unit_of_work(database=self.db, **options)
            async def async_function(session: AsyncSession) -> T:
                return await body(session)

            return async_function

        @uow.unit_of_work(database=self.db, **options)
        def sync_function(session: Session) -> T:
            return run_now(body(session))  # type: ignore[arg-type]

        async def call() -> T:
            return sync_function()

        return call

    def hook(self, body: Callable[[], Awaitable[None]]) -> Callable[[], Any]:
        """An ``on_commit`` callback running `body`: awaited after an async unit, run through after a sync one."""
        if self.is_async:
            return body
        return lambda: run_now(body())  # type: ignore[arg-type]

    def binding(self) -> AbstractAsyncContextManager[Any]:
        """``bound_to_transaction(db)``: everything inside runs in one outer transaction, rolled back at the end."""
        return _binding(self.db, self.is_async)

    # -- statements ------------------------------------------------------------------------------

    async def add(self, session: AnySession, name: str) -> Item:
        """Insert an item and flush, so a constraint violation surfaces here."""
        item = Item(name=name)
        session.add(item)
        await self.flush(session)
        return item

    async def flush(self, session: AnySession) -> None:
        if self.is_async:
            await session.flush()
        else:
            session.flush()

    async def rename(self, session: AnySession, old: str, new: str) -> None:
        await self.execute(session, update(Item).where(Item.name == old).values(name=new))

    async def execute(self, session: AnySession, statement: Any) -> Any:
        if isinstance(statement, str):
            statement = text(statement)
        if self.is_async:
            return await session.execute(statement)
        return session.execute(statement)

    async def commit(self, session: AnySession) -> None:
        if self.is_async:
            await session.commit()
        else:
            session.commit()

    async def rollback(self, session: AnySession) -> None:
        if self.is_async:
            await session.rollback()
        else:
            session.rollback()

    async def close(self, session: AnySession) -> None:
        if self.is_async:
            await session.close()
        else:
            session.close()

    async def names(self) -> list[str]:
        """The item names a new unit sees: what was committed (or, inside `binding`, written so far)."""
        async with self.unit() as session:
            result = await self.execute(session, select(Item.name).order_by(Item.name))
            return list(result.scalars())


@asynccontextmanager
async def _binding(db: uow.Database, is_async: bool) -> AsyncIterator[Any]:
    if is_async:
        async with bound_to_transaction(db) as connection:
            yield connection
    else:
        with bound_to_transaction(db) as connection:
            yield connection


@pytest.fixture(params=DRIVERS)
async def flavor(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Flavor]:
    """Each scenario once per driver: pysqlite, aiosqlite, psycopg, asyncpg; leak-checked afterwards."""
    target = drivers.target(request, request.param, tmp_path)
    if target.is_async:
        db = await drivers.open_async(target)
        yield Flavor(target, db)
        await drivers.close_async(db, target)
    else:
        db = drivers.open_sync(target)
        yield Flavor(target, db)
        drivers.close_sync(db, target)

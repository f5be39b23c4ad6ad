"""A finished unit leaves no reference cycle: its session goes with its last reference.

A session's ``info`` names the unit's `Transaction` (the ownership marks, docs/design.md), so a
transaction still holding the session after the unit would make a cycle: every unit's session,
identity map and event dispatch would wait for the garbage collector, and in a long-running server
they are promoted to the oldest generation and cost full collections (issue 12's real-server case:
13 objects of cyclic garbage per request before). A hand-written unit leaves none; neither may ours,
committed or rolled back, sync or async, decorated, provided or entered with ``with``.
"""

from __future__ import annotations

import gc
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator

import pytest

import uow
from tests.models import AsyncItemService, ItemService


class Boom(Exception):
    pass


@pytest.fixture
def collector() -> Iterator[None]:
    """The collector off while a test counts (gc.DEBUG_SAVEALL keeps what it would have freed)."""
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        gc.enable()


def _cyclic_garbage() -> Counter[str]:
    """What a collection now would free, by type: only objects no reference count could free."""
    gc.set_debug(gc.DEBUG_SAVEALL)
    gc.collect()
    gc.set_debug(0)
    found = Counter(type(obj).__qualname__ for obj in gc.garbage)
    gc.garbage.clear()
    return found


def _run_sync(fn: Callable[[], None], times: int = 5) -> None:
    for _ in range(times):
        try:
            fn()
        except Boom:
            pass


async def _run_async(fn: Callable[[], Awaitable[None]], times: int = 5) -> None:
    for _ in range(times):
        try:
            await fn()
        except Boom:
            pass


@pytest.mark.usefixtures("collector")
@pytest.mark.parametrize("fail", [False, True], ids=["committed", "rolled back"])
def test_sync_units_leave_no_cycle(sqlite_db: uow.Database, fail: bool) -> None:
    names = (f"item {n}" for n in range(100))

    @uow.with_services(ItemService, database=sqlite_db)
    def decorated(items: ItemService) -> None:
        items.add(next(names))
        if fail:
            raise Boom

    def provided() -> None:
        with uow.provide_services(ItemService, database=sqlite_db) as (items,):
            items.add(next(names))
            if fail:
                raise Boom

    def block() -> None:
        with uow.unit_of_work(database=sqlite_db) as session:
            ItemService(session).add(next(names))
            uow.on_commit(lambda: None, database=sqlite_db)
            if fail:
                raise Boom

    @uow.with_services(ItemService, database=sqlite_db)
    def outer(items: ItemService) -> None:
        items.add(next(names))
        inner()

    @uow.with_services(ItemService, database=sqlite_db, propagation="nested")
    def inner(items: ItemService) -> None:
        items.add(next(names))
        if fail:
            raise Boom

    for fn in (decorated, provided, block, outer):
        _run_sync(fn, times=1)  # set up what later calls reuse (compiled statements, listeners)
        _cyclic_garbage()
        _run_sync(fn)
        assert _cyclic_garbage() == Counter(), fn.__name__


@pytest.mark.usefixtures("collector")
@pytest.mark.parametrize("fail", [False, True], ids=["committed", "rolled back"])
async def test_async_units_leave_no_cycle(async_sqlite_db: uow.Database, fail: bool) -> None:
    names = (f"item {n}" for n in range(100))

    @uow.with_services(AsyncItemService, database=async_sqlite_db)
    async def decorated(items: AsyncItemService) -> None:
        await items.add(next(names))
        if fail:
            raise Boom

    async def provided() -> None:
        async with uow.provide_services(AsyncItemService, database=async_sqlite_db) as (items,):
            await items.add(next(names))
            if fail:
                raise Boom

    for fn in (decorated, provided):
        await _run_async(fn, times=1)
        _cyclic_garbage()
        await _run_async(fn)
        assert _cyclic_garbage() == Counter(), fn.__name__

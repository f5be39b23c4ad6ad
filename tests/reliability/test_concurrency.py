"""Many units at once: 1,000 async units on one event loop, and 16 threads of sync units, on PostgreSQL.

Each unit writes a row, calls a joined unit, every fifth one a nested (savepoint) unit that
writes too, bumps one of a few shared counters, and every seventh unit fails at its end. Afterwards the totals are
exact, every unit saw exactly one session (shared with the units that joined it, and with
no other unit), and the pool is empty.
"""

from __future__ import annotations

import asyncio
import itertools
import threading
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

import uow
from tests.conftest import Backend, finish_async_db, finish_sync_db, make_async_db, make_sync_db
from tests.models import AsyncItemService, Counter, Item, ItemService

ASYNC_UNITS = 1000
THREADS = 16
UNITS_PER_THREAD = 25
COUNTERS = 16


class Boom(Exception):
    pass


def fails(unit_id: int) -> bool:
    return unit_id % 7 == 0


def has_savepoint(unit_id: int) -> bool:
    return unit_id % 5 == 0


def expected_rows(units: range) -> int:
    """One row per committed unit, plus one per savepoint in it."""
    return sum(1 + has_savepoint(i) for i in units if not fails(i))


class Sightings:
    """Which session (by a token kept in its ``info``) each unit and its inner units saw."""

    def __init__(self) -> None:
        self.by_unit: dict[int, set[int]] = defaultdict(set)
        self._tokens = itertools.count()
        self._lock = threading.Lock()
        self.active = 0
        self.most_active = 0

    def saw(self, unit_id: int, info: dict[str, object]) -> None:
        with self._lock:
            token = info.setdefault("reliability_token", next(self._tokens))
            assert isinstance(token, int)
            self.by_unit[unit_id].add(token)

    def enter(self) -> None:
        with self._lock:
            self.active += 1
            self.most_active = max(self.most_active, self.active)

    def leave(self) -> None:
        with self._lock:
            self.active -= 1

    def assert_one_session_per_unit(self, units: int) -> None:
        assert len(self.by_unit) == units
        for unit_id, tokens in self.by_unit.items():
            assert len(tokens) == 1, f"unit {unit_id} and the units that joined it saw {len(tokens)} sessions"
        all_tokens = [next(iter(tokens)) for tokens in self.by_unit.values()]
        assert len(set(all_tokens)) == units, "two units that did not join each other shared a session"


# -- async ---------------------------------------------------------------------------------------


async def test_a_thousand_async_units_on_one_loop(pg_backend: Backend) -> None:
    database = await make_async_db(pg_backend, engine_options={"pool_size": 8, "max_overflow": 2})
    sightings = Sightings()
    try:
        async with database.session_factory() as session, session.begin():
            assert isinstance(session, AsyncSession)
            session.add_all([Counter(id=i, value=0) for i in range(COUNTERS)])

        @uow.with_services(AsyncItemService, database=database)
        async def joined(unit_id: int, items: AsyncItemService) -> None:
            sightings.saw(unit_id, items.session.sync_session.info)

        @uow.with_services(AsyncItemService, database=database, propagation="nested")
        async def nested(unit_id: int, items: AsyncItemService) -> None:
            sightings.saw(unit_id, items.session.sync_session.info)
            await items.add(f"nested-{unit_id}")

        @uow.with_services(AsyncItemService, database=database)
        async def unit(unit_id: int, items: AsyncItemService) -> None:
            sightings.enter()
            try:
                sightings.saw(unit_id, items.session.sync_session.info)
                await items.add(f"unit-{unit_id}")
                await asyncio.sleep(0)  # let the other units interleave here too
                await joined(unit_id)
                if has_savepoint(unit_id):
                    await nested(unit_id)
                counter = update(Counter).where(Counter.id == unit_id % COUNTERS).values(value=Counter.value + 1)
                await items.session.execute(counter)
                if fails(unit_id):
                    raise Boom(unit_id)
            finally:
                sightings.leave()

        results = await asyncio.gather(*(unit(i) for i in range(ASYNC_UNITS)), return_exceptions=True)

        failures = [r for r in results if isinstance(r, BaseException)]
        assert all(isinstance(f, Boom) for f in failures), [f for f in failures if not isinstance(f, Boom)][:3]
        succeeded = ASYNC_UNITS - len(failures)
        assert len(failures) == sum(fails(i) for i in range(ASYNC_UNITS))
        async with database.session_factory() as session:
            assert isinstance(session, AsyncSession)
            assert await session.scalar(select(func.count()).select_from(Item)) == expected_rows(range(ASYNC_UNITS))
            assert await session.scalar(select(func.sum(Counter.value))) == succeeded
        sightings.assert_one_session_per_unit(ASYNC_UNITS)
        assert sightings.most_active > 8, "the units never overlapped"
        print(f"\n{ASYNC_UNITS} async units, up to {sightings.most_active} at once, {succeeded} committed")
    finally:
        await finish_async_db(database, pg_backend)


# -- threads ---------------------------------------------------------------------------------------


def test_sixteen_threads_of_sync_units(pg_backend: Backend) -> None:
    database = make_sync_db(pg_backend, engine_options={"pool_size": 8, "max_overflow": 4})
    sightings = Sightings()
    try:
        with database.session_factory() as session, session.begin():
            assert isinstance(session, Session)
            session.add_all([Counter(id=i, value=0) for i in range(COUNTERS)])

        @uow.with_services(ItemService, database=database)
        def joined(unit_id: int, items: ItemService) -> None:
            sightings.saw(unit_id, items.session.info)

        @uow.with_services(ItemService, database=database, propagation="nested")
        def nested(unit_id: int, items: ItemService) -> None:
            sightings.saw(unit_id, items.session.info)
            items.add(f"nested-{unit_id}")

        @uow.with_services(ItemService, database=database)
        def unit(unit_id: int, items: ItemService) -> None:
            sightings.enter()
            try:
                sightings.saw(unit_id, items.session.info)
                items.add(f"unit-{unit_id}")
                joined(unit_id)
                if has_savepoint(unit_id):
                    nested(unit_id)
                counter = update(Counter).where(Counter.id == unit_id % COUNTERS).values(value=Counter.value + 1)
                items.session.execute(counter)
                if fails(unit_id):
                    raise Boom(unit_id)
            finally:
                sightings.leave()

        start = threading.Barrier(THREADS)

        def worker(thread: int) -> int:
            start.wait()
            failed = 0
            for n in range(UNITS_PER_THREAD):
                try:
                    unit(thread * UNITS_PER_THREAD + n)
                except Boom:
                    failed += 1
            return failed

        with ThreadPoolExecutor(THREADS) as pool:
            failed = sum(pool.map(worker, range(THREADS)))

        total = THREADS * UNITS_PER_THREAD
        succeeded = total - failed
        assert failed == sum(fails(i) for i in range(total))
        with database.session_factory() as session:
            assert isinstance(session, Session)
            assert session.scalar(select(func.count()).select_from(Item)) == expected_rows(range(total))
            assert session.scalar(select(func.sum(Counter.value))) == succeeded
        sightings.assert_one_session_per_unit(total)
        assert sightings.most_active > 1, "the threads never overlapped"
        print(f"\n{THREADS} threads, {total} sync units, up to {sightings.most_active} at once, {succeeded} committed")
    finally:
        finish_sync_db(database, pg_backend)

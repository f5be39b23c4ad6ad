"""Case: 1, 10, 100 and 1,000 async units of work at once on PostgreSQL (asyncpg).

One operation is a batch of ``level`` units started together (``asyncio.gather``), each
inserting one row and committing, on one engine whose pool holds 8 connections plus 16
overflow (a unit waits for a connection like it would in a busy service). The time is per
unit: the batch's time over ``level``. Both variants run in turns on the same engine.

Memory per in-flight unit (``tracemalloc``, before the rounds): ``level`` units are begun
and held open at once (session made, service built and kept, the task parked on an event
before any SQL), the traced memory then, over the memory before, divided by ``level``; the
smaller of two measurements per variant, taken in turns after an untraced warm-up. Both
variants hand their service to the gate, so both keep it while held (the decorated function
has it as its parameter; the hand-written unit dropped it before 2026-12-01, which charged
the service's 80 bytes to uow).
"""

from __future__ import annotations

import asyncio
import gc
import tracemalloc
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine

from benchmarks.common import AsyncItems, Base, async_factory, clear_async, postgres_database
from benchmarks.harness import Case, Setup, Variant
from uow import Database, with_services

LEVELS = (1, 10, 100, 1000)
POOL_SIZE, MAX_OVERFLOW = 8, 16
UNITS_PER_ROUND = 100  # units per variant per round (full run); a level-1000 round runs one batch (15 rounds)


class Gate:
    """Holds `expected` units open until all of them have arrived."""

    def __init__(self, expected: int) -> None:
        self.expected = expected
        self.arrived = 0
        self.all_in = asyncio.Event()
        self.release = asyncio.Event()

    async def hold(self, service: object) -> None:
        """Wait until released, holding `service` (a unit keeps its service while it runs)."""
        self.arrived += 1
        if self.arrived == self.expected:
            self.all_in.set()
        await self.release.wait()


Held = Callable[[Gate], Awaitable[Any]]


def units(factory: async_sessionmaker[AsyncSession], db: Database) -> dict[str, tuple[Callable[[], Any], Held]]:
    """For each variant: one unit inserting a row, and one unit held open at the gate (no SQL)."""

    async def by_hand() -> None:
        async with factory() as session:
            AsyncItems(session).add("x")
            await session.commit()

    async def by_hand_held(gate: Gate) -> None:
        async with factory() as session:
            await gate.hold(AsyncItems(session))
            await session.commit()

    @with_services(AsyncItems, database=db)
    async def decorated(items: AsyncItems) -> None:
        items.add("x")

    @with_services(AsyncItems, database=db)
    async def decorated_held(gate: Gate, items: AsyncItems) -> None:
        await gate.hold(items)

    return {"hand-written": (by_hand, by_hand_held), "@with_services": (decorated, decorated_held)}


def batch(unit: Callable[[], Any], level: int) -> Callable[[], Awaitable[Any]]:
    if level == 1:
        return unit

    async def run_batch() -> None:
        await asyncio.gather(*(unit() for _ in range(level)))

    return run_batch


async def in_flight_bytes(held: Held, level: int, *, traced: bool) -> float:
    """Traced memory per unit while `level` units are held open at once (0.0 when not traced)."""
    gate = Gate(level)
    gc.collect()
    if traced:
        tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0] if traced else 0
        tasks = [asyncio.ensure_future(held(gate)) for _ in range(level)]
        await gate.all_in.wait()
        gc.collect()
        during = tracemalloc.get_traced_memory()[0] if traced else 0
    finally:
        if traced:
            tracemalloc.stop()
    gate.release.set()
    await asyncio.gather(*tasks)
    return (during - before) / level


async def memory_per_unit(held: dict[str, Held], level: int) -> dict[str, float]:
    names = list(held)
    for name in names:  # warm-up: first-use caches are not charged to a unit
        await in_flight_bytes(held[name], level, traced=False)
    found: dict[str, list[float]] = {name: [] for name in names}
    for order in (names, names[::-1]):
        for name in order:
            found[name].append(await in_flight_bytes(held[name], level, traced=True))
    return {name: min(values) for name, values in found.items()}


@asynccontextmanager
async def _engine() -> AsyncIterator[AsyncEngine]:
    with postgres_database() as url:  # `Unavailable` when the server is not reachable
        engine = create_async_engine(
            url,
            pool_size=POOL_SIZE,
            max_overflow=MAX_OVERFLOW,
            pool_timeout=120,
            # The commits do not wait for the WAL to reach the disk: the server's fsyncs (shared with
            # every other job on the machine) would otherwise set the pace of the wall clock.
            connect_args={"server_settings": {"synchronous_commit": "off"}},
        )
        try:
            async with engine.begin() as connection:
                await connection.run_sync(Base.metadata.create_all)
            yield engine
        finally:
            await engine.dispose()


def _setup(level: int) -> Callable[[], Any]:
    @asynccontextmanager
    async def setup() -> AsyncIterator[Setup]:
        async with _engine() as engine:
            factory = async_factory(engine)
            db = Database(session_factory=factory)
            made = units(factory, db)
            names = {base: f"{base}, {level} concurrent" for base in made}
            memory = await memory_per_unit({names[base]: held for base, (_, held) in made.items()}, level)
            variants = [
                Variant(
                    names[base],
                    batch(unit, level),
                    baseline=names["hand-written"],
                    calls=level,
                    kind="baseline" if base == "hand-written" else "uow",
                )
                for base, (unit, _) in made.items()
            ]
            notes = [
                f"memory per in-flight unit ({level} held open at once): "
                + ", ".join(f"{name} {value:,.0f} bytes" for name, value in memory.items())
            ]
            yield Setup(
                variants,
                reset=lambda: clear_async(engine),
                notes=notes,
                metrics={f"bytes_per_unit:{name}": value for name, value in memory.items()},
            )

    return setup


CASES = [
    Case(
        f"concurrency-{level}-asyncpg",
        f"{level:,} async unit{'s' if level > 1 else ''} at once, PostgreSQL/asyncpg",
        f"a batch of {level} units started at once (insert a row, commit; pool {POOL_SIZE}+{MAX_OVERFLOW}), per unit",
        _setup(level),
        True,
        max(1, UNITS_PER_ROUND // level),
        "unit",
        ("asyncpg",),
        smoke=level < 1000,
        max_rounds=None if level < 1000 else 15,
    )
    for level in LEVELS
]

"""The outbox's costs: what ``outbox.enqueue`` adds to a unit against an ``on_commit`` enqueue, and relay throughput.

`outbox-*`: one unit inserts a row and enqueues one job. The baseline hands the job to the
runner in an ``on_commit`` hook (what users write without an outbox, and what loses the job
when the process dies after COMMIT); ``outbox.enqueue`` writes the outbox row in the unit,
delivers after COMMIT and deletes the row in a short transaction of its own. The runner does
nothing, so the ratio is the database work the guarantee costs.

`outbox-relay-asyncpg`: one operation writes 100 messages without delivering them (the
baseline), then the relay delivers them with ``relay_once()``; the cost over the baseline
is the relay's time for 100 messages, so its throughput is 100 / (+µs) x 10^6 messages/s.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from sqlalchemy import MetaData, delete
from sqlalchemy.ext.asyncio import AsyncEngine

from benchmarks.common import AsyncItems, aiosqlite_engine, async_factory, asyncpg_engine, clear_async
from benchmarks.harness import Case, Setup, Variant
from uow import Database, on_commit, unit_of_work, with_services
from uow.outbox import Message, Outbox, outbox_table

_metadata = MetaData()
_table = outbox_table(_metadata, "bench_outbox")
BATCH = 100


class NullRunner:
    """A broker that accepts every job at once: what is left is the outbox's own cost."""

    async def deliver(self, message: Message, /) -> None:
        return None


async def _create_table(engine: AsyncEngine) -> None:
    async with engine.begin() as connection:
        await connection.run_sync(_metadata.create_all)


async def _clear(engine: AsyncEngine) -> None:
    await clear_async(engine)
    async with engine.begin() as connection:
        await connection.execute(delete(_table))


async def _unit_variants(engine: AsyncEngine) -> Setup:
    await _create_table(engine)
    db = Database(session_factory=async_factory(engine))
    runner = NullRunner()
    outbox = Outbox(db, runner, table=_table)
    message = Message("0" * 32, "send_welcome_mail", {"user_id": 1})

    @with_services(AsyncItems, database=db)
    async def with_on_commit(items: AsyncItems) -> None:
        items.add("x")

        async def enqueue() -> None:
            await runner.deliver(message)

        on_commit(enqueue, database=db)

    @with_services(AsyncItems, database=db)
    async def with_outbox(items: AsyncItems) -> None:
        items.add("x")
        outbox.enqueue("send_welcome_mail", user_id=1)

    return Setup(
        [
            Variant("on_commit enqueue", with_on_commit, kind="baseline"),
            Variant("on_commit enqueue again (A/A control)", with_on_commit, kind="control"),
            Variant("outbox.enqueue (fast path)", with_outbox),
        ],
        reset=lambda: _clear(engine),
    )


@asynccontextmanager
async def unit_aiosqlite() -> AsyncIterator[Setup]:
    async with aiosqlite_engine() as engine:
        yield await _unit_variants(engine)


@asynccontextmanager
async def unit_asyncpg() -> AsyncIterator[Setup]:
    async with asyncpg_engine() as engine:
        yield await _unit_variants(engine)


@asynccontextmanager
async def relay_asyncpg() -> AsyncIterator[Setup]:
    async with asyncpg_engine() as engine:
        await _create_table(engine)
        db = Database(session_factory=async_factory(engine))
        # lease=1 µs: the written rows are due at once, as a crashed process's rows are once their lease ends.
        writer = Outbox(db, NullRunner(), table=_table, fast_path=False, lease=1e-6)
        relay = Outbox(db, NullRunner(), table=_table, batch_size=BATCH)

        async def write() -> None:
            async with unit_of_work(database=db):
                for n in range(BATCH):
                    writer.enqueue("send_welcome_mail", user_id=n)

        async def write_and_relay() -> None:
            await write()
            delivered = await relay.relay_once()
            assert delivered == BATCH, delivered

        yield Setup(
            [
                Variant(f"write {BATCH} messages", write, kind="baseline"),
                Variant(f"write {BATCH} messages, relay_once() delivers them", write_and_relay),
            ],
            reset=lambda: _clear(engine),
            notes=[f"relay throughput in messages/s: {BATCH} x 1,000,000 / (+µs of the relay variant)"],
        )


_MEASURES = "one unit inserting a row and enqueueing one job: in an on_commit hook, and with outbox.enqueue"

CASES = [
    Case(
        "outbox-aiosqlite", "outbox enqueue, async, in-memory aiosqlite", _MEASURES, unit_aiosqlite, True, 100, "unit"
    ),
    Case("outbox-asyncpg", "outbox enqueue, async, PostgreSQL/asyncpg", _MEASURES, unit_asyncpg, True, 15, "unit"),
    Case(
        "outbox-relay-asyncpg",
        f"outbox relay, {BATCH} messages per pass, PostgreSQL/asyncpg",
        f"{BATCH} messages written without delivery, then delivered by one relay_once()",
        relay_asyncpg,
        True,
        3,
        "unit",
    ),
]

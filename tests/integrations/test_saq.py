"""SAQ jobs decorated with `@with_services`, enqueued on a real Redis and run by a real SAQ Worker."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from saq import Queue, Status, Worker
from saq.types import Context

import uow
from tests.models import AsyncItemService, ItemService

pytestmark = pytest.mark.redis


@uow.with_services(AsyncItemService)
async def add_items(ctx: Context, *, names: list[str], items: AsyncItemService, fail: bool = False) -> dict[str, Any]:
    for name in names:
        await items.add(name)
    if fail:
        raise RuntimeError("failed after adding")
    job = ctx["job"]
    return {"job": job.function, "key": job.key, "marker": ctx.get("marker"), "count": await items.count()}


@uow.with_services(ItemService)
def add_item_sync(ctx: Context, *, name: str, items: ItemService) -> str:
    items.add(name)
    return ctx["job"].function


async def mark_context(ctx: Context) -> None:
    ctx["marker"] = "from startup"  # type: ignore[typeddict-unknown-key]


@pytest.fixture
async def queue(redis_url: str, redis_prefix: str) -> AsyncIterator[Queue]:
    queue = Queue.from_url(redis_url, name=redis_prefix)
    await queue.connect()
    # SAQ's sweep, which a starting worker runs at once, aborts a job caught between being
    # dequeued and marked active; running it here takes its 60-second lock for this queue.
    await queue.sweep()
    yield queue
    await queue.disconnect()


async def run_until_empty(queue: Queue) -> Worker:
    """A real SAQ worker in burst mode: it processes what is queued and stops."""
    worker = Worker(queue, functions=[add_items, add_item_sync], startup=mark_context, burst=True, dequeue_timeout=0.2)
    await asyncio.wait_for(worker.start(), timeout=30)
    return worker


async def names_in(database: uow.Database) -> list[str]:
    async with uow.provide_services(AsyncItemService, database=database) as (items,):
        return await items.names()


def test_the_job_keeps_the_users_name_and_signature() -> None:
    worker = Worker(Queue.from_url("redis://127.0.0.1:6379", name="unused"), functions=[add_items, add_item_sync])
    assert set(worker.functions) == {"add_items", "add_item_sync"}


async def test_worker_runs_the_job_and_commits(queue: Queue, async_db: uow.Database) -> None:
    uow.configure(async_db)
    job = await queue.enqueue("add_items", names=["a", "b"])
    assert job is not None
    await run_until_empty(queue)
    await job.refresh()
    assert job.status == Status.COMPLETE, job.error
    assert job.result == {"job": "add_items", "key": job.key, "marker": "from startup", "count": 2}
    assert await names_in(async_db) == ["a", "b"]


async def test_a_failing_job_rolls_back(queue: Queue, async_db: uow.Database) -> None:
    uow.configure(async_db)
    failing = await queue.enqueue("add_items", names=["a"], fail=True)
    passing = await queue.enqueue("add_items", names=["b"])
    assert failing is not None and passing is not None
    await run_until_empty(queue)
    await failing.refresh()
    await passing.refresh()
    assert failing.status == Status.FAILED
    assert "failed after adding" in (failing.error or "")
    assert passing.status == Status.COMPLETE
    assert await names_in(async_db) == ["b"]


async def test_a_sync_job_runs_in_the_workers_threads(queue: Queue, sqlite_db: uow.Database) -> None:
    uow.configure(sqlite_db)
    job = await queue.enqueue("add_item_sync", name="threaded")
    assert job is not None
    await run_until_empty(queue)
    await job.refresh()
    assert job.status == Status.COMPLETE, job.error
    assert job.result == "add_item_sync"
    with uow.provide_services(ItemService) as (items,):
        assert items.names() == ["threaded"]

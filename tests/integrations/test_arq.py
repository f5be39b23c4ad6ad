"""arq jobs decorated with `@with_services`, enqueued on a real Redis and run by a real arq Worker."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from arq import ArqRedis, Retry, create_pool
from arq.connections import RedisSettings
from arq.jobs import Job, JobStatus
from arq.worker import Worker, func

import uow
from tests.models import AsyncItemService

pytestmark = [
    pytest.mark.redis,
    # arq 0.28's Worker.close() calls redis-py's deprecated close(); nothing of ours.
    pytest.mark.filterwarnings("ignore:Call to deprecated close:DeprecationWarning"),
]


@uow.with_services(AsyncItemService)
async def add_items(
    ctx: dict[str, Any], *, names: list[str], items: AsyncItemService, fail: bool = False
) -> dict[str, Any]:
    for name in names:
        await items.add(name)
    if fail:
        raise RuntimeError("failed after adding")
    return {"job_id": ctx["job_id"], "try": ctx["job_try"], "marker": ctx["marker"], "count": await items.count()}


@uow.with_services(AsyncItemService)
async def add_once_retried(ctx: dict[str, Any], name: str, items: AsyncItemService) -> int:
    # The first try's unit rolls back with arq's Retry; the second commits.
    await items.add(f"{name}-{ctx['job_try']}")
    if ctx["job_try"] == 1:
        raise Retry(defer=0)
    return int(ctx["job_try"])


@pytest.fixture
async def arq_pool(redis_url: str, redis_prefix: str) -> AsyncIterator[ArqRedis]:
    pool = await create_pool(RedisSettings.from_dsn(redis_url), default_queue_name=redis_prefix)
    yield pool
    await pool.aclose()


async def run_until_empty(pool: ArqRedis) -> Worker:
    """A real arq worker in burst mode: it runs what is queued and stops."""
    worker = Worker(
        functions=[add_items, func(add_once_retried, max_tries=2)],
        redis_pool=pool,
        queue_name=pool.default_queue_name,
        burst=True,
        poll_delay=0.05,
        handle_signals=False,
        ctx={"marker": "from the worker"},
        health_check_key=f"{pool.default_queue_name}:health-check",
        log_results=False,
    )
    try:
        await asyncio.wait_for(worker.main(), timeout=30)
    finally:
        await worker.close()
    return worker


async def enqueue(pool: ArqRedis, function: str, job_id: str, *args: Any, **kwargs: Any) -> Job:
    # The job id carries the test's prefix, so the key clean-up finds arq's job and result keys.
    job = await pool.enqueue_job(function, *args, _job_id=f"{pool.default_queue_name}-{job_id}", **kwargs)
    assert job is not None
    return job


async def names_in(database: uow.Database) -> list[str]:
    async with uow.provide_services(AsyncItemService, database=database) as (items,):
        return await items.names()


def test_functions_are_registered_under_the_users_names() -> None:
    worker = Worker(functions=[add_items, add_once_retried], queue_name="unused", handle_signals=False)
    assert set(worker.functions) == {"add_items", "add_once_retried"}


async def test_worker_runs_the_job_and_commits(arq_pool: ArqRedis, async_db: uow.Database) -> None:
    uow.configure(async_db)
    job = await enqueue(arq_pool, "add_items", "1", names=["a", "b"])
    worker = await run_until_empty(arq_pool)
    assert worker.jobs_complete == 1
    assert await job.result(timeout=5) == {"job_id": job.job_id, "try": 1, "marker": "from the worker", "count": 2}
    assert await names_in(async_db) == ["a", "b"]


async def test_a_failing_job_rolls_back(arq_pool: ArqRedis, async_db: uow.Database) -> None:
    uow.configure(async_db)
    failing = await enqueue(arq_pool, "add_items", "1", names=["a"], fail=True)
    passing = await enqueue(arq_pool, "add_items", "2", names=["b"])
    worker = await run_until_empty(arq_pool)
    assert (worker.jobs_complete, worker.jobs_failed) == (1, 1)
    with pytest.raises(RuntimeError, match="failed after adding"):
        await failing.result(timeout=5)
    assert await passing.status() == JobStatus.complete
    assert await names_in(async_db) == ["b"]


async def test_a_retried_job_keeps_only_the_last_tries_work(arq_pool: ArqRedis, async_db: uow.Database) -> None:
    uow.configure(async_db)
    job = await enqueue(arq_pool, "add_once_retried", "1", "x")
    worker = await run_until_empty(arq_pool)
    assert worker.jobs_retried == 1
    assert await job.result(timeout=5) == 2
    assert await names_in(async_db) == ["x-2"]

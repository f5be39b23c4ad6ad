"""APScheduler 3.x jobs decorated with `@with_services`, run by a real scheduler on a 'date' trigger."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest
from apscheduler.events import EVENT_JOB_ERROR, EVENT_JOB_EXECUTED, JobExecutionEvent
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.schedulers.background import BackgroundScheduler

import uow
from tests.models import AsyncItemService, ItemService


@uow.with_services(ItemService)
def add_item(items: ItemService, name: str, fail: bool = False) -> int:
    items.add(name)
    if fail:
        raise RuntimeError("failed after adding")
    return items.count()


@uow.with_services(AsyncItemService)
async def add_item_async(items: AsyncItemService, name: str, fail: bool = False) -> int:
    await items.add(name)
    if fail:
        raise RuntimeError("failed after adding")
    return await items.count()


def run_jobs_in_background(*jobs: dict[str, Any]) -> list[JobExecutionEvent]:
    """Run `jobs` (add_job keyword arguments) once each, now, on a real BackgroundScheduler."""
    events: list[JobExecutionEvent] = []
    done = threading.Event()

    def record(event: JobExecutionEvent) -> None:
        events.append(event)
        if len(events) == len(jobs):
            done.set()

    scheduler = BackgroundScheduler()
    scheduler.add_listener(record, EVENT_JOB_EXECUTED | EVENT_JOB_ERROR)
    scheduler.start()
    try:
        for job in jobs:
            scheduler.add_job(add_item, "date", **job)
        assert done.wait(timeout=20), "the scheduler did not run the jobs"
    finally:
        scheduler.shutdown(wait=True)
    return events


def names_in(database: uow.Database) -> list[str]:
    with uow.provide_services(ItemService, database=database) as (items,):
        return items.names()


def test_background_scheduler_runs_the_job_and_commits(sync_db: uow.Database) -> None:
    uow.configure(sync_db)
    (event,) = run_jobs_in_background({"kwargs": {"name": "a"}})
    assert event.exception is None
    assert event.retval == 1
    assert names_in(sync_db) == ["a"]


def test_a_failing_job_rolls_back(sync_db: uow.Database) -> None:
    uow.configure(sync_db)
    events = run_jobs_in_background({"args": ["a"], "kwargs": {"fail": True}}, {"args": ["b"]})
    assert sorted(type(e.exception).__name__ for e in events) == ["NoneType", "RuntimeError"]
    assert names_in(sync_db) == ["b"]


def test_add_job_checks_the_visible_signature(sqlite_db: uow.Database) -> None:
    # APScheduler checks the arguments against inspect.signature when the job is added.
    scheduler = BackgroundScheduler()
    with pytest.raises(ValueError, match="name"):
        scheduler.add_job(add_item, "date", kwargs={})
    with pytest.raises(ValueError, match="items"):
        scheduler.add_job(add_item, "date", kwargs={"name": "a", "items": None})
    job = scheduler.add_job(add_item, "date", kwargs={"name": "a"})
    assert job.name == "add_item"


async def test_asyncio_scheduler_runs_the_async_job_and_commits(async_db: uow.Database) -> None:
    uow.configure(async_db)
    events: list[JobExecutionEvent] = []
    done = asyncio.Event()

    def record(event: JobExecutionEvent) -> None:
        events.append(event)
        if len(events) == 2:
            done.set()

    scheduler = AsyncIOScheduler()
    scheduler.add_listener(record, EVENT_JOB_EXECUTED | EVENT_JOB_ERROR)
    scheduler.start()
    try:
        scheduler.add_job(add_item_async, "date", args=["a"])
        scheduler.add_job(add_item_async, "date", args=["b"], kwargs={"fail": True})
        await asyncio.wait_for(done.wait(), timeout=20)
    finally:
        scheduler.shutdown(wait=False)
    assert sorted(type(e.exception).__name__ for e in events) == ["NoneType", "RuntimeError"]
    async with uow.provide_services(AsyncItemService) as (items,):
        assert await items.names() == ["a"]

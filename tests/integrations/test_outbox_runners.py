"""The outbox's SAQ, arq and Celery runners against real workers on the real Redis.

Jobs record each run in `RUNS` (the workers run in this process), so "exactly once" is counted
where the job ran, not where it was sent.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from arq import ArqRedis, create_pool
from arq.connections import RedisSettings
from arq.worker import Worker as ArqWorker
from celery import Celery, Task
from celery.contrib.testing.worker import start_worker
from saq import Queue
from saq import Worker as SaqWorker
from saq.types import Context
from sqlalchemy import Engine, select
from sqlalchemy.ext.asyncio import AsyncEngine

import uow
from tests import redis_server
from tests.integrations.test_celery import make_app
from uow.outbox import ArqRunner, CeleryRunner, Message, Outbox, PayloadError, SaqRunner

pytestmark = [
    pytest.mark.redis,
    pytest.mark.filterwarnings("ignore:Call to deprecated close:DeprecationWarning"),
]

RUNS: list[tuple[str, Any]] = []
CHILD = Path(__file__).with_name("outbox_crash_child.py")


@pytest.fixture(autouse=True)
def _fresh_runs() -> Iterator[None]:
    RUNS.clear()
    yield
    RUNS.clear()


async def record(ctx: Context, *, value: str) -> None:
    RUNS.append((ctx["job"].key, value))


async def record_arq(ctx: dict[str, Any], *, value: str) -> None:
    RUNS.append((ctx["job_id"], value))


@pytest.fixture
async def db(async_sqlite_db: uow.Database) -> uow.Database:
    await Outbox(async_sqlite_db, SaqRunner(None)).create_table()
    return async_sqlite_db


async def outbox_rows(database: uow.Database) -> list[Any]:
    engine = database.engine
    assert isinstance(engine, AsyncEngine)
    outbox = Outbox(database, SaqRunner(None))
    async with engine.connect() as connection:
        return list(await connection.execute(select(outbox.table)))


# -- SAQ -------------------------------------------------------------------------------------


@pytest.fixture
async def queue(redis_url: str, redis_prefix: str) -> AsyncIterator[Queue]:
    queue = Queue.from_url(redis_url, name=redis_prefix)
    await queue.connect()
    await queue.sweep()  # see tests/integrations/test_saq.py
    yield queue
    await queue.disconnect()


async def run_saq(queue: Queue) -> None:
    worker = SaqWorker(queue, functions=[record], burst=True, dequeue_timeout=0.2)
    await asyncio.wait_for(worker.start(), timeout=30)


async def test_saq_worker_runs_a_committed_job_once_and_never_a_rolled_back_one(queue: Queue, db: uow.Database) -> None:
    outbox = Outbox(db, SaqRunner(queue), lease=0.05)
    with pytest.raises(RuntimeError):
        async with uow.unit_of_work(database=db):
            outbox.enqueue("record", value="rolled back")
            raise RuntimeError("the unit fails")
    async with uow.unit_of_work(database=db):
        message_id = outbox.enqueue("record", value="committed")
    await asyncio.sleep(0.1)
    assert await outbox.relay_once() == 0
    await run_saq(queue)
    assert RUNS == [(message_id, "committed")]
    assert await outbox_rows(db) == []


async def test_saq_drops_a_repeat_while_the_job_is_queued(queue: Queue, db: uow.Database) -> None:
    runner = SaqRunner(queue, timeout=30)
    message = Message(
        "a" * 32, "record_with_timeout_argument", {"value": "twice", "timeout": "a payload key, not the job's"}
    )
    await runner.deliver(message)
    await runner.deliver(message)  # the relay delivering again after a crash, say
    worker = SaqWorker(queue, functions=[record_with_timeout_argument], burst=True, dequeue_timeout=0.2)
    await asyncio.wait_for(worker.start(), timeout=30)
    assert RUNS == [("a" * 32, "twice|a payload key, not the job's")]


async def record_with_timeout_argument(ctx: Context, *, value: str, timeout: str) -> None:
    RUNS.append((ctx["job"].key, f"{value}|{timeout}"))


async def test_a_process_killed_after_commit_has_its_job_delivered_by_the_relay(queue: Queue, db: uow.Database) -> None:
    engine = db.engine
    assert isinstance(engine, AsyncEngine)
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        str(CHILD),
        engine.url.render_as_string(hide_password=False),
        "1.0",
        stdout=asyncio.subprocess.PIPE,
        cwd=Path(__file__).parents[2],
        env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])},
    )
    try:
        assert child.stdout is not None
        line = await asyncio.wait_for(child.stdout.readline(), timeout=30)
        assert line.startswith(b"committed "), line
        message_id = line.split()[1].decode()
        (row,) = await outbox_rows(db)  # COMMIT went through before the fast path began
        assert row.id == message_id
    finally:
        child.send_signal(signal.SIGKILL)
        assert await asyncio.wait_for(child.wait(), timeout=10) == -signal.SIGKILL
    relay = Outbox(db, SaqRunner(queue))
    delivered = 0

    async def until_delivered() -> None:
        nonlocal delivered
        while delivered == 0:
            delivered = await relay.relay_once()  # 0 until the dead process's lease runs out
            await asyncio.sleep(0.1)

    await asyncio.wait_for(until_delivered(), timeout=15)
    assert delivered == 1
    await run_saq(queue)
    assert RUNS == [(message_id, "after a crash")]
    assert await outbox_rows(db) == []


async def test_the_relay_runs_as_part_of_a_saq_worker(queue: Queue, db: uow.Database) -> None:
    # Started and stopped with the worker (its startup/shutdown hooks), as an app's lifespan would.
    writer = Outbox(db, SaqRunner(queue), fast_path=False, lease=0.001)
    async with uow.unit_of_work(database=db):
        message_id = writer.enqueue("record", value="relayed inside the worker")
    relay = Outbox(db, SaqRunner(queue))

    async def startup(ctx: Context) -> None:
        relay.start(interval=0.05)

    async def shutdown(ctx: Context) -> None:
        await relay.stop()

    worker = SaqWorker(queue, functions=[record], startup=startup, shutdown=shutdown, dequeue_timeout=0.1)
    running = asyncio.create_task(worker.start())

    async def job_ran() -> None:
        while not RUNS:
            await asyncio.sleep(0.05)

    try:
        await asyncio.wait_for(job_ran(), timeout=20)
    finally:
        await asyncio.wait_for(worker.stop(), timeout=20)
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)
    assert RUNS == [(message_id, "relayed inside the worker")]
    assert await outbox_rows(db) == []
    async with uow.unit_of_work(database=db):
        writer.enqueue("record", value="after the worker stopped")
    await asyncio.sleep(0.2)
    assert await relay.counts() == {"pending": 1, "failed": 0}  # the relay stopped with the worker


# -- arq -------------------------------------------------------------------------------------


@pytest.fixture
async def arq_pool(redis_url: str, redis_prefix: str) -> AsyncIterator[ArqRedis]:
    pool = await create_pool(RedisSettings.from_dsn(redis_url), default_queue_name=redis_prefix)
    yield pool
    await pool.aclose()


@pytest.fixture
def arq_ids() -> Iterator[list[str]]:
    """Message ids used as arq job ids: their keys carry no test prefix, so they are deleted by id."""
    ids: list[str] = []
    yield ids
    for message_id in ids:
        redis_server.delete_keys(message_id)


async def run_arq(pool: ArqRedis) -> ArqWorker:
    worker = ArqWorker(
        functions=[record_arq],  # type: ignore[list-item]
        redis_pool=pool,
        queue_name=pool.default_queue_name,
        burst=True,
        poll_delay=0.05,
        handle_signals=False,
        health_check_key=f"{pool.default_queue_name}:health-check",
        log_results=False,
    )
    try:
        await asyncio.wait_for(worker.main(), timeout=30)
    finally:
        await worker.close()
    return worker


async def test_arq_worker_runs_a_committed_job_once_even_if_delivered_twice(
    arq_pool: ArqRedis, db: uow.Database, arq_ids: list[str]
) -> None:
    runner = ArqRunner(arq_pool, queue_name=arq_pool.default_queue_name)
    outbox = Outbox(db, runner)
    with pytest.raises(RuntimeError):
        async with uow.unit_of_work(database=db):
            arq_ids.append(outbox.enqueue("record_arq", value="rolled back"))
            raise RuntimeError("the unit fails")
    async with uow.unit_of_work(database=db):
        message_id = outbox.enqueue("record_arq", value="committed")
    arq_ids.append(message_id)
    await runner.deliver(Message(message_id, "record_arq", {"value": "committed"}))  # a repeat: dropped
    worker = await run_arq(arq_pool)
    assert worker.jobs_complete == 1
    assert RUNS == [(message_id, "committed")]
    await runner.deliver(Message(message_id, "record_arq", {"value": "committed"}))  # result still kept
    await run_arq(arq_pool)
    assert RUNS == [(message_id, "committed")]


async def test_arq_payload_keys_arq_would_take_fail_enqueue(arq_pool: ArqRedis, db: uow.Database) -> None:
    outbox = Outbox(db, ArqRunner(arq_pool))
    async with uow.unit_of_work(database=db):
        with pytest.raises(PayloadError, match="_defer_by"):
            outbox.enqueue("record_arq", _defer_by=10)
    assert await outbox_rows(db) == []


async def test_with_redis_unreachable_the_unit_commits_and_the_job_goes_out_later(
    arq_pool: ArqRedis, db: uow.Database, arq_ids: list[str]
) -> None:
    unreachable = ArqRedis(host="127.0.0.1", port=1, socket_connect_timeout=1)  # nothing listens on port 1
    try:
        outbox = Outbox(db, ArqRunner(unreachable, queue_name=arq_pool.default_queue_name), backoff=0.0)
        async with uow.unit_of_work(database=db):
            message_id = outbox.enqueue("record_arq", value="once redis is back")
        arq_ids.append(message_id)
    finally:
        await unreachable.aclose()
    (row,) = await outbox_rows(db)
    assert (row.id, row.status, row.attempts) == (message_id, "pending", 1)
    assert "ConnectionError" in row.last_error
    back = Outbox(db, ArqRunner(arq_pool, queue_name=arq_pool.default_queue_name))
    assert await back.relay_once() == 1
    await run_arq(arq_pool)
    assert RUNS == [(message_id, "once redis is back")]
    assert await outbox_rows(db) == []


# -- Celery ----------------------------------------------------------------------------------


def test_celery_worker_runs_the_task_with_the_message_id(
    redis_url: str, redis_prefix: str, sqlite_db: uow.Database
) -> None:
    app = make_app(redis_url, redis_prefix)

    @app.task(bind=True, name="record_task")
    def record_task(self: Task, value: str) -> str:
        RUNS.append((str(self.request.id), value))
        return value

    outbox = Outbox(sqlite_db, CeleryRunner(app))
    engine = sqlite_db.engine
    assert isinstance(engine, Engine)
    outbox.table.create(engine, checkfirst=True)
    with start_worker(app, pool="solo", perform_ping_check=False, shutdown_timeout=15):
        with pytest.raises(RuntimeError), uow.unit_of_work(database=sqlite_db):
            outbox.enqueue("record_task", value="rolled back")
            raise RuntimeError("the unit fails")
        with uow.unit_of_work(database=sqlite_db):
            message_id = outbox.enqueue("record_task", value="committed")
        assert app.AsyncResult(message_id).get(timeout=15) == "committed"
    app.close()
    assert RUNS == [(message_id, "committed")]
    with engine.connect() as connection:
        assert list(connection.execute(select(outbox.table))) == []


def test_celery_runner_is_sync_so_it_serves_sync_databases(redis_url: str, redis_prefix: str) -> None:
    app: Celery = make_app(redis_url, redis_prefix)
    assert not Outbox(uow.Database("sqlite://"), CeleryRunner(app)).runner_is_async
    with pytest.raises(uow.ConfigurationError, match="runner is async"):
        Outbox(uow.Database("sqlite://"), SaqRunner(None))

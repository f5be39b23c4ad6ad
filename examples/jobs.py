"""Background jobs on one SQLite file: a Celery task (sync) and an arq job (async), each one unit of work.

    python examples/jobs.py                       # a tour: issue tokens, clean up the expired ones
    celery -A examples.jobs worker --pool=solo    # the Celery worker, for tasks sent with .delay()
    arq examples.jobs.WorkerSettings              # the arq worker

Settings come from the environment: JOBS_DB (the SQLite file, jobs.sqlite3), JOBS_REDIS_URL
(redis://127.0.0.1:6379/0) and JOBS_QUEUE (the queue name and the prefix of every Redis key).
"""

from __future__ import annotations

import asyncio
import datetime
import os
import uuid
from typing import Any, ClassVar

from arq import create_pool
from arq.connections import RedisSettings
from arq.worker import Worker
from celery import Celery
from sqlalchemy import DateTime, Engine, String, delete, func, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

import uow

DB_FILE = os.environ.get("JOBS_DB", "jobs.sqlite3")
REDIS_URL = os.environ.get("JOBS_REDIS_URL", "redis://127.0.0.1:6379/0")
QUEUE = os.environ.get("JOBS_QUEUE", "uow-example-jobs")

# Celery runs plain functions in its workers, arq coroutines: one Database for each, same file.
sync_db = uow.Database(f"sqlite:///{DB_FILE}")
async_db = uow.Database(f"sqlite+aiosqlite:///{DB_FILE}")


class Base(DeclarativeBase):
    pass


class Token(Base):
    __tablename__ = "tokens"

    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(String(200))
    expires_at: Mapped[datetime.datetime] = mapped_column(DateTime())


def utcnow() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None)


class TokenIssuer:
    """Issues tokens (sync: used by the Celery task)."""

    def __init__(self, session: Session) -> None:
        self.session = session

    def issue(self, email: str, ttl_seconds: int) -> Token:
        token = Token(email=email, expires_at=utcnow() + datetime.timedelta(seconds=ttl_seconds))
        self.session.add(token)
        self.session.flush()
        return token


class TokenJanitor:
    """Removes expired tokens (async: used by the arq job)."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def delete_expired(self) -> int:
        result = await self.session.execute(delete(Token).where(Token.expires_at < utcnow()))
        return int(getattr(result, "rowcount", 0) or 0)

    async def remaining(self) -> int:
        return int(await self.session.scalar(select(func.count()).select_from(Token)) or 0)


# -- Celery ----------------------------------------------------------------------------------

celery_app = Celery("examples.jobs", broker=REDIS_URL, backend=REDIS_URL)
celery_app.conf.update(
    broker_transport_options={"global_keyprefix": f"{QUEUE}:"},
    result_backend_transport_options={"global_keyprefix": f"{QUEUE}:"},
    task_default_queue=QUEUE,
    broker_connection_retry_on_startup=True,
)


@celery_app.task
@uow.with_services(TokenIssuer, database=sync_db)
def issue_token(issuer: TokenIssuer, email: str, ttl_seconds: int = 3600) -> int:
    """Issue a token for `email`; `.delay(email, ttl_seconds)` is checked against exactly these two."""
    return issuer.issue(email, ttl_seconds).id


# -- arq -------------------------------------------------------------------------------------


@uow.with_services(TokenJanitor, database=async_db)
async def cleanup_expired_tokens(ctx: dict[str, Any], *, janitor: TokenJanitor) -> dict[str, int]:
    """Delete the expired tokens; the whole clean-up commits, or none of it."""
    deleted = await janitor.delete_expired()
    return {"deleted": deleted, "remaining": await janitor.remaining(), "try": ctx["job_try"]}


class WorkerSettings:
    """`arq examples.jobs.WorkerSettings`"""

    functions: ClassVar[list[Any]] = [cleanup_expired_tokens]
    redis_settings: ClassVar[RedisSettings] = RedisSettings.from_dsn(REDIS_URL)
    queue_name: ClassVar[str] = QUEUE


# -- the tour --------------------------------------------------------------------------------


def create_tables() -> None:
    assert isinstance(sync_db.engine, Engine)
    Base.metadata.create_all(sync_db.engine)


async def run_cleanup_job() -> Any:
    """Enqueue the arq job and run a worker until the queue is empty; the job's result."""
    redis = await create_pool(WorkerSettings.redis_settings, default_queue_name=QUEUE)
    try:
        # Job ids under the queue's name keep every key this tour writes under one prefix.
        job = await redis.enqueue_job("cleanup_expired_tokens", _job_id=f"{QUEUE}-{uuid.uuid4().hex}")
        assert job is not None
        worker = Worker(
            functions=WorkerSettings.functions,
            redis_pool=redis,
            queue_name=QUEUE,
            burst=True,
            handle_signals=False,
            poll_delay=0.05,
            health_check_key=f"{QUEUE}:health-check",
        )
        await worker.main()
        result = await job.result(timeout=10)
        await worker.close()
        return result
    finally:
        await redis.aclose()
        await async_db.dispose_async()


def main() -> None:
    create_tables()
    # Eager mode runs the task right here, so the tour needs no Celery worker.
    celery_app.conf.task_always_eager = True
    for email, ttl in [("ada@example.com", 3600), ("bob@example.com", -60), ("cy@example.com", -1)]:
        token_id = issue_token.delay(email, ttl).get()
        print(f"celery: issued token #{token_id} for {email} (ttl {ttl}s)")
    print(f"arq: cleanup_expired_tokens -> {asyncio.run(run_cleanup_job())}")
    sync_db.dispose()


if __name__ == "__main__":
    main()

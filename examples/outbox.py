"""The transactional outbox on one SQLite file and Redis: a job is enqueued if and only if its unit committed.

    python examples/outbox.py              # a tour: two sign-ups (one fails), then the arq worker
    arq examples.outbox.WorkerSettings     # the arq worker
    python -m uow.outbox relay --database sqlite+aiosqlite:///outbox.sqlite3 --runner examples.outbox:runner

Settings come from the environment: OUTBOX_DB (the SQLite file, outbox.sqlite3), OUTBOX_REDIS_URL
(redis://127.0.0.1:6379/0) and OUTBOX_QUEUE (the arq queue name).
"""

from __future__ import annotations

import asyncio
import os
from typing import Any, ClassVar

from arq.connections import ArqRedis, RedisSettings
from arq.worker import Worker
from redis.asyncio import ConnectionPool
from sqlalchemy import String, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

import uow
from uow.outbox import ArqRunner, Outbox, outbox_table

DB_FILE = os.environ.get("OUTBOX_DB", "outbox.sqlite3")
REDIS_URL = os.environ.get("OUTBOX_REDIS_URL", "redis://127.0.0.1:6379/0")
QUEUE = os.environ.get("OUTBOX_QUEUE", "uow-example-outbox")

db = uow.configure(uow.Database(f"sqlite+aiosqlite:///{DB_FILE}"))


class Base(DeclarativeBase):
    pass


class User(Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(String(200), unique=True)
    welcomed: Mapped[bool] = mapped_column(default=False)


# On the app's own MetaData, so Alembic autogenerate sees the outbox table with the others.
outbox_rows = outbox_table(Base.metadata)

# The client connects on first use, inside whichever event loop uses it.
redis = ArqRedis(connection_pool=ConnectionPool.from_url(REDIS_URL), default_queue_name=QUEUE)
runner = ArqRunner(redis, queue_name=QUEUE)
outbox = Outbox(db, runner, table=outbox_rows)


class UserService:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def create(self, email: str) -> User:
        user = User(email=email)
        self.session.add(user)
        await self.session.flush()
        return user

    async def get(self, user_id: int) -> User:
        return await self.session.get_one(User, user_id)


@uow.with_services(UserService)
async def sign_up(users: UserService, email: str, *, fail: bool = False) -> str:
    user = await users.create(email)
    message_id = outbox.enqueue("send_welcome_mail", user_id=user.id)  # a row in this unit's transaction
    if fail:
        raise RuntimeError(f"sign-up of {email} failed after enqueueing")
    return message_id


@uow.with_services(UserService)
async def send_welcome_mail(ctx: dict[str, Any], *, user_id: int, users: UserService) -> str:
    user = await users.get(user_id)
    user.welcomed = True
    return f"welcome mail to {user.email} (job {ctx['job_id']})"


class WorkerSettings:
    functions: ClassVar[list[Any]] = [send_welcome_mail]
    queue_name = QUEUE
    redis_settings = RedisSettings.from_dsn(REDIS_URL)


async def tour() -> None:
    async with db.engine.begin() as connection:  # type: ignore[union-attr]
        await connection.run_sync(Base.metadata.create_all)
    message_id = await sign_up("ada@example.com")
    print(f"committed: ada@example.com, job {message_id} handed to arq after COMMIT")
    try:
        await sign_up("bob@example.com", fail=True)
    except RuntimeError as error:
        print(f"rolled back: {error}; its job never reaches arq")
    print(f"relay: delivered {await outbox.relay_once()} (the fast path left nothing behind)")
    worker = Worker(
        functions=[send_welcome_mail],
        redis_pool=redis,
        queue_name=QUEUE,
        burst=True,
        poll_delay=0.05,
        handle_signals=False,
        health_check_key=f"{QUEUE}:health-check",
    )
    try:
        await worker.main()
    finally:
        await worker.close()
    print(f"worker: {worker.jobs_complete} job(s) run")
    async with uow.unit_of_work() as session:
        for user in await session.scalars(select(User).order_by(User.id)):
            print(f"user {user.email}: welcomed={user.welcomed}")
    await redis.aclose()
    await db.dispose_async()


if __name__ == "__main__":
    asyncio.run(tour())
